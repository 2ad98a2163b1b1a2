"""Dataset integrity: find every problem of a dataset folder before anything trains on it.

``check_dataset`` lists each problem on one line naming the file: missing or stray files, manifests that
do not parse or do not match their files (sha256, geometry), image/label geometry mismatch, label values
outside ``deepliver.labels``, NaN voxels, an empty liver, two cases from one series, a missing key, and a
``dataset.json`` out of sync with the files. Images are read fully only when stored as floats (NaN check);
integer images are checked from their header and checksum.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver.dataset.caseid import KEY_FILE
from deepliver.dataset.layout import NIFTI, DatasetLayout, dataset_json
from deepliver.dataset.manifest import file_sha256
from deepliver.errors import InputError, LabelError, ProblemsError, ReadError
from deepliver.imaging.geometry import Geometry, geometry_differences
from deepliver.imaging.nifti_slices import read_nifti_slices
from deepliver.labels import LIVER, check_label_values

__all__ = ["check_dataset", "check_dataset_or_raise", "CaseCheck", "check_case", "complete_cases",
           "cross_case_problems"]

_FLOAT_TYPES = (sitk.sitkFloat32, sitk.sitkFloat64)


@dataclass
class CaseCheck:
    """One case's findings: ``problems`` (one line each), its parsed ``manifest`` (None when unreadable) and
    its ``label`` image as read for the check (None when unreadable), so a caller need not read it again."""

    problems: list[str]
    manifest: Optional[dict[str, Any]]
    label: Optional[sitk.Image] = None


def check_dataset(dataset: str | os.PathLike, *, workers: int = 2) -> list[str]:
    """Every problem of the dataset folder ``dataset``, one line each naming the file (empty: all good).

    ``workers`` threads read cases side by side. Raises ``InputError`` only when ``dataset`` is not a
    folder. The same as ``complete_cases``, then ``check_case`` on each case, then ``cross_case_problems``
    (callers with their own process pool compose these three).
    """
    cases, problems = complete_cases(dataset)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # labels are dropped as soon as checked
        checked = list(pool.map(lambda c: _without_label(check_case(dataset, c)), cases))
    for result in checked:
        problems.extend(result.problems)
    problems.extend(cross_case_problems(dataset, {c: r.manifest for c, r in zip(cases, checked)}))
    return problems


def check_dataset_or_raise(dataset: str | os.PathLike, *, workers: int = 2) -> list[str]:
    """The dataset's case ids when ``check_dataset`` finds nothing; else ``ProblemsError`` whose
    ``problems`` lists them all."""
    problems = check_dataset(dataset, workers=workers)
    if problems:
        raise ProblemsError("dataset check failed", problems, dataset)
    return DatasetLayout(Path(dataset)).manifest_ids()


def complete_cases(dataset: str | os.PathLike) -> tuple[list[str], list[str]]:
    """``(ids, problems)``: the sorted ids of the cases with image, label and manifest, and the problems of
    the folder listing (missing and stray files). ``InputError`` when ``dataset`` is not a folder."""
    layout = DatasetLayout(Path(dataset))
    if not layout.root.is_dir():
        raise InputError("no such dataset folder", layout.root)
    problems: list[str] = []
    return _case_files(layout, problems), problems


def cross_case_problems(dataset: str | os.PathLike, manifests: dict[str, Optional[dict[str, Any]]]) -> list[str]:
    """Problems across the cases ``manifests`` (``{case id: manifest}`` of ``complete_cases``' ids, in
    order): two cases from one series, a missing key file, a ``dataset.json`` out of sync."""
    layout = DatasetLayout(Path(dataset))
    problems = _duplicate_series(manifests)
    if manifests and not (layout.root / KEY_FILE).is_file():
        problems.append(f"{layout.root / KEY_FILE}: missing: new exports can no longer update these cases "
                        "(restore the key file from its backup)")
    problems.extend(_check_index(layout, list(manifests)))
    return problems


def _without_label(result: CaseCheck) -> CaseCheck:
    result.label = None
    return result


# --- files --------------------------------------------------------------------------------------------
def _listing(folder: Path, suffix: str, problems: list[str], allowed_dirs: tuple[str, ...] = ()) -> set[str]:
    """Case ids of ``<case><suffix>`` files in ``folder``; every other entry is reported as stray."""
    ids: set[str] = set()
    if not folder.is_dir():
        return ids
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name in allowed_dirs:
            continue
        if entry.is_file() and entry.name.endswith(suffix) and not entry.name.startswith("."):
            ids.add(entry.name[:-len(suffix)])
        else:
            problems.append(f"{entry}: stray {'folder' if entry.is_dir() else 'file'} (only <case>{suffix} "
                            f"belongs here{'; a leftover temporary file' if '.tmp' in entry.name else ''}); "
                            "move it out of the dataset")
    return ids


def _case_files(layout: DatasetLayout, problems: list[str]) -> list[str]:
    """Complete case ids (image, label and manifest present); reports missing and stray files."""
    where = {"image": layout.image, "label": layout.label, "manifest": layout.manifest}
    found = {"image": _listing(layout.images, NIFTI, problems),
             "label": _listing(layout.labels, NIFTI, problems, allowed_dirs=(".history",)),
             "manifest": _listing(layout.manifests, ".json", problems)}
    for entry in sorted(layout.root.iterdir()):
        if entry.name.startswith(".") and entry.name != KEY_FILE:
            problems.append(f"{entry}: stray hidden entry (a leftover temporary file?); move it out")
    complete = []
    for case_id in sorted(set().union(*found.values())):
        missing = [kind for kind in where if case_id not in found[kind]]
        if not missing:
            complete.append(case_id)
            continue
        have = ", ".join(layout.relative(where[k](case_id)) for k in where if k not in missing)
        for kind in missing:
            problems.append(f"{where[kind](case_id)}: missing (case {case_id} has {have}); re-export the case "
                            "or remove its other files")
    return complete


# --- one case -----------------------------------------------------------------------------------------
def check_case(dataset: str | os.PathLike, case_id: str) -> CaseCheck:
    """The problems of one complete case (manifest, checksums, image header, full label), with its manifest
    and label image (see ``CaseCheck``)."""
    layout = DatasetLayout(Path(dataset))
    problems: list[str] = []
    manifest = _load_manifest(layout.manifest(case_id), case_id, problems)
    image_path, label_path = layout.image(case_id), layout.label(case_id)
    if manifest is not None:
        for kind, path in (("image", image_path), ("label", label_path)):
            expected = (manifest.get(kind) or {}).get("sha256")
            actual = file_sha256(path)
            if expected != actual:
                problems.append(f"{path}: checksum mismatch: sha256 {actual[:12]}... but the manifest says "
                                f"{str(expected)[:12]}... (the file changed after export; re-export the case)")
    image = _read(image_path, header_only=True, problems=problems)
    label = _read(label_path, header_only=False, problems=problems)
    if image is not None:
        _check_image(image, image_path, manifest, problems)
    if label is not None:
        _check_label(label, label_path, image, problems)
    return CaseCheck(problems, manifest, label)


def _load_manifest(path: Path, case_id: str, problems: list[str]) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: not a readable JSON manifest ({e}); re-export the case")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: the manifest must be a JSON object; re-export the case")
        return None
    if data.get("case_id") != case_id:
        problems.append(f"{path}: case_id {data.get('case_id')!r} differs from the file name's {case_id!r}")
    return data


def _read(path: Path, header_only: bool, problems: list[str]):
    """A ``sitk.ImageFileReader`` after reading the header (``header_only``) or the image; None (and a
    problem) when the file cannot be read."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        if header_only:
            return reader
        image = _read_plain_nifti(path, reader)
        return image if image is not None else reader.Execute()
    except RuntimeError as e:
        problems.append(f"{path}: cannot read this NIfTI file ({str(e).strip().splitlines()[-1][:160]})")
    except ReadError as e:
        problems.append(str(e))
    return None


