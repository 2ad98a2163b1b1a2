"""Export cases (image + label map) into a dataset folder; read them back.

``export_case`` adds a case or updates it: the case id is stable (``deepliver.dataset.caseid``), the
previous label is kept as ``labelsTr/.history/<case>-<UTC time>.nii.gz`` (never deleted), and every file of
the case plus ``dataset.json`` changes in one all-or-nothing step (``deepliver.dataset.transaction``): a
failure at any point leaves the dataset exactly as it was (a first export into a new folder may leave the
key file and the empty sub-folders behind). Images and labels are written from their voxel arrays and
geometry only, so no header of the source (patient name, ID, birth date...) reaches a NIfTI file.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import SimpleITK as sitk

from deepliver import imaging
from deepliver.dataset import caseid
from deepliver.dataset.layout import DatasetLayout, dataset_json, dataset_lock
from deepliver.dataset.manifest import (LabelStats, build_manifest, file_sha256, label_stats, read_manifest,
                                        timestamp_for_file, utc_now)
from deepliver.dataset.nifti import write_nifti_gz
from deepliver.dataset.sources import CaseInput, hu_array, read_case_input
from deepliver.dataset.transaction import Transaction
from deepliver.errors import ConfigError, InputError
from deepliver.progress import ProgressCallback

__all__ = ["ExportResult", "export_case", "find_case", "case_id_for", "load_case", "update_dataset_json"]

COMPRESSION_LEVEL = 1
"""gzip level of the image (``deepliver.dataset.nifti``). The label goes through
``deepliver.imaging.write_label``, whose SimpleITK writer uses its own level (labels compress well)."""


@dataclass(frozen=True)
class ExportResult:
    """What ``export_case`` wrote. ``volumes_ml`` / ``voxel_counts`` map each label name of
    ``deepliver.labels`` (background included) to its volume (mL) / voxel count; ``history_path`` is where
    the previous label went (None for a new case); ``created`` is True for a new case."""

    case_id: str
    image_path: Path
    label_path: Path
    manifest_path: Path
    history_path: Optional[Path]
    volumes_ml: dict[str, float] = field(default_factory=dict)
    voxel_counts: dict[str, int] = field(default_factory=dict)
    lesion_count: int = 0
    created: bool = True


def export_case(image, label, dataset, *, annotator: Optional[str] = None, series: Optional[str] = None,
                source=None, provenance: Optional[dict] = None,
                progress: Optional[ProgressCallback] = None) -> ExportResult:
    """Add ``image`` + ``label`` to the dataset folder ``dataset`` as a new case, or update its case.

    ``image``: a DICOM folder, a ``.nii``/``.nii.gz``/``.nrrd``/``.mha`` file or a ``SimpleITK.Image`` in
    Hounsfield units. ``label``: a volume file, a ``SimpleITK.Image`` or a ``(z, y, x)`` uint8 array with
    the image's geometry, values from ``deepliver.labels``. ``series`` picks a series of a DICOM folder
    (SeriesInstanceUID or short id). ``source`` is the ``SeriesInfo`` of an image the caller read itself
    (compute its ``patient_key`` with ``key=dataset_key(dataset, create=True)`` so keys agree across the
    dataset). ``provenance`` (JSON-ready dict, e.g. model name and version) goes into the manifest as is.
    Progress stage ``export``, 3 steps. Raises ``InputError`` subclasses naming the file.
    """
    _check_provenance(provenance)
    _report(progress, 0)
    key = caseid.dataset_key(dataset, create=True)
    case = read_case_input(image, label, key=key, series=series, source=source)
    _report(progress, 1)
    return write_case(DatasetLayout(Path(dataset)), case, key, annotator=annotator, provenance=provenance,
                      progress=progress)


def write_case(layout: DatasetLayout, case: CaseInput, key: bytes, *, annotator: Optional[str] = None,
               provenance: Optional[dict] = None, progress: Optional[ProgressCallback] = None,
               update_index: bool = True) -> ExportResult:
    """Write a prepared ``CaseInput`` into ``layout`` (see ``export_case``). With ``update_index`` false
    ``dataset.json`` is left for the caller to rewrite (``update_dataset_json``).

    The label (write, statistics, checksum) and the image (gzip, the slow part) are written in two
    threads while this one hashes the voxels. The image waits for the hash only when it decides the case
    id (no series UID) or may already be on disk (then it is not rewritten).
    """
    layout.make_dirs()
    uid = case.series_uid
    case_id = caseid.series_case_id(key, uid) if uid else None
    old = _old_manifest(layout, case_id) if case_id else None
    with Transaction() as tx, ThreadPoolExecutor(max_workers=2) as pool:  # pool waits before tx cleans
        label_tmp = tx.stage(layout.labels / "pending.nii.gz")  # its name once the id is known
        label_job = pool.submit(_label_work, case, label_tmp)
        image_job = None
        if case_id and not (old and (old.get("image") or {}).get("voxel_sha256")):
            image_job = pool.submit(_write_image, case, tx.stage(layout.image(case_id)))
        voxels = caseid.voxel_digest(case.image, case.geometry)
        if case_id is None:
            case_id = caseid.voxels_case_id(key, voxels)
            old = _old_manifest(layout, case_id)
        if image_job is None and not _image_unchanged(layout, case_id, old, voxels):
            image_job = pool.submit(_write_image, case, tx.stage(layout.image(case_id)))
        tx.retarget(label_tmp, layout.label(case_id))
        stats, label_sha = label_job.result()
        image_sha = image_job.result() if image_job is not None else old["image"]["sha256"]
        _report(progress, 2)
        files = {"image": {"path": layout.relative(layout.image(case_id)), "sha256": image_sha,
                           "dtype": str(case.image.dtype), "voxel_sha256": voxels},
                 "label": {"path": layout.relative(layout.label(case_id)), "sha256": label_sha}}
        with dataset_lock(layout.root):
            history = _commit(tx, layout, case_id, case, files, stats, annotator, provenance, update_index)
    _report(progress, 3)
    return ExportResult(case_id, layout.image(case_id), layout.label(case_id), layout.manifest(case_id),
                        history, stats.volumes_ml, stats.voxel_counts, stats.lesions, created=old is None)


def _commit(tx: Transaction, layout: DatasetLayout, case_id: str, case: CaseInput, files: dict,
            stats: LabelStats, annotator, provenance, update_index: bool) -> Optional[Path]:
    """Under the dataset lock: keep the previous label, stage manifest and index, move all in."""
    now = utc_now()
    old = _old_manifest(layout, case_id)
    history, entry = None, None
    if layout.label(case_id).exists():
        history = _history_path(layout, case_id, now)
        tx.keep_copy(layout.label(case_id), history)
        entry = {"path": layout.relative(history), "saved": (old or {}).get("modified"),
                 "annotator": (old or {}).get("annotator"), "sha256": (old or {}).get("label", {}).get("sha256")}
    manifest = build_manifest(case_id=case_id, geometry=case.geometry, source=case.source, image=files["image"],
                              label=files["label"], stats=stats, annotator=annotator, provenance=provenance,
                              now=now, previous=old, history_entry=entry)
    _write_json(tx.stage(layout.manifest(case_id)), manifest)
    if update_index:
        ids = sorted(set(layout.manifest_ids()) | {case_id})
        _write_json(tx.stage(layout.index), dataset_json(ids))
    tx.commit()
    return history


def _old_manifest(layout: DatasetLayout, case_id: str) -> Optional[dict[str, Any]]:
    if not layout.manifest(case_id).exists():
        return None
    try:
        return read_manifest(layout.root, case_id)
    except InputError:
        return None  # a damaged manifest is replaced; `deepliver check` reports it before that


def _image_unchanged(layout: DatasetLayout, case_id: str, old: Optional[dict], voxels: str) -> bool:
    """True when the case's image file holds these very voxels (same digest, file checksum intact)."""
    image = (old or {}).get("image") or {}
    path = layout.image(case_id)
    return (image.get("voxel_sha256") == voxels and path.is_file()
            and image.get("sha256") == file_sha256(path))


