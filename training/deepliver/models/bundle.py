"""Model bundles: a folder with ``model.json`` (a ``ModelConfig``) and ``weights.safetensors``.

A bundle is everything inference needs: the architecture and its arguments (the network is rebuilt from
them; loading never unpickles code), the task (``liver`` or ``tumor``), the output label names, the target
spacing, patch size, intensity window and normalisation, the training data fingerprint, validation metrics
and the deepliver version that wrote it. This module imports no torch at module level.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from deepliver import __version__
from deepliver.atomic import atomic_path, write_json_atomic
from deepliver.errors import ConfigError, InputError

__all__ = ["BUNDLE_FORMAT", "ModelConfig", "Intensity", "BundleError", "MODEL_JSON", "WEIGHTS_FILE",
           "ONNX_FILE", "save_bundle", "read_bundle_config", "load_state_dict", "find_bundles",
           "check_task"]

BUNDLE_FORMAT = 1
"""Version of the bundle layout this deepliver writes and reads."""
MODEL_JSON = "model.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
TASKS = ("liver", "tumor")


class BundleError(InputError):
    """A model bundle is missing, malformed, of the wrong task, or from a newer deepliver."""


@dataclass
class Intensity:
    """How CT values become network input: clip HU to ``window`` then scale.

    ``normalization`` is ``"window"`` (clipped HU mapped linearly to [0, 1]) or ``"zscore"`` (after clipping,
    ``(hu - mean) / std`` with ``mean``/``std`` from the training data).
    """

    window: tuple[float, float] = (-100.0, 400.0)
    normalization: str = "window"
    mean: float = 0.0
    std: float = 1.0


@dataclass
class ModelConfig:
    """What ``model.json`` holds. Spacing is ``(x, y, z)`` mm (None keeps the input's spacing on that axis);
    ``patch_size`` is ``(x, y)`` for 2D networks and ``(x, y, z)`` for 3D ones."""

    architecture: str                      # registry name: "unet", "fasterrcnn", "yolo"
    task: str                              # "liver" or "tumor"
    spatial_dims: int                      # 2 or 3
    arch_args: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)   # output channel/class -> label value meaning
    in_channels: int = 1                   # 2D: number of neighbouring slices stacked as channels
    target_spacing: tuple[Optional[float], ...] = (None, None, None)
    patch_size: tuple[int, ...] = (256, 256)
    intensity: Intensity = field(default_factory=Intensity)
    crop_margin_mm: float = 10.0           # tumor task: margin around the liver's bounding box
    fingerprint: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # epochs, seed, config summary
    runtimes: dict[str, Any] = field(default_factory=dict)  # e.g. {"onnx": {"file": "model.onnx", "opset": 17}}
    inference: dict[str, Any] = field(default_factory=dict)  # batch_size, overlap, blend, divisor (predict.py)
    deepliver_version: str = __version__
    bundle_format: int = BUNDLE_FORMAT
    created: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.intensity, dict):
            self.intensity = Intensity(**{k: (tuple(v) if k == "window" else v) for k, v in self.intensity.items()})
        self.target_spacing = tuple(self.target_spacing)
        self.patch_size = tuple(int(v) for v in self.patch_size)
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if (isinstance(self.crop_margin_mm, bool) or not isinstance(self.crop_margin_mm, (int, float))
                or not math.isfinite(self.crop_margin_mm) or self.crop_margin_mm < 0):
            raise ConfigError(f"crop_margin_mm must be a finite number >= 0 (mm), got {self.crop_margin_mm!r}")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["intensity"]["window"] = list(self.intensity.window)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str | os.PathLike | None = None) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BundleError(f"unknown keys in model.json: {', '.join(unknown)} (written by a newer deepliver?)", path)
        try:
            return cls(**data)
        except TypeError as e:
            raise BundleError(f"model.json is incomplete: {e}", path) from e
        except ConfigError as e:
            raise BundleError(e.message, path) from e


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for p in version.split(".")[:3]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def read_bundle_config(folder: str | os.PathLike) -> ModelConfig:
    """Read and validate ``folder/model.json``. Raises ``BundleError`` naming the file on any problem,
    including a bundle written by a newer deepliver (bundle format or version)."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not folder.is_dir():
        raise BundleError("no such model bundle folder", folder)
    if not path.is_file():
        raise BundleError(f"not a model bundle: {MODEL_JSON} is missing", folder)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"cannot parse: {e}", path) from e
    if not isinstance(data, dict):
        raise BundleError("expected a JSON object", path)
    fmt = data.get("bundle_format", 0)
    version = str(data.get("deepliver_version", "0"))
    if not isinstance(fmt, int) or fmt > BUNDLE_FORMAT or _version_tuple(version) > _version_tuple(__version__):
        raise BundleError(f"written by deepliver {version} (bundle format {fmt}); this is deepliver "
                          f"{__version__} (format {BUNDLE_FORMAT}): upgrade deepliver to use it", path)
    return ModelConfig.from_dict(data, path)


def check_task(config: ModelConfig, expected: str, folder: str | os.PathLike) -> None:
    """Raise ``BundleError`` when a bundle of task ``config.task`` is used where ``expected`` is needed."""
    if config.task != expected:
        raise BundleError(f"this is a {config.task} model, but a {expected} model is needed here "
                          f"(pass it as --{config.task}-model)", folder)


def save_bundle(folder: str | os.PathLike, config: ModelConfig, state_dict: Any,
                metadata: Optional[dict[str, str]] = None) -> Path:
    """Write ``config`` and a torch ``state_dict`` as a bundle (atomic per file); returns the folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not config.created:
        config.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
    write_json_atomic(folder / MODEL_JSON, config.to_dict())
    return folder


def load_state_dict(folder: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """The torch state dict in ``folder/weights.safetensors`` (no unpickling)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if not path.is_file():
        raise BundleError(f"{WEIGHTS_FILE} is missing", folder)
    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"cannot read weights ({e}); the file is corrupted", path) from e


def find_bundles(folder: str | os.PathLike) -> list[tuple[Path, ModelConfig]]:
    """Every readable bundle directly in ``folder`` or one level below, sorted by path.

    Unreadable bundles are skipped (``read_bundle_config`` tells why for a single one).
    """
    folder = Path(folder)
    found = []
    candidates = [folder] + (sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else [])
    for cand in candidates:
        if (cand / MODEL_JSON).is_file():
            try:
                found.append((cand, read_bundle_config(cand)))
            except BundleError:
                continue
    return found