def _read_plain_nifti(path: Path, reader: sitk.ImageFileReader) -> Optional[sitk.Image]:
    """The image through ``read_nifti_slices`` (several times faster than ITK's reader on a ``.nii.gz``
    label) with the geometry ITK read from the header; None for files that reader leaves to ITK."""
    if reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        return None
    voxels = read_nifti_slices(path, 0, reader.GetSize()[2])
    if voxels is None:
        return None
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(reader.GetSpacing())
    image.SetOrigin(reader.GetOrigin())
    image.SetDirection(reader.GetDirection())
    return image


def _geometry(item) -> Geometry:
    return Geometry(item.GetSize(), item.GetSpacing(), item.GetOrigin(), item.GetDirection())


def _non_finite(path: Path) -> int:
    """NaN and infinite voxels of a float NIfTI file, counted on the stored values (ITK's reader turns
    NaN into 0, so it cannot see them)."""
    import nibabel
    array = np.asanyarray(nibabel.load(str(path)).dataobj)
    return int(np.count_nonzero(~np.isfinite(array)))


def _check_image(image, path: Path, manifest: Optional[dict], problems: list[str]) -> None:
    if image.GetPixelID() in _FLOAT_TYPES:  # integer voxels cannot be NaN: read fully only floats
        try:
            bad = _non_finite(path)
        except Exception as e:  # nibabel raises several types on damaged files
            problems.append(f"{path}: cannot read the voxels ({type(e).__name__}: {str(e)[:120]})")
            return
        if bad:
            problems.append(f"{path}: {bad} voxel(s) are NaN or infinite")
    if manifest and isinstance(manifest.get("geometry"), dict):
        try:
            recorded = Geometry.from_dict(manifest["geometry"])
        except (KeyError, TypeError, ValueError, InputError):
            problems.append(f"{path}: the manifest's geometry is unreadable; re-export the case")
            return
        diffs = geometry_differences(_geometry(image), recorded)
        if diffs:
            problems.append(f"{path}: geometry differs from the manifest's: {'; '.join(diffs)}")


