"""Evaluate predicted label maps against references: per case, per label, and a summary. No torch.

Labels are scored as LiTS does: ``liver`` = every voxel with label >= 1 (tumor included), ``tumor`` =
label 2. Each gets the overlap metrics (``overlap.py``), the surface metrics in mm (``surface.py``) and the
volumes in mL; ``tumor`` also gets the lesion-wise detection metrics (``lesions.py``). ``DEFINITIONS``
states every metric and convention; it is written into the JSON output.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from deepliver.errors import DeepLiverError, GeometryError, InputError, ReadError
from deepliver.metrics.lesions import LESION_METRICS, SIZE_BINS, detection_scores, lesion_metrics
from deepliver.metrics.overlap import OVERLAP_METRICS, overlap_metrics
from deepliver.metrics.surface import HD95_DEFINITION, SURFACE_METRICS, surface_metrics
from deepliver.progress import ProgressCallback

__all__ = ["LABEL_NAMES", "METRICS", "DEFINITIONS", "evaluate_arrays", "evaluate_pair", "evaluate_files",
           "summarize", "case_files"]

LABEL_NAMES = ("liver", "tumor")
VOLUME_METRICS = ("volume_pred_ml", "volume_ref_ml")
METRICS: dict[str, tuple[str, ...]] = {
    "liver": OVERLAP_METRICS + SURFACE_METRICS + VOLUME_METRICS,
    "tumor": OVERLAP_METRICS + SURFACE_METRICS + VOLUME_METRICS + LESION_METRICS,
}
"""The keys of each label's metrics, in order."""

DEFINITIONS: dict[str, str] = {
    "liver": "voxels with label >= 1 (liver and tumor), as LiTS scores the liver",
    "tumor": "voxels with label 2",
    "dice": "2TP / (2TP + FP + FN); 1 when both masks are empty, 0 when exactly one is",
    "iou": "TP / (TP + FP + FN); 1 when both masks are empty, 0 when exactly one is",
    "precision": "TP / (TP + FP); 1 when both masks are empty, null when only the prediction is",
    "recall": "TP / (TP + FN); 1 when both masks are empty, null when only the reference is",
    "accuracy": "(TP + TN) / all voxels",
    "specificity": "TN / (TN + FP); 1 when both masks fill the volume, null if only one does",
    "hd": "Hausdorff distance (mm) between boundary voxels (6-neighbour boundary), spacing-aware",
    "hd95": HD95_DEFINITION + ", mm",
    "assd": "mean of the boundary-voxel distances (mm) of both directions pooled (MONAI symmetric ASD)",
    "empty_distances": "hd, hd95, assd are 0 when both masks are empty and null when exactly one is",
    "volume_pred_ml": "predicted volume, mL", "volume_ref_ml": "reference volume, mL",
    "lesions": ("3D 26-connected components of the tumor masks; a predicted lesion matches a reference "
                "lesion when their IoU > 0.5, one-to-one, greedy by IoU descending"),
    "lesion_precision": "matched predicted lesions / predicted lesions (1 if neither mask has lesions, "
                        "null if only the reference has)",
    "lesion_recall": "matched reference lesions / reference lesions (1 if neither mask has lesions, null "
                     "if only the prediction has)",
    "lesion_f1": "2PR / (P + R); 0 when P or R is null",
    "size_bins": ("equivalent-sphere diameter (6V/pi)^(1/3): lt10mm d < 10 mm, 10to20mm 10 <= d <= 20, "
                  "gt20mm d > 20; recall by reference lesion size, precision by predicted lesion size"),
    "summary": "mean, sample std (n-1; null if n < 2), median over cases, nulls skipped and counted "
               "(n_null); count metrics also summed; pooled lesion scores from the summed counts",
}


def evaluate_arrays(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float]) -> dict[str, dict[str, Any]]:
    """All metrics of label maps ``pred`` and ``ref`` (uint8 ``(z, y, x)``, values 0/1/2, same shape);
    ``spacing`` in ITK order ``(x, y, z)`` mm. Returns ``{"liver": {...}, "tumor": {...}}`` with the keys
    of ``METRICS``."""
    if pred.shape != ref.shape:
        raise GeometryError(f"prediction shape (z, y, x) {pred.shape} differs from reference {ref.shape}")
    spacing_zyx = tuple(float(s) for s in reversed(tuple(spacing)))
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    out = {}
    for name in LABEL_NAMES:
        p, r = (pred >= 1, ref >= 1) if name == "liver" else (pred == 2, ref == 2)
        metrics: dict[str, Any] = dict(overlap_metrics(p, r))
        metrics.update(surface_metrics(p, r, spacing_zyx))
        metrics["volume_pred_ml"] = int(np.count_nonzero(p)) * voxel_ml
        metrics["volume_ref_ml"] = int(np.count_nonzero(r)) * voxel_ml
        if name == "tumor":
            metrics.update(lesion_metrics(p, r, spacing_zyx))
        out[name] = {key: metrics[key] for key in METRICS[name]}
    return out


