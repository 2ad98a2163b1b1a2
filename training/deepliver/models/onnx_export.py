"""Export a U-Net bundle's network to ``model.onnx`` (run by onnxruntime, no torch needed at inference).

The file takes ``input`` float32 ``(batch, C, *spatial)`` and gives ``logits`` ``(batch, K, *spatial)``,
spatial axes in numpy order (2D ``y, x``; 3D ``z, y, x``). Batch and spatial sizes are dynamic (MONAI's
UNet exports with them: 2D inference feeds whole slices of any size, padded to the bundle's divisor; 3D
feeds windows of the patch size). The export is accepted only when onnxruntime's output on a sample input
equals torch's within ``atol`` (max abs difference of the logits); ``model.json`` then records it under
``runtimes.onnx``: ``{"file", "opset", "input_shape", "dynamic_axes", "max_abs_diff", "onnxruntime"}``.

Detector bundles (Faster R-CNN, YOLO) are not exported here: their writers call ``onnx_unsupported`` so
``model.json`` says why, and ``--runtime auto`` falls back to torch for them.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from deepliver.atomic import atomic_path, write_json_atomic
from deepliver.errors import ConfigError, DeepLiverError
from deepliver.models.bundle import (MODEL_JSON, ONNX_FILE, BundleError, ModelConfig, load_state_dict,
                                     read_bundle_config)

__all__ = ["ONNX_OPSET", "ONNX_ATOL", "EXPORTABLE", "onnx_axes", "sample_input", "export_module",
           "export_onnx", "try_export_onnx", "onnx_unsupported"]

ONNX_OPSET = 17
"""The opset written (onnxruntime >= 1.17 runs it)."""
ONNX_ATOL = 1e-4
"""Largest accepted ``|onnxruntime - torch|`` of the logits on the sample input."""
EXPORTABLE = ("unet",)
INPUT_NAME, OUTPUT_NAME = "input", "logits"
EXPORT_PACKAGES = ("torch", "monai", "onnx", "onnxruntime")


def _require_export_packages() -> None:
    """``ConfigError`` naming the install command when a package the export needs is missing."""
    missing = []
    for name in EXPORT_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ConfigError(f"exporting to ONNX needs {', '.join(missing)}, not installed here: "
                          "pip install 'slicer-deepliver[train]'")


def onnx_axes(spatial_dims: int) -> list[str]:
    """Names of the input's axes: ``["batch", "channel", "y", "x"]`` (2D) or with ``"z"`` first (3D)."""
    return ["batch", "channel"] + (["y", "x"] if spatial_dims == 2 else ["z", "y", "x"])


def _input_shape(config: ModelConfig) -> list[Any]:
    """The file's input shape as onnxruntime reports it: names for dynamic axes, ints for fixed ones."""
    return ["batch", int(config.in_channels)] + onnx_axes(config.spatial_dims)[2:]


def sample_input(config: ModelConfig, batch: int = 2, seed: int = 0) -> np.ndarray:
    """A float32 ``(batch, C, *patch)`` array (patch in numpy order, padded to the bundle's divisor) of
    values in the normalised intensity range, for checking an export."""
    divisor = int((config.inference or {}).get("divisor", 1)) or 1
    patch = [int(np.ceil(p / divisor) * divisor) for p in tuple(config.patch_size)[::-1]]
    if config.spatial_dims == 2:
        patch = [min(p, 128) for p in patch]   # whole-slice 2D inference: any size works; keep the check quick
        patch = [int(np.ceil(p / divisor) * divisor) for p in patch]
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, size=(batch, int(config.in_channels), *patch)).astype(np.float32)


def export_module(module, config: ModelConfig, path: str | os.PathLike, opset: int = ONNX_OPSET) -> dict[str, Any]:
    """Write ``module`` (a torch ``nn.Module`` for ``config``) to ``path`` as ONNX; returns the record's
    ``file``/``opset``/``input_shape``/``dynamic_axes`` (no check: ``export_onnx`` checks)."""
    import torch

    axes = onnx_axes(config.spatial_dims)
    dynamic = {i: name for i, name in enumerate(axes) if name != "channel"}
    example = torch.from_numpy(sample_input(config, batch=1))
    module = module.cpu().eval()
    with warnings.catch_warnings():   # the TorchScript exporter's deprecation notice; instance norm
        warnings.simplefilter("ignore")  # always uses input statistics in MONAI's UNet, as at inference
        with torch.no_grad():
            torch.onnx.export(module, (example,), os.fspath(path), dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic})
    return {"file": Path(path).name, "opset": int(opset), "input_shape": _input_shape(config),
            "dynamic_axes": [name for name in axes if name != "channel"]}