def _check_label(label: sitk.Image, path: Path, image, problems: list[str]) -> None:
    if image is not None:
        diffs = geometry_differences(label, _geometry(image))
        if diffs:
            problems.append(f"{path}: label geometry differs from its image: {'; '.join(diffs)}")
    if label.GetPixelID() in _FLOAT_TYPES and _non_finite(path):
        problems.append(f"{path}: label values outside the table: NaN or infinite voxels")
        return
    array = sitk.GetArrayViewFromImage(label)
    try:
        check_label_values(array, os.fspath(path))
    except LabelError as e:
        problems.append(str(e))
        return
    if not np.count_nonzero(array == LIVER.value):
        problems.append(f"{path}: empty liver: no voxel has label {LIVER.value} ({LIVER.name})")


# --- across cases -------------------------------------------------------------------------------------
def _duplicate_series(manifests: dict[str, Optional[dict[str, Any]]]) -> list[str]:
    by_series: dict[str, list[str]] = defaultdict(list)
    for case_id, manifest in manifests.items():
        uid = ((manifest or {}).get("source") or {}).get("series_uid")
        if uid:
            by_series[uid].append(case_id)
    return [f"manifests/{cases[0]}.json: cases {', '.join(cases)} come from the same series {uid}; keep one "
            "(the others were exported with another key or edited)"
            for uid, cases in sorted(by_series.items()) if len(cases) > 1]


def _check_index(layout: DatasetLayout, cases: list[str]) -> list[str]:
    path = layout.index
    if not path.is_file():
        return [f"{path}: missing; run `deepliver export` again or deepliver.dataset.update_dataset_json"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"{path}: not valid JSON ({e})"]
    if not isinstance(data, dict):
        return [f"{path}: must hold a JSON object"]
    expected = dataset_json(cases)
    out = []
    if data.get("labels") != expected["labels"]:
        out.append(f"{path}: labels {data.get('labels')} differ from deepliver's table {expected['labels']}")
    if data.get("numTraining") != len(cases):
        out.append(f"{path}: numTraining is {data.get('numTraining')} but the folder holds {len(cases)} "
                   "complete case(s); rebuild it (deepliver.dataset.update_dataset_json)")
    training = data.get("training") if isinstance(data.get("training"), list) else []
    listed = {(e.get("image"), e.get("label")) for e in training if isinstance(e, dict)}
    wanted = {(e["image"], e["label"]) for e in expected["training"]}
    for image, label in sorted(wanted - listed):
        out.append(f"{path}: does not list {image} / {label}")
    for image, label in sorted(listed - wanted, key=str):
        out.append(f"{path}: lists {image} / {label}, which is not a complete case of the folder")
    if len(training) != len(listed):
        out.append(f"{path}: the training list has {len(training) - len(listed)} duplicate or malformed "
                   "entries")
    return out
