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
from deepliver.errors import ConfigError
from deepliver.train.config import SCHEDULES, OptimSection

__all__ = ["BestMetric", "EarlyStopping", "make_scheduler", "poly_schedule", "step_schedule", "validation_due",
           "CsvLog", "tensorboard_writer"]


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


def validation_due(epoch: int, every: int, epochs: int) -> bool:
    """Whether epoch ``epoch`` (0-based) of ``epochs`` validates with ``validation.every = every``: every
    ``every``-th epoch and always the last, so that a run ends on a validated model."""
    return (epoch + 1) % max(int(every), 1) == 0 or epoch + 1 >= epochs


def step_schedule(scheduler, schedule: str, metric: Optional[float]) -> None:
    """The end-of-epoch step of a ``make_scheduler`` scheduler: with the validation ``metric`` on a validated
    epoch; otherwise (``metric`` None) only the poly schedule steps, whose rate falls every epoch, while
    ReduceLROnPlateau waits for the next validation (its patience counts validations)."""
    if metric is not None:
        scheduler.step(metric)
    elif schedule == "poly":
        scheduler.step()


class EarlyStopping:
    """Stop after ``patience`` validations without improvement (``patience`` 0: never); with
    ``validation.every = 1`` (the default) that is epochs."""

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
    """``options.schedule``: ``plateau`` (``ReduceLROnPlateau`` on the validation metric, mode max) or ``poly``
    (``poly_schedule``). Both are stepped at the end of each epoch by ``step_schedule`` (with the metric on a
    validated epoch)."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    if options.schedule == "plateau":
        return ReduceLROnPlateau(optimizer, mode="max", factor=options.plateau_factor,
                                 patience=options.plateau_patience, min_lr=options.min_lr)
    if options.schedule == "poly":
        return poly_schedule(optimizer, options.epochs, min_lr=options.min_lr)
    raise ConfigError(f"optim.schedule must be {' or '.join(SCHEDULES)}, got {options.schedule!r}")


def poly_schedule(optimizer, epochs: int, exponent: float = 0.9, min_lr: float = 0.0):
    """nnU-Net's poly schedule, per epoch: after ``e`` epochs the rate is ``lr * (1 - e / epochs) ** exponent``
    (at least ``min_lr``). ``step(metric)`` ignores the metric, so it is called like ReduceLROnPlateau.
    ``load_state_dict`` (resume, after the optimizer's) keeps this schedule's ``epochs``, so a run resumed with
    more epochs follows the rates of an uninterrupted run of that length, from the next epoch on."""
    from torch.optim.lr_scheduler import LRScheduler

    class _Poly(LRScheduler):
        def __init__(self):
            self.epochs, self.exponent, self.min_lr = max(int(epochs), 1), float(exponent), float(min_lr)
            super().__init__(optimizer)

        def get_lr(self):
            left = max(0.0, 1.0 - min(self.last_epoch, self.epochs) / self.epochs)
            return [max(base * left ** self.exponent, self.min_lr) for base in self.base_lrs]

        def step(self, metric=None):  # noqa: ARG002 - the metric is not used
            super().step()

        def load_state_dict(self, state):
            planned = self.epochs
            super().load_state_dict(state)
            self.epochs = planned
            self._last_lr = self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, self._last_lr):
                group["lr"] = lr

    return _Poly()


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
