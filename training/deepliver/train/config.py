"""Training configuration: dataclasses holding every default in one place, read/written as JSON or YAML.

A config file is a mapping with the top-level keys of ``TrainConfig`` (``model``, ``task``, ``seed``,
``device``, ``amp``) and one mapping per section (``unet``, ``data``, ``augment``, ``optim``,
``validation``, ``detector``). Any subset may be given; the rest keep their defaults. Defaults that depend
on the model (spacing, patch size, batch size) are in ``MODEL_DEFAULTS``, those that depend on the task in
``TASK_DEFAULTS``. Spacings and patch sizes are in
``(x, y, z)`` order like ``model.json``; None in a spacing keeps the input's spacing on that axis.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deepliver.atomic import write_text_atomic
from deepliver.errors import ConfigError

__all__ = ["MODELS", "TASKS", "POSITIVE_SAMPLING", "SCHEDULES", "VALIDATION_METRICS", "UnetSection", "DataSection",
           "AugmentSection", "OptimSection", "ValidationSection", "DetectorSection", "TrainConfig", "MODEL_DEFAULTS",
           "TASK_DEFAULTS", "MODEL_TASK_DEFAULTS", "default_config", "apply_values", "config_from_dict", "read_config",
           "write_config"]

MODELS = ("unet2d", "unet3d", "fasterrcnn", "yolo")
TASKS = ("liver", "tumor")
POSITIVE_SAMPLING = ("voxel", "component")
SCHEDULES = ("plateau", "poly")
"""``optim.schedule`` values (``deepliver.train.callbacks.make_scheduler``)."""
VALIDATION_METRICS = ("dice", "dice_global")
"""``validation.metric`` values (``deepliver.train.segmentation.validation_scores``)."""


@dataclass
class UnetSection:
    """The U-Net (MONAI ``UNet``). ``context_slices``: 2D only, neighbouring slices per side as channels."""
    channels: tuple = (16, 32, 64, 128)
    strides: tuple = (2, 2, 2)
    num_res_units: int = 1
    norm: str = "instance"
    dropout: float = 0.0
    context_slices: int = 1


@dataclass
class DataSection:
    """Preprocessing and sampling. ``cache_dir`` None -> ``RUN/cache``. ``split``: train/val/test percentages
    by case with ``split_seed`` (``deepliver.dataset.splits``; the same default as ``deepliver convert``, so
    test cases stay held out), unless the dataset folder has a ``splits.json``. ``positive_fraction``: share
    of samples centred on the task's label; ``positive_sampling`` (U-Nets): ``voxel`` centres them on any
    voxel of the label alike, ``component`` on a connected component of it first, so small lesions are drawn
    as often as large ones (``deepliver.train.data``). ``orientation``: ``canonical`` (arrays in patient-axis
    order, so left/right and front/back mean the same in every case whatever the scanner's direction matrix)
    or ``index`` (the grid's own order)."""
    target_spacing: tuple = (1.5, 1.5, None)
    patch_size: tuple = (160, 160)
    window: tuple = (-100.0, 400.0)
    normalization: str = "window"
    orientation: str = "canonical"
    crop_margin_mm: float = 10.0
    positive_fraction: float = 0.5
    positive_sampling: str = "voxel"
    split: tuple = (70.0, 20.0, 10.0)
    split_seed: int = 0
    cache_dir: Optional[str] = None
    workers: int = 2


@dataclass
class AugmentSection:
    """Random augmentation (MONAI): in-plane rotation up to ``rotate_deg``, zoom ``1 +- zoom``, contrast
    ``1 +- contrast`` around the mean, flips along ``flip_axes`` (names ``x``, ``y``, ``z``). No flips by
    default: arrays are in canonical patient order (``data.orientation``), where the liver is always on the
    same side, and mirrored samples only teach the network to doubt that (16 real-size phantoms, same
    seeds: validation liver Dice 0.69/0.83/0.88 vs 0.59/0.77/0.84 after 20/40/60 steps; equal at 80).
    ``lesion_paste`` (2D U-Net, tumor task): the probability that a sample gets a lesion of another training
    case pasted into its liver (``deepliver.train.data.SampleSource.paste``)."""
    enabled: bool = True
    prob: float = 0.5
    rotate_deg: float = 20.0
    zoom: float = 0.15
    contrast: float = 0.1
    flip_axes: tuple = ()
    flip_prob: float = 0.5
    lesion_paste: float = 0.0


@dataclass
class OptimSection:
    """Adam, a learning-rate ``schedule`` and early stopping (0 disables it). ``plateau``: ReduceLROnPlateau on
    the validation metric (``plateau_*``, ``min_lr``); ``poly``: ``lr * (1 - epoch / epochs) ** 0.9`` each epoch
    (nnU-Net's), which does not decay while a small structure's Dice is still 0 (see ``TASK_DEFAULTS``)."""
    epochs: int = 50
    batch_size: int = 16
    steps_per_epoch: int = 50
    lr: float = 3e-3
    weight_decay: float = 1e-5
    grad_clip: float = 12.0
    schedule: str = "plateau"
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    early_stop_patience: int = 15


@dataclass
class ValidationSection:
    """Validation on whole volumes with ``predict_volume``: ``batch_size`` slices (2D) or windows (3D), after
    every ``every``-th epoch and after the last (the best checkpoint is chosen among those; ReduceLROnPlateau's
    and early stopping's patience count validations).
    ``metric``: what the schedule, early stopping and the best checkpoint follow, ``dice`` (mean of the
    validation cases' Dice) or ``dice_global`` (Dice of all their voxels pooled; see ``TASK_DEFAULTS``)."""
    every: int = 1
    metric: str = "dice"
    batch_size: int = 16
    overlap: float = 0.25
    blend: str = "gaussian"


@dataclass
class DetectorSection:
    """Faster R-CNN and YOLO (used by their trainers). ``convert_dir``: a ``deepliver convert`` folder
    (None -> the DATASET argument is that folder). ``crop``: ``liver`` trains the tumor detector on slices
    cut to the liver's square + ``data.crop_margin_mm`` and infers the same way; ``none``: whole slices."""
    backbone: str = "resnet50_fpn_v2"
    pretrained: bool = False
    min_size: int = 512
    max_size: int = 512
    yolo_model: str = "yolov8n.yaml"
    image_size: int = 256
    convert_dir: Optional[str] = None
    score_threshold: float = 0.5  # boxes kept at inference (stored in the bundle's model.json)
    box_batch_size_per_image: int = 32  # Faster R-CNN proposals sampled per slice to train the box head
    test_proposals: int = 100  # Faster R-CNN proposals scored per slice at inference (torchvision: 1000)
    optimizer: str = "adamw"  # adamw, or sgd (momentum 0.9; YOLO: ultralytics' SGD)
    warmup_steps: int = 0  # Faster R-CNN: linear learning-rate warmup over the first steps of epoch 1
    yolo_warmup_epochs: float = 0.0  # ultralytics warmup (at least 100 iterations when > 0; 0: none)
    yolo_scale: float = 0.2  # ultralytics random zoom gain (its 0.5 shrinks 5-pixel lesions to 2)
    crop: str = "liver"  # tumor task: liver (slices cut to the liver's square) or none


@dataclass
class TrainConfig:
    """Everything a training run uses; written whole to ``RUN/config.json``."""
    model: str = "unet2d"
    task: str = "liver"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    deterministic: bool = True  # deterministic kernels (indexing, cuDNN); False: a few % faster on GPU
    unet: UnetSection = field(default_factory=UnetSection)
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    optim: OptimSection = field(default_factory=OptimSection)
    validation: ValidationSection = field(default_factory=ValidationSection)
    detector: DetectorSection = field(default_factory=DetectorSection)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))   # tuples -> lists

    @property
    def spatial_dims(self) -> int:
        return 3 if self.model == "unet3d" else 2


MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "unet2d": {},
    "unet3d": {"data.target_spacing": (2.0, 2.0, 2.0), "data.patch_size": (96, 96, 64), "optim.batch_size": 2,
               "validation.batch_size": 2},
    "fasterrcnn": {"optim.batch_size": 4, "optim.lr": 5e-4, "optim.steps_per_epoch": 0},
    "yolo": {"optim.batch_size": 8, "optim.lr": 0.002, "optim.steps_per_epoch": 0},
}
"""Per-model overrides of the dataclass defaults (``section.key`` -> value)."""

TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "liver": {},
    "tumor": {"optim.schedule": "poly", "optim.early_stop_patience": 0, "data.window": (-20.0, 200.0),
              "validation.metric": "dice_global"},
}
"""Per-task overrides of the U-Nets (``unet2d``, ``unet3d``), applied after ``MODEL_DEFAULTS``; the detectors
keep the dataclass defaults (their training was not measured with these, and Faster R-CNN's loss went to
NaN once in the quick demo on the narrow window's slices). Tumor: a soft-tissue window (tumors differ from the
liver by 10-50 HU, a few percent of the -100..400 window) and the poly schedule without early stopping: the
validation Dice of a tumor model stays 0 for its first tens of epochs, during which ReduceLROnPlateau halved
the learning rate every 6 epochs and early stopping ended the run (on the learn benchmark's phantoms: pooled
Dice 0 after 40 epochs with those, 0.15 after 30 epochs at a constant rate with this window). The best
checkpoint by pooled Dice (``dice_global``): the mean over cases rewards predicting no tumor at all."""