def _write_image(case: CaseInput, path: Path) -> str:
    """Write the HU array from its voxels and geometry only (no metadata travels); the file's sha256."""
    return write_nifti_gz(case.image, case.geometry, path, COMPRESSION_LEVEL)


def _label_work(case: CaseInput, path: Path) -> tuple[LabelStats, str]:
    """Write the label (``deepliver.imaging.write_label``), count it, hash the file."""
    imaging.write_label(case.label, path, case.geometry, COMPRESSION_LEVEL)
    return label_stats(case.label, case.geometry), file_sha256(path)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _history_path(layout: DatasetLayout, case_id: str, now: datetime) -> Path:
    stamp = timestamp_for_file(now)
    path, n = layout.history / f"{case_id}-{stamp}.nii.gz", 1
    while path.exists():  # two saves within the same microsecond
        path, n = layout.history / f"{case_id}-{stamp}-{n}.nii.gz", n + 1
    return path


def _check_provenance(provenance) -> None:
    if provenance is None:
        return
    if not isinstance(provenance, dict):
        raise ConfigError(f"provenance must be a dict, got {type(provenance).__name__}")
    try:
        json.dumps(provenance)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"provenance must be JSON-ready (strings, numbers, lists, dicts): {e}") from e


def _report(progress: Optional[ProgressCallback], done: int) -> None:
    if progress is not None:
        progress("export", done, 3)


