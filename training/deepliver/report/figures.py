"""The report's figures as PNG bytes, drawn with matplotlib's object API (no pyplot, no global state).

- ``overlay_png``: per model, its best and worst case (by the Dice of the model's own task): the CT slice
  where the reference is largest, windowed -160..240 HU, with the reference contour (green) and the
  predicted contour (red), pixels drawn with their true aspect ratio.
- ``boxplot_png``: per-case Dice and HD95 of liver and tumor, one box per model, each case a dot.
- ``curves_png``: every run's ``log.csv``: training loss and the validation score per epoch.
"""

from __future__ import annotations

import io
import math
from typing import Optional

import numpy as np

from deepliver.report.model import ModelResult, Overlay, Report

__all__ = ["DISPLAY_WINDOW", "BOX_PANELS", "overlay_png", "boxplot_png", "validation_series", "curves_png",
           "render_figures"]

DISPLAY_WINDOW = (-160.0, 240.0)
"""HU window of the CT in overlays (abdomen soft tissue)."""
BOX_PANELS = (("liver", "dice"), ("tumor", "dice"), ("liver", "hd95"), ("tumor", "hd95"))
DPI = 90
REFERENCE_COLOR, PREDICTION_COLOR = "#22cc44", "#ff3344"


def _figure(width: float, height: float):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _png(figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _draw_overlay(ax, overlay: Overlay) -> None:
    sx, sy = overlay.spacing
    ax.imshow(np.clip(overlay.image, *DISPLAY_WINDOW), cmap="gray", vmin=DISPLAY_WINDOW[0], vmax=DISPLAY_WINDOW[1],
              interpolation="nearest", aspect=float(sy) / float(sx))
    for mask, color in ((overlay.reference, REFERENCE_COLOR), (overlay.prediction, PREDICTION_COLOR)):
        if np.any(mask) and not np.all(mask):
            ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors=[color], linewidths=1.2)
    score = "-" if overlay.score is None else f"{100 * overlay.score:.1f} %"
    ax.set_title(f"{overlay.which}: {overlay.case}\nz {overlay.z}, {overlay.label} Dice {score}", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def overlay_png(model: ModelResult) -> Optional[bytes]:
    """The best/worst overlays of ``model`` side by side (None when it has none)."""
    if not model.overlays:
        return None
    n = len(model.overlays)
    figure = _figure(2.8 * n, 3.2)
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, overlay in zip(axes, model.overlays):
        _draw_overlay(ax, overlay)
    figure.suptitle(f"{model.name}  (green: reference, red: prediction)", fontsize=9)
    return _png(figure)


def boxplot_png(report: Report) -> Optional[bytes]:
    """Per-case box plots of ``BOX_PANELS`` across models (None when no model has a value)."""
    panels = []
    for label, metric in BOX_PANELS:
        columns = [(m.name, [v for v in m.values(label, metric) if v is not None])
                   for m in report.models if label in m.labels]
        columns = [(name, values) for name, values in columns if values]
        if columns:
            panels.append((label, metric, columns))
    if not panels:
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    width = max(4.0, 1.3 * max(len(c) for _, _, c in panels) + 1.5)
    figure = _figure(width * cols, 3.0 * rows)
    axes = figure.subplots(rows, cols, squeeze=False).ravel()
    for ax, (label, metric, columns) in zip(axes, panels):
        scale = 100.0 if metric == "dice" else 1.0
        data = [np.asarray(values) * scale for _, values in columns]
        ax.boxplot(data, showfliers=False)
        for i, values in enumerate(data, 1):
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            ax.plot(i + jitter, values, "o", markersize=3, alpha=0.6, color="#3366cc")
        ax.set_xticks(range(1, len(columns) + 1), [name for name, _ in columns], rotation=20, fontsize=7,
                      ha="right")
        ax.set_title(f"{label} {metric} ({'%' if metric == 'dice' else 'mm'}), per case", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _png(figure)


def _series(log: list[dict], pick) -> tuple[list[float], list[float], Optional[str]]:
    keys = [k for k in (log[0] if log else {}) if pick(k)]
    if not keys:
        return [], [], None
    key = keys[0]
    xs, ys = [], []
    for i, row in enumerate(log, 1):
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            xs.append(float(row.get("epoch", i)))
            ys.append(float(value))
    return xs, ys, key


def _is_score(key: str) -> bool:
    """A validation score column: ``val_dice`` ... (deepliver), ``metrics/mAP50(B)`` (ultralytics)."""
    return (key.startswith("val") and "loss" not in key) or key.startswith("metrics/mAP50")


def validation_series(model: ModelResult) -> tuple[list[float], list[float], Optional[str]]:
    """``(epochs, values, column)`` of the validation score a model's training curve shows: the column its run
    chose the best epoch by (``model.log_score``, e.g. ``val_dice_global`` for tumor U-Nets), else the log's
    first validation score column."""
    return _series(model.log, (lambda k: k == model.log_score) if model.log_score else _is_score)


def curves_png(report: Report) -> Optional[bytes]:
    """Training loss and validation score per epoch of every model with a log (None when none has one)."""
    logged = [m for m in report.models if m.log]
    if not logged:
        return None
    figure = _figure(9.0, 3.2)
    loss_ax, val_ax = figure.subplots(1, 2)
    for model in logged:
        xs, ys, key = _series(model.log, lambda k: "loss" in k)
        if xs:
            loss_ax.plot(xs, ys, marker=".", label=f"{model.name} ({key})")
        xs, ys, key = validation_series(model)
        if xs:
            val_ax.plot(xs, ys, marker=".", label=f"{model.name} ({key})")
    for ax, title in ((loss_ax, "training loss"), (val_ax, "validation score (whole volumes)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    return _png(figure)


def render_figures(report: Report) -> dict[str, tuple[str, bytes]]:
    """``{file stem: (caption, PNG bytes)}`` of every figure the report has data for, in display order."""
    out: dict[str, tuple[str, bytes]] = {}
    for i, model in enumerate(report.models):
        png = overlay_png(model)
        if png:
            out[f"overlay_{i + 1}"] = (f"{model.name}: best and worst case", png)
    png = boxplot_png(report)
    if png:
        out["per_case"] = ("Per-case Dice and HD95", png)
    png = curves_png(report)
    if png:
        out["training"] = ("Training curves (RUN/log.csv)", png)
    return out
