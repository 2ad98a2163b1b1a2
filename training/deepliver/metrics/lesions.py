"""Lesion-wise tumor detection: which predicted lesions match which reference lesions. No torch.

Lesions are the 3D 26-connected components of the tumor masks (``cc3d``). A predicted lesion P matches a
reference lesion R when their voxel IoU ``|P ∩ R| / |P ∪ R|`` is > 0.5. Matching is one-to-one, greedy by
IoU descending (ties: lower reference index, then lower prediction index). With IoU > 0.5 a lesion can
overlap at most one lesion of the other mask that much, so greedy matching is also the optimal one.

``lesion_precision`` = matched predicted lesions / predicted lesions; ``lesion_recall`` = matched
reference lesions / reference lesions; ``lesion_f1`` = 2PR / (P + R). A split lesion (one reference, two
predicted halves each with IoU <= 0.5) counts as a miss and two false positives.

By size: each lesion's equivalent-sphere diameter ``d = (6 V / pi)^(1/3)`` (V its volume in mm³) puts it in
``lt10mm`` (d < 10), ``10to20mm`` (10 <= d <= 20) or ``gt20mm`` (d > 20). Recall by size buckets the
reference lesions; precision by size buckets the predicted lesions by their own size.

Empty conventions: no reference and no predicted lesions → precision = recall = f1 = 1.0; only predicted
ones → precision 0, recall None, f1 0; only reference ones → precision None, recall 0, f1 0.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cc3d
import numpy as np

from deepliver.metrics.surface import bounding_box

__all__ = ["SIZE_BINS", "LESION_METRICS", "lesion_components", "match_lesions", "lesion_metrics",
           "detection_scores", "equivalent_diameter_mm"]

SIZE_BINS: tuple[tuple[str, float, float], ...] = (
    ("lt10mm", 0.0, 10.0), ("10to20mm", 10.0, 20.0), ("gt20mm", 20.0, math.inf))
"""``(name, low, high)`` equivalent-sphere diameter buckets in mm: lt10mm is d < 10, 10to20mm is
10 <= d <= 20, gt20mm is d > 20."""

LESION_METRICS = (
    ("lesions_ref", "lesions_pred", "lesions_matched", "lesion_precision", "lesion_recall", "lesion_f1")
    + tuple(f"{key}_{name}" for name, _, _ in SIZE_BINS
            for key in ("lesions_ref", "lesions_ref_found", "lesions_pred", "lesions_pred_true",
                        "lesion_precision", "lesion_recall", "lesion_f1")))
"""Keys of ``lesion_metrics``'s result, in order. Counts are ints, scores floats or None."""


def equivalent_diameter_mm(volume_mm3: np.ndarray | float) -> np.ndarray | float:
    """Diameter (mm) of the sphere with volume ``volume_mm3``."""
    return np.cbrt(6.0 * np.asarray(volume_mm3, dtype=float) / math.pi)


def _size_bin(diameter: float) -> str:
    if diameter < 10.0:
        return "lt10mm"
    return "10to20mm" if diameter <= 20.0 else "gt20mm"


def lesion_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """26-connected components of a bool ``(z, y, x)`` mask: ``(labels uint32, voxel count per label)``;
    ``counts[0]`` is the background."""
    labels, n = cc3d.connected_components(np.ascontiguousarray(mask), connectivity=26, return_N=True)
    return labels, np.bincount(labels.ravel(), minlength=n + 1)


def match_lesions(pred_labels: np.ndarray, ref_labels: np.ndarray, pred_sizes: np.ndarray,
                  ref_sizes: np.ndarray) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(ref_label, pred_label, iou)`` with IoU > 0.5, greedy by IoU descending."""
    both = (pred_labels > 0) & (ref_labels > 0)
    if not both.any():
        return []
    width = np.int64(len(pred_sizes))
    keys, inter = np.unique(ref_labels[both].astype(np.int64) * width + pred_labels[both], return_counts=True)
    r, p = keys // width, keys % width
    iou = inter / (ref_sizes[r] + pred_sizes[p] - inter)
    order = np.lexsort((p, r, -iou))
    matches, used_ref, used_pred = [], set(), set()
    for i in order:
        if iou[i] <= 0.5:
            break
        if int(r[i]) not in used_ref and int(p[i]) not in used_pred:
            used_ref.add(int(r[i]))
            used_pred.add(int(p[i]))
            matches.append((int(r[i]), int(p[i]), float(iou[i])))
    return matches


def detection_scores(n_ref: int, n_ref_found: int, n_pred: int, n_pred_true: int) -> dict[str, Optional[float]]:
    """``lesion_precision``, ``lesion_recall``, ``lesion_f1`` from counts (empty conventions above)."""
    precision = n_pred_true / n_pred if n_pred else (1.0 if n_ref == 0 else None)
    recall = n_ref_found / n_ref if n_ref else (1.0 if n_pred == 0 else None)
    if precision is None or recall is None:
        f1: Optional[float] = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"lesion_precision": precision, "lesion_recall": recall, "lesion_f1": f1}


def lesion_metrics(pred: np.ndarray, ref: np.ndarray, spacing_zyx: Sequence[float]) -> dict:
    """Lesion-wise detection (module docstring) of bool tumor masks ``(z, y, x)``; spacing ``(z, y, x)`` mm.
    Returns the ``LESION_METRICS`` keys."""
    box = bounding_box(pred | ref)
    if box is not None:  # components do not change when the empty outside is cut away
        pred, ref = pred[box], ref[box]
    pred_labels, pred_sizes = lesion_components(pred)
    ref_labels, ref_sizes = lesion_components(ref)
    matches = match_lesions(pred_labels, ref_labels, pred_sizes, ref_sizes)
    voxel_mm3 = float(np.prod(spacing_zyx))
    ref_bins = [_size_bin(d) for d in equivalent_diameter_mm(ref_sizes[1:] * voxel_mm3)]
    pred_bins = [_size_bin(d) for d in equivalent_diameter_mm(pred_sizes[1:] * voxel_mm3)]
    found_ref = {r for r, _, _ in matches}
    true_pred = {p for _, p, _ in matches}
    out: dict = {"lesions_ref": len(ref_bins), "lesions_pred": len(pred_bins), "lesions_matched": len(matches)}
    out.update(detection_scores(len(ref_bins), len(found_ref), len(pred_bins), len(true_pred)))
    for name, _, _ in SIZE_BINS:
        counts = {
            "lesions_ref": sum(b == name for b in ref_bins),
            "lesions_ref_found": sum(b == name and i + 1 in found_ref for i, b in enumerate(ref_bins)),
            "lesions_pred": sum(b == name for b in pred_bins),
            "lesions_pred_true": sum(b == name and i + 1 in true_pred for i, b in enumerate(pred_bins)),
        }
        scores = detection_scores(counts["lesions_ref"], counts["lesions_ref_found"], counts["lesions_pred"],
                                  counts["lesions_pred_true"])
        out.update({f"{k}_{name}": v for k, v in {**counts, **scores}.items()})
    return {key: out[key] for key in LESION_METRICS}

