"""Training runs as ``deepliver compare`` sees them: bundle, architecture, log, and the cases each trained on.

A RUN argument is a ``deepliver train`` output folder (``RUN/model/`` bundle, ``RUN/log.csv``) or a bundle
folder itself (``model.json``; no training curve then). The cases a run learned from come from its bundle:
U-Nets record ``fingerprint.train_cases`` / ``val_cases``; detectors record the ``deepliver convert`` folder
(``fingerprint.convert_dir``) whose ``splits.json`` lists them (``RUN/detection_data/splits.json`` when that
folder has moved).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from deepliver.errors import InputError
from deepliver.models.bundle import MODEL_JSON, ModelConfig, read_bundle_config

__all__ = ["ARCHITECTURE_NAMES", "RunInfo", "read_run", "read_log", "architecture_of", "column_names"]

ARCHITECTURE_NAMES = {"unet2d": "U-Net 2D", "unet3d": "U-Net 3D", "fasterrcnn": "Faster R-CNN", "yolo": "YOLO"}
"""Display names of the architectures, in the table's column order."""


@dataclass
class RunInfo:
    """One RUN: ``bundle`` folder and its ``config``; ``architecture`` (a key of ``ARCHITECTURE_NAMES`` or
    the bundle's own name); ``log`` rows of ``log.csv`` (floats where numeric); ``train_cases`` /
    ``val_cases`` the case ids it learned from / was validated on (None when the bundle does not say)."""

    path: Path
    bundle: Path
    config: ModelConfig
    architecture: str
    log: list[dict[str, Any]]
    train_cases: Optional[set[str]]
    val_cases: Optional[set[str]]

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def log_score(self) -> Optional[str]:
        """The ``log.csv`` column the run chose its best epoch by (``val_<validation.metric>``), when logged."""
        key = f"val_{(self.config.validation or {}).get('metric', 'dice')}"
        return key if self.log and key in self.log[0] else None

    @property
    def seen_cases(self) -> Optional[set[str]]:
        """Training and validation cases together (None when unknown)."""
        if self.train_cases is None or self.val_cases is None:
            return None
        return self.train_cases | self.val_cases

    def details(self) -> dict[str, Any]:
        """Facts for the report's models table."""
        val = self.config.validation or {}
        metric = val.get("metric", "dice")
        score = next((val[k] for k in (metric, "value") if isinstance(val.get(k), (int, float))), None)
        return {"run": str(self.path), "epochs": self.config.training.get("epochs_run", len(self.log) or None),
                "validation": (f"{metric} {score:.3f}" if score is not None else None),
                "trained on": len(self.train_cases) if self.train_cases is not None else "unknown"}


def architecture_of(config: ModelConfig) -> str:
    """``unet2d`` / ``unet3d`` for U-Nets, else the bundle's architecture name."""
    if config.architecture == "unet":
        return f"unet{config.spatial_dims}d"
    return config.architecture


def _number(text: str) -> Any:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return value if math.isfinite(value) else None


def read_log(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV training log (``log.csv`` or ultralytics' ``results.csv``), numbers as floats, keys
    stripped; ``[]`` when the file is missing or unreadable (a report still works without curves)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{k.strip(): _number(v.strip() if isinstance(v, str) else v) for k, v in row.items() if k}
                    for row in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _find_log(run: Path) -> Optional[Path]:
    if (run / "log.csv").is_file():
        return run / "log.csv"
    found = sorted((run / "yolo").rglob("results.csv")) if (run / "yolo").is_dir() else []
    return found[0] if found else None


def _splits_file(run: Path, config: ModelConfig) -> Optional[Path]:
    recorded = config.fingerprint.get("convert_dir")
    for folder in ([Path(recorded)] if recorded else []) + [run / "detection_data"]:
        if (folder / "splits.json").is_file():
            return folder / "splits.json"
    return None


def _recorded_cases(run: Path, config: ModelConfig) -> tuple[Optional[set[str]], Optional[set[str]]]:
    fp = config.fingerprint or {}
    if "train_cases" in fp and "val_cases" in fp:
        return set(fp["train_cases"]), set(fp["val_cases"])
    splits = _splits_file(run, config)
    if splits is None:
        return None, None
    try:
        data = json.loads(splits.read_text(encoding="utf-8"))
        return set(data.get("train", [])), set(data.get("val", []))
    except (OSError, json.JSONDecodeError):
        return None, None


def read_run(path: str | os.PathLike) -> RunInfo:
    """Read a RUN folder (or a bundle folder); ``BundleError`` / ``InputError`` naming it otherwise."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("no such RUN folder (a 'deepliver train --out' folder or a model bundle)", path)
    bundle = path if (path / MODEL_JSON).is_file() else path / "model"
    if not (bundle / MODEL_JSON).is_file():
        raise InputError(f"not a training run: neither {MODEL_JSON} nor model/{MODEL_JSON} is here (did the "
                         "training finish?)", path)
    config = read_bundle_config(bundle)
    run = path if bundle != path else path.parent
    log_path = _find_log(run) if bundle != path else None
    train, val = _recorded_cases(run, config)
    return RunInfo(path, bundle, config, architecture_of(config), read_log(log_path) if log_path else [], train, val)


def column_names(runs: list[RunInfo]) -> list[str]:
    """``"<architecture> <task>"`` per run (e.g. ``U-Net 2D tumor``); the RUN folder name is added where
    two runs would share a name."""
    base = [f"{ARCHITECTURE_NAMES.get(r.architecture, r.architecture)} {r.task}" for r in runs]
    return [f"{name} ({r.path.name})" if base.count(name) > 1 else name for name, r in zip(base, runs)]