def evaluate_pair(pred: sitk.Image, ref: sitk.Image, pred_name: str | os.PathLike | None = None,
                  ref_name: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """Metrics of a predicted label image against a reference label image (see ``evaluate_arrays``).

    Both must have the same geometry (size, spacing, origin, direction); otherwise ``GeometryError``
    naming both (``pred_name`` / ``ref_name``, e.g. their files). Values must be in the label table.
    """
    from deepliver.imaging.geometry import geometry_differences
    from deepliver.labels import check_label_values

    pn, rn = pred_name or "the prediction", ref_name or "the reference"
    diffs = geometry_differences(pred, ref)
    if diffs:
        raise GeometryError(f"prediction {os.fspath(pn)} and reference {os.fspath(rn)} have different geometry "
                            f"({'; '.join(diffs)}); resample the prediction onto the reference grid")
    arrays = []
    for image, name in ((pred, pn), (ref, rn)):
        array = sitk.GetArrayFromImage(image)
        check_label_values(array, os.fspath(name))
        arrays.append(array)
    return evaluate_arrays(arrays[0], arrays[1], ref.GetSpacing())


# --- files and folders ----------------------------------------------------------------------------
def case_files(folder: str | os.PathLike) -> dict[str, Path]:
    """``{case name: file}`` for the label files directly in ``folder`` (name = file name without its
    volume extension; other files, e.g. sidecar JSON, are ignored)."""
    from deepliver.imaging.volumes import volume_extension
    out = {}
    for path in sorted(Path(folder).iterdir()):
        ext = volume_extension(path)
        if ext and path.is_file() and not path.name.startswith("."):
            out.setdefault(path.name[:-len(ext)], path)
    return out


def _pairs(pred: Path, ref: Path) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    for path, what in ((pred, "prediction"), (ref, "reference")):
        if not path.exists():
            raise ReadError(f"{what} not found: no such file or folder", path)
    if pred.is_dir() != ref.is_dir():
        raise InputError(f"--pred {pred} and --ref {ref} must both be files or both be folders")
    if not pred.is_dir():
        from deepliver.imaging.volumes import volume_extension
        name = ref.name[:-len(volume_extension(ref) or "")] or ref.name
        return [(name, pred, ref)], []
    preds, refs = case_files(pred), case_files(ref)
    problems = [f"{refs[c]}: no prediction for this case in {pred}" for c in refs if c not in preds]
    problems += [f"{preds[c]}: no reference for this case in {ref}" for c in preds if c not in refs]
    pairs = [(c, preds[c], refs[c]) for c in refs if c in preds]
    if not pairs:
        raise InputError(f"no case in common between predictions {pred} ({len(preds)} label files) and "
                         f"references {ref} ({len(refs)} label files); cases are matched by file name")
    return pairs, problems


def evaluate_files(pred: str | os.PathLike, ref: str | os.PathLike,
                   progress: Optional[ProgressCallback] = None) -> dict[str, Any]:
    """Evaluate a predicted label file against a reference file, or every case of a prediction folder
    against a reference folder (cases matched by file name without extension, e.g. ``case1.nrrd`` with
    ``case1.nii.gz``).

    Returns ``{"pred", "ref", "cases": [{"case", "pred", "ref", "metrics": {label: {...}}}], "summary",
    "problems", "definitions", "deepliver"}``. Two files: any error is raised (e.g. ``GeometryError``
    naming both). Folders: cases without a partner and cases that fail (geometry, unreadable, bad values)
    are listed in ``problems`` (one line each) and the other cases are still evaluated.
    """
    from deepliver import __version__
    from deepliver.imaging.volumes import read_label

    pred, ref = Path(pred), Path(ref)
    pairs, problems = _pairs(pred, ref)
    cases = []
    progress = progress if len(pairs) > 1 else None  # no bar for a single pair
    if progress:
        progress("evaluate", 0, len(pairs))
    for i, (name, p, r) in enumerate(pairs, 1):
        try:
            metrics = evaluate_pair(read_label(p), read_label(r), p, r)
            cases.append({"case": name, "pred": os.fspath(p), "ref": os.fspath(r), "metrics": metrics})
        except DeepLiverError as e:
            if not pred.is_dir():
                raise
            problems.append(str(e))
        if progress:
            progress("evaluate", i, len(pairs))
    return {"pred": os.fspath(pred), "ref": os.fspath(ref), "cases": cases, "summary": summarize(cases),
            "problems": problems, "definitions": DEFINITIONS, "deepliver": {"version": __version__}}


# --- summary --------------------------------------------------------------------------------------
def _stats(values: list, n_null: int, is_count: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(values), "n_null": n_null,
                           "mean": statistics.fmean(values) if values else None,
                           "std": statistics.stdev(values) if len(values) > 1 else None,
                           "median": statistics.median(values) if values else None}
    if is_count:
        out["sum"] = int(sum(values))
    return out


def _pooled(totals: dict[str, int]) -> dict[str, Optional[float]]:
    out = {}
    for suffix in [""] + [f"_{name}" for name, _, _ in SIZE_BINS]:
        if suffix:
            args = [totals[f"{k}{suffix}"] for k in ("lesions_ref", "lesions_ref_found", "lesions_pred",
                                                      "lesions_pred_true")]
        else:
            args = [totals["lesions_ref"], totals["lesions_matched"], totals["lesions_pred"],
                    totals["lesions_matched"]]
        out.update({f"{k}{suffix}": v for k, v in detection_scores(*args).items()})
    return out


def summarize(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """Per label and metric: ``n``, ``n_null``, ``mean``, ``std`` (sample), ``median`` over ``cases``
    (``evaluate_files``'s case list), plus ``sum`` for lesion counts; ``tumor`` also gets ``pooled``:
    lesion precision/recall/F1 from the counts summed over cases."""
    summary: dict[str, Any] = {}
    for label in LABEL_NAMES:
        entry: dict[str, Any] = {}
        for key in METRICS[label]:
            raw = [c["metrics"][label][key] for c in cases]
            values = [float(v) for v in raw if v is not None]
            entry[key] = _stats(values, len(raw) - len(values), key.startswith("lesions_"))
        if label == "tumor":
            entry["pooled"] = _pooled({k: v["sum"] for k, v in entry.items() if "sum" in v})
        summary[label] = entry
    return summary
