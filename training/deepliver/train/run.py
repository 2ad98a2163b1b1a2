"""``train(dataset, out, config)``: the library entry of ``deepliver train``; the RUN folder; the trainer table.

RUN layout::

    RUN/config.json              every option, defaults included (TrainConfig)
    RUN/checkpoints/last.pt      resume state;  RUN/checkpoints/best.pt  best weights by validation metric
    RUN/log.csv                  one row per epoch (RUN/tensorboard/ too when tensorboard is installed)
    RUN/cache/                   preprocessed cases (unless data.cache_dir points elsewhere)
    RUN/model/                   the bundle: model.json + weights.safetensors, validation metrics filled

A trainer is looked up by model name in ``TRAINERS`` (a callable or a lazy ``"module:function"``), called
as ``trainer(dataset: Path, out: Path, config: TrainConfig, resume=..., progress=...) -> Path`` (the bundle
folder ``out/model``) after ``train`` has checked the RUN folder and written ``config.json``. Faster R-CNN
and YOLO live in ``deepliver.train.detection``; a target whose module is missing raises ``ConfigError``
"not available yet".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Union

from deepliver.atomic import write_json_atomic
from deepliver.errors import ConfigError
from deepliver.models.registry import resolve
from deepliver.progress import ProgressCallback
from deepliver.train.config import TrainConfig, apply_values, config_from_dict, default_config

__all__ = ["RunPaths", "TRAINERS", "register_trainer", "train", "RESUMABLE_OVERRIDES"]


@dataclass(frozen=True)
class RunPaths:
    """The files of a RUN folder."""
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.pt"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def bundle(self) -> Path:
        return self.root / "model"

    @property
    def cache(self) -> Path:
        return self.root / "cache"


Trainer = Callable[..., Path]
TRAINERS: dict[str, Union[Trainer, str]] = {
    "unet2d": "deepliver.train.segmentation:train_unet",
    "unet3d": "deepliver.train.segmentation:train_unet",
    "fasterrcnn": "deepliver.train.detection:train_detector",
    "yolo": "deepliver.train.detection:train_detector",
}

RESUMABLE_OVERRIDES = ("optim.epochs", "device", "data.workers", "validation.batch_size")
"""Options that may change when a run is resumed; the others come from ``RUN/config.json``."""

BEFORE_KEY = {"optim.schedule": "plateau", "augment.lesion_paste": 0.0}
"""What a run whose ``config.json`` predates a key used instead of that key's default (which changed since)."""


def register_trainer(model: str, trainer: Union[Trainer, str]) -> None:
    """Use ``trainer`` (callable or ``"module:function"``) for ``--model model``."""
    TRAINERS[model] = trainer


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _resume_config(run: RunPaths, overrides: dict[str, Any]) -> TrainConfig:
    if not run.last.is_file():
        raise ConfigError("nothing to resume: checkpoints/last.pt is missing (start without --resume)", run.root)
    try:
        data = json.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read the run's config ({e})", run.config) from e
    for key, value in BEFORE_KEY.items():
        section, name = key.split(".")
        if isinstance(data, dict) and isinstance(data.get(section), dict):
            data[section].setdefault(name, value)
    config = config_from_dict(data, where=str(run.config))
    fixed = {k: v for k, v in overrides.items() if k not in RESUMABLE_OVERRIDES and
             _get(config, k) != (tuple(v) if isinstance(v, list) else v)}
    if fixed:
        raise ConfigError(f"cannot change {', '.join(sorted(fixed))} when resuming (only "
                          f"{', '.join(RESUMABLE_OVERRIDES)}); start a new --out instead", run.root)
    return apply_values(config, overrides)


def _started(run: RunPaths) -> bool:
    """True when ``run`` holds anything but a config and a cache (a run that failed before its first
    epoch may be started again)."""
    return run.root.exists() and any(p.name not in ("config.json", "cache") for p in run.root.iterdir())


def _get(config: TrainConfig, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


def train(dataset: str | os.PathLike, out: str | os.PathLike, config: Optional[TrainConfig] = None, *,
          resume: bool = False, overrides: Optional[dict[str, Any]] = None,
          progress: Optional[ProgressCallback] = None) -> Path:
    """Train ``config.model`` for ``config.task`` on the dataset folder ``dataset`` into the RUN folder ``out``;
    returns the bundle folder ``out/model``.

    ``overrides`` (``"section.key" -> value``, e.g. from command-line flags) are applied on top of
    ``config`` (default: ``default_config()``), or on top of ``out/config.json`` when ``resume`` (then only
    ``RESUMABLE_OVERRIDES`` may differ). An existing ``out`` without ``resume`` is refused (``ConfigError``)
    unless it holds only ``config.json`` and ``cache/`` (a run that failed before training began). Under torchrun every rank calls this; only rank 0 writes.
    """
    run = RunPaths(Path(out))
    if not Path(dataset).is_dir():
        raise ConfigError("no such dataset folder", dataset)
    overrides = dict(overrides or {})
    if resume:
        config = _resume_config(run, overrides)
    else:
        if _is_main() and _started(run):
            raise ConfigError("this RUN folder already exists; pass --resume to continue it, or choose another "
                              "--out", run.root)
        config = apply_values(config or default_config(), overrides)
    target = TRAINERS.get(config.model)
    if target is None:
        raise ConfigError(f"no trainer for model {config.model!r}; known: {', '.join(sorted(TRAINERS))}")
    trainer = resolve(target, f"training --model {config.model}")
    if _is_main():
        run.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run.config, config.to_dict())
    return trainer(Path(dataset), run.root, config, resume=resume, progress=progress)
