"""Which runtime runs the bundles (torch or onnxruntime), and checks of a bundle's ``model.onnx``.

``choose_runtime("auto", device, configs)``: torch when a CUDA GPU is asked for (``device`` auto or cuda)
and torch sees one; else onnxruntime when it is installed and every bundle carries ``model.onnx``; else
torch on the CPU. Imports neither torch nor onnxruntime at module level (torch is imported only to look
for a GPU when the device is not ``cpu`` and an NVIDIA driver is present).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from deepliver.errors import ConfigError
from deepliver.models.bundle import ONNX_FILE, BundleError, ModelConfig

__all__ = ["RUNTIMES", "RuntimeChoice", "choose_runtime", "onnx_file", "check_onnx_input", "ORT_INSTALL"]

RUNTIMES = ("auto", "torch", "onnx")
ORT_INSTALL = "pip install onnxruntime"


@dataclass(frozen=True)
class RuntimeChoice:
    """``runtime`` ``torch`` or ``onnx``, the ``device`` (``cpu`` or ``cuda``) and why (one phrase)."""

    runtime: str
    device: str
    reason: str

    def describe(self) -> str:
        return f"{self.runtime} on {self.device} ({self.reason})"


def _importable(name: str) -> Optional[Any]:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _nvidia_driver() -> bool:
    """False when this machine surely has no NVIDIA driver (then importing torch, seconds, is skipped)."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return os.path.exists("/proc/driver/nvidia/version")
    return shutil.which("nvidia-smi") is not None


def _torch_cuda() -> bool:
    if not _nvidia_driver():
        return False
    torch = _importable("torch")
    return bool(torch is not None and torch.cuda.is_available())


def onnx_file(folder: str | os.PathLike, config: ModelConfig) -> Optional[Path]:
    """The bundle's ONNX file when it exists, else None."""
    record = config.runtimes.get("onnx") or {}
    name = record.get("file", ONNX_FILE)        # None: no export (a detector, or a failed one)
    if not name:
        return None
    path = Path(folder) / name
    return path if path.is_file() else None


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")


def choose_runtime(requested: str, device: str,
                   bundles: Sequence[tuple[str | os.PathLike, ModelConfig]]) -> RuntimeChoice:
    """Resolve ``requested`` (auto, torch, onnx) and ``device`` (auto, cpu, cuda) for ``bundles`` (folder,
    config). Raises ``ConfigError`` for an unknown name, cuda asked for without a GPU, or no usable runtime."""
    if requested not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {requested!r}")
    _check_device(device)
    if requested == "onnx":
        return RuntimeChoice("onnx", "cpu" if device == "auto" else device, "asked for")
    if requested == "torch":
        if _importable("torch") is None:
            raise ConfigError("--runtime torch needs torch, which is not installed: pip install "
                              "'slicer-deepliver[train]' (or use --runtime onnx with onnxruntime)")
        return RuntimeChoice("torch", _torch_device(device), "asked for")
    if device != "cpu" and _torch_cuda():
        return RuntimeChoice("torch", "cuda", "torch sees a CUDA GPU")
    if device == "cuda":
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    missing = [str(folder) for folder, config in bundles if onnx_file(folder, config) is None]
    ort = _importable("onnxruntime")
    if ort is not None and not missing:
        return RuntimeChoice("onnx", "cpu", "onnxruntime is installed and every bundle has model.onnx")
    why = ("onnxruntime is not installed" if ort is None
           else f"no {ONNX_FILE} in {', '.join(missing)}")
    if _importable("torch") is None:
        raise ConfigError(f"no runtime can run these bundles: {why}, and torch is not installed "
                          f"({ORT_INSTALL}; or pip install 'slicer-deepliver[train]' for torch)")
    return RuntimeChoice("torch", "cpu", why)


def _torch_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    has_cuda = _torch_cuda()
    if device == "cuda" and not has_cuda:
        raise ConfigError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    return "cuda" if has_cuda else "cpu"


def _expected_shape(config: ModelConfig) -> list[Any]:
    spatial = ["y", "x"] if config.spatial_dims == 2 else ["z", "y", "x"]
    return ["batch", int(config.in_channels), *spatial]


def check_onnx_input(shape: Sequence[Any], config: ModelConfig, path: str | os.PathLike) -> None:
    """Raise ``BundleError`` when the ONNX file's input ``shape`` (as onnxruntime reports it: ints for fixed
    axes, names or None for dynamic ones) cannot take what ``model.json`` describes: ``2 + spatial_dims``
    axes, ``in_channels`` channels, and, for a 3D bundle with fixed spatial axes, the patch size ``(z, y, x)``;
    or when it differs from the ``input_shape`` recorded at export."""
    found = list(shape)
    expected = _expected_shape(config)
    fix = f"re-export it: deepliver bundle export-onnx {Path(path).parent}"
    problem = None
    if len(found) != len(expected):
        problem = f"{len(found) - 2}D input (axes {found}) but model.json says spatial_dims {config.spatial_dims}"
    elif isinstance(found[1], int) and found[1] != config.in_channels:
        problem = f"{found[1]} input channel(s) but model.json says in_channels {config.in_channels}"
    elif config.spatial_dims == 3:
        divisor = int((config.inference or {}).get("divisor", 1)) or 1
        patch = [-(-int(p) // divisor) * divisor for p in tuple(config.patch_size)[::-1]]
        fixed = [(a, p) for a, p in zip(found[2:], patch) if isinstance(a, int) and a != p]
        if fixed:
            problem = f"input of spatial size {found[2:]} but model.json's patch (z, y, x) is {patch}"
    recorded = (config.runtimes.get("onnx") or {}).get("input_shape")
    if problem is None and recorded is not None:
        normal = [a if isinstance(a, int) else "dynamic" for a in found]
        wanted = [a if isinstance(a, int) else "dynamic" for a in recorded]
        if normal != wanted:
            problem = f"input shape {found} but model.json records {list(recorded)} from the export"
    if problem:
        raise BundleError(f"{Path(path).name} does not match model.json: {problem}; {fix}", path)
