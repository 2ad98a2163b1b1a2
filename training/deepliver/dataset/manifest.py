"""The per-case manifest (``manifests/<case>.json``) and the label statistics it records.

A manifest holds, and only holds, pseudonymous data (no patient name, ID, birth date, no study date, no
source path):

```
case_id, deepliver_version, created, modified (UTC ISO 8601, microseconds), annotator, provenance
source: {kind: dicom|file|image, format, patient_key, study_uid, series_uid, frame_of_reference_uid,
         modality, description}
geometry: {size, spacing (mm), origin (mm), direction (row-major 3x3)}        x, y, z order, LPS
image: {path, sha256, dtype, voxel_sha256}     label: {path, sha256}
labels: {name: {value, voxels, volume_ml}} for every entry of deepliver.labels
tumor_lesions: number of 26-connected tumor components in 3D
history: [{path, saved, annotator, sha256}]    previous labels, oldest first
```
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from deepliver.errors import InputError
from deepliver.imaging.geometry import Geometry
from deepliver.labels import LABELS, TUMOR

__all__ = ["MANIFEST_VERSION", "LabelStats", "label_stats", "lesion_count", "read_manifest", "file_sha256",
           "utc_now", "build_manifest", "timestamp_for_file"]

MANIFEST_VERSION = 1


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


@dataclass(frozen=True)
class LabelStats:
    """Per-label voxel counts and volumes, ``labels = {name: {"value", "voxels", "volume_ml"}}`` for every
    entry of the label table, and ``lesions``: the number of 26-connected tumor components."""

    labels: dict[str, dict[str, Any]]
    lesions: int

    @property
    def volumes_ml(self) -> dict[str, float]:
        return {name: entry["volume_ml"] for name, entry in self.labels.items()}

    @property
    def voxel_counts(self) -> dict[str, int]:
        return {name: entry["voxels"] for name, entry in self.labels.items()}


def label_stats(label: np.ndarray, geometry: Geometry) -> LabelStats:
    """Voxel count and volume (mL = count x prod(spacing mm) / 1000) of every label of the table, and the
    tumor lesion count, from a ``(z, y, x)`` label array on ``geometry``."""
    labels = {}
    voxel_ml = geometry.voxel_volume_ml
    counts = {entry.value: int(np.count_nonzero(label == entry.value)) for entry in LABELS if entry.value}
    counts[0] = int(label.size) - sum(counts.values())  # background: the rest (values are checked)
    for entry in LABELS:
        count = counts[entry.value]
        labels[entry.name] = {"value": entry.value, "voxels": count, "volume_ml": round(count * voxel_ml, 6)}
    lesions = lesion_count(label == TUMOR.value) if labels[TUMOR.name]["voxels"] else 0
    return LabelStats(labels, lesions)


def lesion_count(mask: np.ndarray) -> int:
    """Number of 26-connected components (3D, faces, edges and corners touch) of a boolean ``(z, y, x)``
    mask. Works on the mask's bounding box, so small lesions in a large volume are cheap."""
    import cc3d
    box = []
    for other in ((1, 2), (0, 2), (0, 1)):
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return 0
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    crop = np.ascontiguousarray(mask[tuple(box)])
    _, count = cc3d.connected_components(crop, connectivity=26, return_N=True)
    return int(count)


def read_manifest(dataset: str | os.PathLike, case_id: str) -> dict[str, Any]:
    """The manifest of ``case_id`` in ``dataset`` as a dict; ``InputError`` naming the file when it is
    missing or not valid JSON."""
    path = Path(dataset) / "manifests" / f"{case_id}.json"
    if not path.is_file():
        raise InputError(f"no manifest for case {case_id!r} (is this the right dataset folder and case id?)",
                         path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"manifest is not valid JSON ({e}); restore it or re-export the case", path) from e
    if not isinstance(data, dict):
        raise InputError(f"manifest must hold a JSON object, found {type(data).__name__}", path)
    return data


def build_manifest(*, case_id: str, geometry: Geometry, source: dict[str, Any], image: dict[str, Any],
                   label: dict[str, Any], stats: LabelStats, annotator: str | None,
                   provenance: dict[str, Any] | None, now: datetime, previous: dict[str, Any] | None,
                   history_entry: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest dict of a case; ``previous`` is the old manifest when the case is updated."""
    from deepliver import __version__
    history = list(previous.get("history", [])) if previous else []
    if history_entry:
        history.append(history_entry)
    return {
        "manifest_version": MANIFEST_VERSION,
        "case_id": case_id,
        "deepliver_version": __version__,
        "created": previous.get("created", _iso(now)) if previous else _iso(now),
        "modified": _iso(now),
        "annotator": annotator,
        "provenance": dict(provenance or {}),
        "source": source,
        "geometry": geometry.to_dict(),
        "image": image,
        "label": label,
        "labels": stats.labels,
        "tumor_lesions": stats.lesions,
        "history": history,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def timestamp_for_file(moment: datetime) -> str:
    """``20261122T015015.123456Z``: a UTC time safe in file names, sortable, with microseconds."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
