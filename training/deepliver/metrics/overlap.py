"""Voxel-count metrics of a predicted mask against a reference mask (numpy ``count_nonzero``; no torch).

Masks are bool arrays of any shape (deepliver passes ``(z, y, x)``). With TP, FP, FN, TN the voxel counts:
``dice = 2TP / (2TP + FP + FN)``, ``iou = TP / (TP + FP + FN)``, ``precision = TP / (TP + FP)``,
``recall = TP / (TP + FN)`` (sensitivity), ``accuracy = (TP + TN) / N``, ``specificity = TN / (TN + FP)``.

Zero denominators: the value is 1.0 when prediction and reference agree on it (both masks empty, or, for
specificity, both full) and None (undefined, JSON null) otherwise; dice and iou are 0.0 when exactly one
mask is empty.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["OVERLAP_METRICS", "confusion_counts", "overlap_metrics"]

OVERLAP_METRICS = ("dice", "iou", "precision", "recall", "accuracy", "specificity")


def confusion_counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` voxel counts of two bool masks of the same shape."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    tp = int(np.count_nonzero(pred & ref)) if n_pred and n_ref else 0
    fp, fn = n_pred - tp, n_ref - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _ratio(num: int, den: int, agree: bool) -> Optional[float]:
    if den:
        return num / den
    return 1.0 if agree else None


def overlap_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, Optional[float]]:
    """The six count metrics of ``OVERLAP_METRICS`` for two bool masks (see the module docstring)."""
    tp, fp, fn, tn = confusion_counts(pred, ref)
    both_empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if both_empty else tp / (tp + fp + fn),
        "precision": _ratio(tp, tp + fp, both_empty),
        "recall": _ratio(tp, tp + fn, both_empty),
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "specificity": _ratio(tn, tn + fp, fp == 0 and fn == 0),
    }