MODEL_TASK_DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("unet2d", "tumor"): {"augment.lesion_paste": 0.5},
}
"""Overrides for one model on one task, applied last. The 2D tumor U-Net pastes a lesion of another training case
into half its samples (``SampleSource.paste``): on ``benchmarks/learn.py``'s 384 phantoms after 600 epochs the
pooled Dice of 230 held-out lesions was 0.69 with it and 0.68 without (0.64 vs 0.63 on 192 phantoms after 160),
the faint lesions over 20 mm 0.32 instead of 0.20, bright ones under 10 mm 0.37 instead of 0.19."""

_TOP = ("model", "task", "seed", "device", "amp", "deterministic")


def _keys(config: TrainConfig) -> list[str]:
    keys = list(_TOP)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
    return keys


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    bare = {k.split(".")[-1]: k for k in known}
    close = difflib.get_close_matches(key, known, n=1) or [bare[m] for m in
                                                          difflib.get_close_matches(key.split(".")[-1], list(bare), n=1)]
    hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {key!r}{hint}", where)


def _coerce(key: str, value: Any, default: Any, where: Optional[str]) -> Any:
    if isinstance(default, tuple) or (isinstance(value, list)):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list, got {value!r}", where)
        return tuple(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false, got {value!r}", where)
        return value
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number, got {value!r}", where)
        return int(value) if isinstance(default, int) and float(value).is_integer() else value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key {key!r} must be a string, got {value!r}", where)
    return value


def apply_values(config: TrainConfig, values: dict[str, Any], where: Optional[str] = None) -> TrainConfig:
    """Set ``section.key`` (or top-level) values on ``config`` in place; unknown keys raise ``ConfigError``
    naming the key and the nearest known one."""
    known = _keys(config)
    for key, value in values.items():
        if key not in known:
            raise _unknown(key, known, where)
        section, _, name = key.rpartition(".")
        target = getattr(config, section) if section else config
        setattr(target, name, _coerce(key, value, getattr(target, name), where))
    _validate(config, where)
    return config


def _validate(config: TrainConfig, where: Optional[str]) -> None:
    if config.model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {config.model!r}", where)
    if config.task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {config.task!r}", where)
    from deepliver.dataset.splits import parse_ratios
    try:
        parse_ratios(config.data.split)
    except ConfigError as e:
        raise ConfigError(f"data.{e.message}", where) from e
    if config.optim.epochs < 1 or config.optim.batch_size < 1:
        raise ConfigError(f"optim.epochs and optim.batch_size must be >= 1, got {config.optim.epochs} and "
                          f"{config.optim.batch_size}", where)
    if not isinstance(config.validation.every, int) or config.validation.every < 1:
        raise ConfigError(f"validation.every must be a whole number of epochs >= 1, got {config.validation.every!r}",
                          where)
    if config.validation.metric not in VALIDATION_METRICS:
        raise ConfigError(f"validation.metric must be {' or '.join(VALIDATION_METRICS)}, got "
                          f"{config.validation.metric!r}", where)
    if config.optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule must be {' or '.join(SCHEDULES)}, got {config.optim.schedule!r}", where)
    if len(config.data.target_spacing) != 3:
        raise ConfigError(f"data.target_spacing needs 3 values (x, y, z), got {list(config.data.target_spacing)}",
                          where)
    margin = config.data.crop_margin_mm
    if not math.isfinite(margin) or margin < 0:
        raise ConfigError(f"data.crop_margin_mm must be a finite number >= 0 (mm), got {margin!r}", where)
    if config.data.orientation not in ("canonical", "index"):
        raise ConfigError(f"data.orientation must be 'canonical' or 'index', got {config.data.orientation!r}", where)
    if config.data.positive_sampling not in POSITIVE_SAMPLING:
        raise ConfigError(f"data.positive_sampling must be one of {', '.join(POSITIVE_SAMPLING)}, got "
                          f"{config.data.positive_sampling!r}", where)
    paste = config.augment.lesion_paste
    if isinstance(paste, bool) or not isinstance(paste, (int, float)) or not 0 <= paste <= 1:
        raise ConfigError(f"augment.lesion_paste must be a probability in [0, 1], got {paste!r}", where)
    if paste and (config.task != "tumor" or config.model != "unet2d"):
        raise ConfigError(f"augment.lesion_paste applies to the tumor task of unet2d, not the {config.task} task "
                          f"of {config.model}", where)
    if config.model.startswith("unet") and len(config.data.patch_size) != config.spatial_dims:
        raise ConfigError(f"data.patch_size needs {config.spatial_dims} values for {config.model}, got "
                          f"{list(config.data.patch_size)}", where)
    if config.model.startswith("unet"):
        step = 1
        for s in config.unet.strides:
            step *= int(s)
        if any(int(p) % step for p in config.data.patch_size):
            raise ConfigError(f"data.patch_size {list(config.data.patch_size)} must be multiples of {step} (the "
                              f"product of unet.strides {list(config.unet.strides)})", where)
        if config.unet.context_slices < 0:
            raise ConfigError(f"unet.context_slices must be >= 0, got {config.unet.context_slices}", where)


def default_config(model: str = "unet2d", task: str = "liver") -> TrainConfig:
    """The defaults for ``model`` and ``task``."""
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    config = TrainConfig(model=model, task=task)
    task_values = TASK_DEFAULTS.get(task, {}) if model in ("unet2d", "unet3d") else {}
    return apply_values(config, {**MODEL_DEFAULTS[model], **task_values, **MODEL_TASK_DEFAULTS.get((model, task), {})})


def _flatten(data: dict[str, Any], where: Optional[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError("a config must be a mapping of keys to values", where)
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = v
        else:
            flat[str(key)] = value
    return flat


def config_from_dict(data: dict[str, Any], model: Optional[str] = None, task: Optional[str] = None,
                     where: Optional[str] = None) -> TrainConfig:
    """Defaults for the model/task (``model``/``task`` arguments win over the mapping's), then ``data``."""
    flat = _flatten(data, where)
    model = model or flat.get("model") or "unet2d"
    task = task or flat.get("task") or "liver"
    if model not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got {model!r}", where)
    config = default_config(model, task)
    flat.update({"model": model, "task": task})
    return apply_values(config, flat, where)


def read_config(path: str | os.PathLike, model: Optional[str] = None, task: Optional[str] = None) -> TrainConfig:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config; see ``config_from_dict``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config: {e.strerror}", path) from e
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise ConfigError(f"cannot parse config: {str(e).splitlines()[0]}", path) from e
    return config_from_dict(data, model, task, where=str(path))


def write_config(config: TrainConfig, path: str | os.PathLike) -> None:
    """Write ``config`` whole (every default) as YAML (``.yaml``/``.yml``) or JSON (anything else)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml
        write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
    else:
        write_text_atomic(path, json.dumps(config.to_dict(), indent=2) + "\n")
