"""Per-case preprocessing done once and cached as ``.npy``, so epochs never re-read NIfTI.

A cache entry is a folder ``<cache_dir>/<case>-<key>/`` (``key`` = sha256 of the image and label files and
of the preprocessing: target spacing, window, normalisation, orientation, task crop) holding:

- ``image.npy``: float32 ``(z, y, x)`` at the target spacing, clipped and normalised and (orientation
  ``canonical``) in patient-axis order, all with ``predict.py``'s code, so training sees what inference feeds;
- ``label.npy``: uint8 ``(z, y, x)`` label values 0/1/2 on the same grid (nearest neighbour), same order;
- ``meta.json``: case id, grids, per-task foreground statistics (slices and sampled voxels);
- with ``keep_original``: ``original_image.npy`` (HU, input grid) and ``original_label.npy``, which
  validation turns back into SimpleITK images for ``predict_volume`` without decompressing NIfTI.

For the tumor task the image is first cut to the liver's (label >= 1) bounding box + margin by
``deepliver.inference.predict.crop_to_roi``, the very function the cascade runs on the predicted liver.
Entries are written to a temporary folder and renamed, so a half-written entry is never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from deepliver.errors import InputError
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.volumes import read_label, read_volume
from deepliver.inference.predict import (crop_to_roi, model_orientation, normalize_intensity, pad_value,
                                         resample_for_model, to_model_order)
from deepliver.models.bundle import Intensity
from deepliver.progress import ProgressCallback

__all__ = ["CACHE_VERSION", "CaseFiles", "Preprocessing", "list_cases", "file_sha256", "cache_key",
           "cache_case", "build_cache", "task_mask", "FG_SAMPLES"]

CACHE_VERSION = 2
FG_SAMPLES = 4000
"""Foreground voxel coordinates kept per case and task for positive sampling."""


@dataclass(frozen=True)
class CaseFiles:
    """One training case of a dataset folder: its id and the image and label files."""
    case: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Preprocessing:
    """What the cache depends on (besides the files): ``target_spacing`` ``(x, y, z)`` mm, intensity, task,
    crop margin and the array order (``deepliver.inference.predict.ORIENTATIONS``)."""
    target_spacing: tuple
    intensity: Intensity
    task: str
    crop_margin_mm: float
    orientation: str = "canonical"

    def digest(self) -> str:
        data = {"v": CACHE_VERSION, "spacing": list(self.target_spacing), "window": list(self.intensity.window),
                "norm": self.intensity.normalization, "mean": self.intensity.mean, "std": self.intensity.std,
                "crop": self.crop_margin_mm if self.task == "tumor" else None, "orientation": self.orientation}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def task_mask(label: np.ndarray, task: str) -> np.ndarray:
    """The task's foreground: liver = every label >= 1 (tumor included, as LiTS scores it), tumor = label 2."""
    return label >= 1 if task == "liver" else label == 2


def _case_id(path: str) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def list_cases(dataset: str | os.PathLike) -> list[CaseFiles]:
    """The training cases listed in ``dataset/dataset.json`` (MSD ``training``: ``[{"image", "label"}]``)."""
    dataset = Path(dataset)
    path = dataset / "dataset.json"
    if not path.is_file():
        raise InputError("not a dataset folder: dataset.json is missing (create one with deepliver export)", dataset)
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("training", [])
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise InputError(f"cannot parse dataset.json: {e}", path) from e
    cases = []
    for entry in entries:
        image, label = dataset / entry["image"], dataset / entry["label"]
        for p in (image, label):
            if not p.is_file():
                raise InputError(f"listed in dataset.json but missing: {p.relative_to(dataset)}", dataset)
        cases.append(CaseFiles(_case_id(entry["label"]), image, label))
    return sorted(cases, key=lambda c: c.case)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(files: CaseFiles, prep: Preprocessing) -> str:
    """Key of a case's entry: the files' sha256 and the preprocessing digest, hashed together (16 hex)."""
    h = hashlib.sha256()
    for part in (file_sha256(files.image), file_sha256(files.label), prep.digest()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def _foreground_stats(label: np.ndarray, rng: np.random.Generator) -> dict:
    stats = {}
    for task in ("liver", "tumor"):
        mask = task_mask(label, task)
        coords = np.argwhere(mask)
        if len(coords) > FG_SAMPLES:
            coords = coords[np.sort(rng.choice(len(coords), FG_SAMPLES, replace=False))]
        stats[task] = {"voxels": int(mask.sum()), "slices": np.flatnonzero(mask.any(axis=(1, 2))).tolist(),
                       "samples": coords.tolist()}
    return stats


def cache_case(files: CaseFiles, prep: Preprocessing, cache_dir: Path, keep_original: bool = False) -> Path:
    """Preprocess one case into ``cache_dir`` (reusing a complete entry); returns the entry folder."""
    entry = cache_dir / f"{files.case}-{cache_key(files, prep)}"
    if (entry / "meta.json").is_file() and (not keep_original or (entry / "original_image.npy").is_file()):
        return entry
    image = read_volume(files.image)
    label = original_label = read_label(files.label, reference=image)
    image_f = sitk.Cast(image, sitk.sitkFloat32)
    has_roi = True
    if prep.task == "tumor":
        liver = sitk.GetArrayFromImage(label) >= 1
        cropped, _ = crop_to_roi(image_f, liver, prep.crop_margin_mm)
        has_roi = cropped is not None
        if has_roi:
            image_f, label = cropped, crop_to_roi(label, liver, prep.crop_margin_mm)[0]
    img = resample_for_model(image_f, prep.target_spacing)
    lab = resample_for_model(label, prep.target_spacing, is_label=True)
    orientation = model_orientation(Geometry.from_image(img), prep.orientation)
    array = to_model_order(normalize_intensity(sitk.GetArrayFromImage(img), prep.intensity), orientation)
    lab_array = to_model_order(sitk.GetArrayFromImage(lab).astype(np.uint8), orientation)
    meta = {"case": files.case, "grid": Geometry.from_image(img).to_dict(), "has_roi": has_roi,
            "orientation": None if orientation is None else {"axes": list(orientation.axes),
                                                             "flip": list(orientation.flip)},
            "pad_value": pad_value(prep.intensity), "original_grid": Geometry.from_image(image).to_dict(),
            "foreground": _foreground_stats(lab_array, np.random.default_rng(0))}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
    try:
        np.save(tmp / "image.npy", array)
        np.save(tmp / "label.npy", lab_array)
        if keep_original:
            np.save(tmp / "original_image.npy", sitk.GetArrayFromImage(image))
            np.save(tmp / "original_label.npy", sitk.GetArrayFromImage(original_label))
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / "meta.json").is_file():   # another run wrote it meanwhile: keep theirs
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def build_cache(cases: list[CaseFiles], prep: Preprocessing, cache_dir: Path, keep_original: set[str] = frozenset(),
                workers: int = 1, progress: Optional[ProgressCallback] = None) -> dict[str, Path]:
    """Cache every case (threads: SimpleITK and numpy release the GIL); returns case id -> entry folder.
    Cases in ``keep_original`` also keep their input-grid arrays (validation cases)."""
    done: dict[str, Path] = {}
    if progress:
        progress("cache", 0, len(cases))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(cache_case, c, prep, cache_dir, c.case in keep_original): c for c in cases}
        for i, future in enumerate(futures, 1):
            done[futures[future].case] = future.result()
            if progress:
                progress("cache", i, len(cases))
    return done
