"""The predictor interface: how a network is run, whatever runtime holds it.

A ``Predictor`` is a callable taking a float32 numpy batch ``(N, C, *spatial)`` (spatial in numpy order:
2D ``y, x``, 3D ``z, y, x``) and returning the network's raw output as float32 numpy ``(N, K, *spatial)``:
logits (``predict_volume`` applies sigmoid for K = 1, softmax for K >= 2). Everything else in inference is
numpy/SimpleITK, so a predictor is the only part that needs torch or onnxruntime. This module imports
neither at module level.
"""

from __future__ import annotations

import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from deepliver.errors import ConfigError

__all__ = ["Predictor", "TorchPredictor", "OnnxPredictor", "resolve_device"]


@runtime_checkable
class Predictor(Protocol):
    """``predictor(batch)``: float32 ``(N, C, *spatial)`` in, float32 logits ``(N, K, *spatial)`` out."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when available else ``"cpu"``; ``ConfigError`` for ``cuda`` without CUDA."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
    return device


class TorchPredictor:
    """Runs a ``torch.nn.Module`` in eval mode without gradients on ``device``.

    ``amp``: autocast (float16 on CUDA, bfloat16 on CPU); outputs are returned as float32. The module is
    put in eval mode on every call (training code may hand over a live model); the caller restores
    train mode.
    """

    def __init__(self, module: Any, device: str = "cpu", amp: bool = False):
        self.module = module
        self.device = device
        self.amp = amp

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.module.eval()
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        device_type = "cuda" if str(self.device).startswith("cuda") else "cpu"
        with torch.inference_mode(), torch.autocast(device_type, enabled=self.amp,
                                                     dtype=torch.float16 if device_type == "cuda" else torch.bfloat16):
            y = self.module(x)
        return y.float().cpu().numpy()


class OnnxPredictor:
    """Runs an ONNX file with onnxruntime (CPU, or CUDA when ``device`` is cuda and the provider exists).

    The file's first input takes the batch; its first output is the logits.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ConfigError("onnxruntime is not installed: pip install onnxruntime") from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(os.fspath(path), options, providers=providers)
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)