def _max_abs_diff(module, onnx_path: Path, sample: np.ndarray) -> float:
    import torch

    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ConfigError("checking the ONNX export needs onnxruntime, which is not installed: "
                          "pip install onnxruntime") from e
    session = ort.InferenceSession(os.fspath(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: sample})[0]
    with torch.no_grad():
        expected = module(torch.from_numpy(sample)).numpy()
    if got.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))


def export_onnx(bundle_dir: str | os.PathLike, *, opset: int = ONNX_OPSET, atol: float = ONNX_ATOL) -> dict[str, Any]:
    """Export the U-Net bundle in ``bundle_dir`` to ``model.onnx`` and record it in ``model.json``.

    Rebuilds the network from ``model.json`` and ``weights.safetensors``, exports it with dynamic batch and
    spatial axes, runs torch and onnxruntime on ``sample_input`` and refuses (``BundleError``; nothing is
    written) when their logits differ by more than ``atol``. Returns the ``runtimes.onnx`` record.
    """
    from deepliver.models.registry import build_model

    folder = Path(bundle_dir)
    config = read_bundle_config(folder)
    _require_export_packages()
    if config.architecture not in EXPORTABLE:
        reason = (config.runtimes.get("onnx") or {}).get("reason", "no ONNX exporter for this architecture")
        raise BundleError(f"cannot export a {config.architecture!r} bundle to ONNX ({reason}); only "
                          f"{', '.join(EXPORTABLE)} bundles are exported: run it with --runtime torch", folder)
    module = build_model(config)
    try:
        module.load_state_dict(load_state_dict(folder), strict=True)
    except RuntimeError as e:
        raise BundleError(f"weights do not fit the network described in {MODEL_JSON} "
                          f"({str(e).splitlines()[0]})", folder) from e
    module.eval()
    target = folder / ONNX_FILE
    with atomic_path(target) as tmp:
        record = export_module(module, config, tmp, opset)
        diff = _max_abs_diff(module, Path(tmp), sample_input(config))
        if not diff <= atol:
            raise BundleError(f"ONNX export refused: onnxruntime and torch outputs differ by {diff:.3g} on a "
                              f"sample input (accepted: <= {atol:g}); {ONNX_FILE} not written", folder)
    import onnxruntime

    record.update({"file": ONNX_FILE, "max_abs_diff": diff, "onnxruntime": onnxruntime.__version__})
    config.runtimes = {**config.runtimes, "onnx": record}
    write_json_atomic(folder / MODEL_JSON, config.to_dict())
    return record


def try_export_onnx(bundle_dir: str | os.PathLike, **kwargs: Any) -> dict[str, Any]:
    """``export_onnx`` for the end of training: a failure never loses the trained bundle. It is recorded in
    ``model.json`` (``runtimes.onnx = {"file": None, "error": ...}``) and issued as a ``UserWarning``; the
    bundle still runs with ``--runtime torch`` and can be exported later (``deepliver bundle export-onnx``)."""
    try:
        return export_onnx(bundle_dir, **kwargs)
    except Exception as e:  # noqa: BLE001 - any exporter failure must leave the bundle usable
        message = str(e) if isinstance(e, DeepLiverError) else f"{type(e).__name__}: {e}"
        warnings.warn(f"{bundle_dir}: ONNX export failed, the bundle runs with --runtime torch only "
                      f"(retry: deepliver bundle export-onnx {bundle_dir}): {message}", stacklevel=2)
        folder = Path(bundle_dir)
        try:
            config = read_bundle_config(folder)
        except DeepLiverError:
            return {"file": None, "error": message}
        record = {"file": None, "error": message}
        config.runtimes = {**config.runtimes, "onnx": record}
        write_json_atomic(folder / MODEL_JSON, config.to_dict())
        return record


def onnx_unsupported(config: ModelConfig, reason: str) -> ModelConfig:
    """Record in ``config`` (before ``save_bundle``) that this bundle has no ONNX export and why, e.g.
    ``onnx_unsupported(config, "torchvision Faster R-CNN post-processing is not exported")``. ``--runtime
    onnx`` then refuses it with ``reason``, and ``--runtime auto`` runs it with torch."""
    config.runtimes = {**config.runtimes, "onnx": {"file": None, "supported": False, "reason": str(reason)}}
    return config
