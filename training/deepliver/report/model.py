"""What a comparison report holds: the models' per-case metrics, their training logs, overlay slices, and
the rows of the architecture table. No torch, no matplotlib here.

A ``ModelResult`` holds one column of the table: per-case metrics in the form ``deepliver.metrics``'
``evaluate_files`` gives them (``{"case", "metrics": {"liver": {...}, "tumor": {...}}}``), the labels the
model is scored on (a liver model only on ``liver``), its ``RUN/log.csv`` rows and overlay slices.
``Report`` gathers the columns with the dataset, the cases and notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import numpy as np

from deepliver.metrics import LESION_METRICS, METRICS, SIZE_BINS, summarize

__all__ = ["Overlay", "ModelResult", "Report", "TableRow", "TABLE_ROWS", "PERCENT_METRICS", "DISTANCE_METRICS",
           "SEED_PUBLISHED", "SEED_SOURCE", "format_value", "unit_of", "row_value"]

PERCENT_METRICS = frozenset(("dice", "iou", "precision", "recall", "accuracy", "specificity")
                            + tuple(k for k in LESION_METRICS if k.startswith("lesion_")))
"""Ratios shown in % in the tables (the CSV keeps fractions 0-1)."""
DISTANCE_METRICS = frozenset(("hd", "hd95", "assd"))
"""Distances in mm."""


@dataclass(frozen=True)
class TableRow:
    """A row of the architecture table: ``label``'s ``metric``; ``stat`` is ``mean`` (over cases, nulls
    skipped) or ``pooled`` (lesion scores from the lesion counts summed over cases)."""

    label: str
    metric: str
    stat: str = "mean"

    @property
    def title(self) -> str:
        unit = unit_of(self.metric)
        pooled = ", pooled" if self.stat == "pooled" else ""
        return f"{self.label} {self.metric.replace('_', ' ')} ({unit}{pooled})"


_PIXEL = ("dice", "iou", "precision", "recall", "accuracy", "specificity", "hd", "hd95", "assd")
TABLE_ROWS: tuple[TableRow, ...] = (
    tuple(TableRow("tumor", m) for m in _PIXEL)
    + tuple(TableRow("tumor", m, "pooled") for m in ("lesion_precision", "lesion_recall", "lesion_f1"))
    + tuple(TableRow("tumor", f"lesion_recall_{name}", "pooled") for name, _, _ in SIZE_BINS)
    + tuple(TableRow("liver", m) for m in _PIXEL))
"""The rows of the architecture table, tumor first (the seed's table is about the cancer)."""

SEED_SOURCE = ("published by the seed project (the student project this one continues) for cancer "
               "segmentation on LiTS / MSD Task03 CT, in %; HD as published, unit not stated. Other data, other "
               "splits: NOT comparable with the columns above")
SEED_PUBLISHED: dict[str, dict[str, Optional[float]]] = {
    "U-Net": {"dice": 40.2, "iou": 30.9, "hd": 4.37, "precision": 43.1, "recall": 52.1, "accuracy": 98.1,
              "specificity": 98.8},
    "Faster R-CNN": {"dice": 41.1, "iou": 33.3, "hd": 3.39, "precision": 47.4, "recall": 41.1, "accuracy": 99.0,
                     "specificity": 99.7},
    "YOLOv3": {"dice": 1.9, "iou": 1.1, "hd": None, "precision": None, "recall": None, "accuracy": None,
               "specificity": None},
}
"""The seed project's result table (``/work/shared/SEEDS.md``): model -> metric -> value as published."""


@dataclass
class Overlay:
    """One axial CT slice with a reference and a predicted mask, for the best/worst case figures.

    ``image`` (y, x) in HU; ``reference`` and ``prediction`` bool (y, x) on the same pixels; ``spacing``
    ``(x, y)`` mm of the pixels; ``z`` the slice index in the case's (z, y, x) array; ``score`` the case's
    Dice for ``label``; ``which`` ``"best"`` or ``"worst"``."""

    case: str
    label: str
    which: str
    score: Optional[float]
    z: int
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    spacing: tuple[float, float] = (1.0, 1.0)


@dataclass
class ModelResult:
    """One column of the table. ``architecture``: ``unet2d``, ``unet3d``, ``fasterrcnn``, ``yolo``;
    ``task``: ``liver`` or ``tumor``; ``cases``: per-case metrics (``evaluate_files``' case entries, both
    labels); ``labels``: the labels shown for this model (a liver model's tumor values mean nothing);
    ``log``: ``RUN/log.csv`` rows (numbers as floats); ``log_score``: the log column the run chose its
    best epoch by (None: the first validation score column); ``details``: JSON-ready facts shown in the
    runs table (run folder, epochs, validation score...)."""

    name: str
    architecture: str
    task: str
    cases: list[dict[str, Any]]
    labels: tuple[str, ...] = ("liver", "tumor")
    log: list[dict[str, Any]] = field(default_factory=list)
    overlays: list[Overlay] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    log_score: Optional[str] = None

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self._summary: Optional[dict[str, Any]] = None

    @property
    def summary(self) -> dict[str, Any]:
        """``deepliver.metrics.summarize`` of ``cases`` (computed once)."""
        if self._summary is None:
            self._summary = summarize(self.cases)
        return self._summary

    def values(self, label: str, metric: str) -> list[Optional[float]]:
        """Per-case values of ``label``'s ``metric`` in case order (None where undefined)."""
        return [c["metrics"][label].get(metric) for c in self.cases]


@dataclass
class Report:
    """A comparison: the models (columns) scored on the same ``cases`` of ``dataset``."""

    title: str
    dataset: str
    cases: list[str]
    models: list[ModelResult]
    case_selection: str = ""
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))


def unit_of(metric: str) -> str:
    """``%`` for ratios, ``mm`` for distances, ``mL`` for volumes, ``n`` for counts."""
    if metric in PERCENT_METRICS:
        return "%"
    if metric in DISTANCE_METRICS:
        return "mm"
    if metric.startswith("volume"):
        return "mL"
    return "n"


def format_value(metric: str, value: Optional[float]) -> str:
    """A table cell: ratios as % with 1 decimal, distances in mm with 2, others with 3 significant
    digits; ``-`` for None."""
    if value is None:
        return "-"
    if metric in PERCENT_METRICS:
        return f"{100.0 * value:.1f}"
    if metric in DISTANCE_METRICS:
        return f"{value:.2f}"
    return f"{value:.3g}"


def row_value(model: ModelResult, row: TableRow) -> Optional[dict[str, Any]]:
    """``{"value", "std", "n", "n_null"}`` of ``row`` for ``model`` (None when the model is not scored on
    the row's label). ``pooled`` rows take the pooled lesion score and have no std."""
    if row.label not in model.labels or row.metric not in METRICS[row.label] and row.stat != "pooled":
        return None
    entry = model.summary[row.label]
    if row.stat == "pooled":
        stats = entry.get(row.metric, {})
        return {"value": entry["pooled"].get(row.metric), "std": None, "n": stats.get("n", len(model.cases)),
                "n_null": stats.get("n_null", 0)}
    stats = entry[row.metric]
    return {"value": stats["mean"], "std": stats["std"], "n": stats["n"], "n_null": stats["n_null"]}
