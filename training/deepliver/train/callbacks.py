"""Epoch-end callbacks: best-metric tracking, early stopping, the learning-rate schedule, and logs.

Logs: ``RUN/log.csv`` (one row per epoch, rewritten atomically) always; TensorBoard event files in
``RUN/tensorboard/`` only when the ``tensorboard`` package is installed (``torch.utils.tensorboard``
needs it; deepliver does not depend on it, so without it only the CSV is written).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Optional

from deepliver.atomic import write_text_atomic
from deepliver.train.config import OptimSection

__all__ = ["BestMetric", "EarlyStopping", "make_scheduler", "CsvLog", "tensorboard_writer"]


class BestMetric:
    """Tracks the best value of a metric (higher is better); NaN never improves."""

    def __init__(self) -> None:
        self.value: float = -math.inf
        self.epoch: int = -1

    def update(self, value: float, epoch: int) -> bool:
        if math.isfinite(value) and value > self.value:
            self.value, self.epoch = float(value), int(epoch)
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value, self.epoch = float(state["value"]), int(state["epoch"])


class EarlyStopping:
    """Stop after ``patience`` epochs without improvement (``patience`` 0: never)."""

    def __init__(self, patience: int) -> None:
        self.patience, self.bad_epochs = int(patience), 0

    def step(self, improved: bool) -> bool:
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.bad_epochs = int(state["bad_epochs"])


def make_scheduler(optimizer, options: OptimSection):
    """``ReduceLROnPlateau`` on the validation metric (mode max)."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    return ReduceLROnPlateau(optimizer, mode="max", factor=options.plateau_factor,
                             patience=options.plateau_patience, min_lr=options.min_lr)


class CsvLog:
    """``log.csv`` rows (dicts with the same keys); on resume, rows after the resumed epoch are dropped."""

    def __init__(self, path: str | os.PathLike, keep_until_epoch: Optional[int] = None) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if keep_until_epoch is not None and self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until_epoch]

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(row))
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, out.getvalue())


def tensorboard_writer(folder: str | os.PathLike):
    """A ``SummaryWriter`` on ``folder``, or None when the ``tensorboard`` package is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.fspath(folder))