# --- reading back ----------------------------------------------------------------------------------------
def update_dataset_json(dataset: str | os.PathLike) -> dict[str, Any]:
    """Rewrite ``dataset.json`` from the manifests present (atomically, under the dataset lock)."""
    layout = DatasetLayout(Path(dataset))
    if not layout.root.is_dir():
        raise InputError("no such dataset folder", layout.root)
    with dataset_lock(layout.root), Transaction() as tx:
        data = dataset_json(layout.manifest_ids())
        _write_json(tx.stage(layout.index), data)
        tx.commit()
    return data


def find_case(dataset: str | os.PathLike, series_uid: str) -> Optional[str]:
    """The case id of the series ``series_uid`` in ``dataset`` when it has been exported, else None."""
    layout = DatasetLayout(Path(dataset))
    if not series_uid or not series_uid.strip() or not (layout.root / caseid.KEY_FILE).is_file():
        return None
    case_id = caseid.series_case_id(caseid.dataset_key(dataset), series_uid)
    return case_id if layout.manifest(case_id).is_file() else None


def case_id_for(dataset: str | os.PathLike, *, series_uid: Optional[str] = None, image=None) -> str:
    """The case id ``export_case`` gives a series (``series_uid``) or an image without a usable series
    UID (``image``: a ``SimpleITK.Image`` or a volume file). Creates the dataset key when missing."""
    if (series_uid is None) == (image is None):
        raise ConfigError("case_id_for needs exactly one of series_uid or image")
    key = caseid.dataset_key(dataset, create=True)
    if series_uid is not None and series_uid.strip():
        return caseid.series_case_id(key, series_uid)
    if image is None:
        raise ConfigError("case_id_for: the series UID is empty; pass the image instead")
    itk = image if isinstance(image, sitk.Image) else imaging.read_volume(image)
    return caseid.voxels_case_id(key, caseid.voxel_digest(hu_array(itk), imaging.Geometry.from_image(itk)))


def load_case(dataset: str | os.PathLike, case_id: str) -> tuple[sitk.Image, sitk.Image, dict[str, Any]]:
    """The image (HU), its newest label (uint8) and the manifest of ``case_id``; ``InputError`` naming
    the file when one is missing or damaged."""
    layout = DatasetLayout(Path(dataset))
    manifest = read_manifest(dataset, case_id)
    image = imaging.read_volume(layout.image(case_id))
    label = imaging.read_label(layout.label(case_id), reference=image)
    return image, label, manifest
