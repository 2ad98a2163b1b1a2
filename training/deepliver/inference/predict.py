"""Segment one volume with a segmentation bundle (2D or 3D U-Net): the code both validation and
``deepliver segment`` run, so the Dice logged in training is the Dice users get.

Steps of ``predict_volume``: (tumor stage) crop the image to the ROI mask's bounding box + margin in mm ->
resample to the bundle's target spacing (linear) -> clip and normalise intensities as the bundle says ->
(bundles with ``inference["orientation"] == "canonical"``) transpose/flip to the canonical ``(z, y, x)``
order, z inferior -> superior, y anterior -> posterior, x right -> left (``model_orientation``) -> batched slices with neighbour channels / 3D: sliding window with blending -> probabilities back in the
grid's index order and resampled
(linear) back onto the (cropped) input grid -> threshold 0.5 (or argmax for > 2 classes) -> pasted into a
``(z, y, x)`` uint8 array on the input image's grid. Only the predictor needs torch or onnxruntime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from deepliver.errors import ConfigError, GeometryError
from deepliver.dataset.slices import Orientation, canonical_orientation
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.resample import resample_to_geometry, spacing_geometry
from deepliver.inference.predictor import OnnxPredictor, Predictor, TorchPredictor, resolve_device
from deepliver.inference.runtime import check_onnx_input, onnx_file
from deepliver.inference.sliding import predict_slices, predict_windows
from deepliver.models.bundle import (ONNX_FILE, BundleError, Intensity, ModelConfig, load_state_dict,
                                     read_bundle_config)
from deepliver.progress import ProgressCallback

__all__ = ["LoadedModel", "load_model", "model_from_module", "predict_volume", "model_probabilities", "ModelOutput",
           "normalize_intensity", "pad_value", "roi_box", "crop_to_roi", "resample_for_model",
           "SEGMENTATION_ARCHITECTURES", "INFERENCE_DEFAULTS", "ORIENTATIONS", "model_orientation", "to_model_order",
           "from_model_order"]

SEGMENTATION_ARCHITECTURES = ("unet",)
INFERENCE_DEFAULTS = {"batch_size": 16, "overlap": 0.25, "blend": "gaussian", "divisor": 1, "orientation": "index"}
"""Defaults for ``ModelConfig.inference`` keys: slices (2D) or windows (3D) per predictor call, window
overlap and blending (3D), the multiple every spatial size is padded to, and the array order the network
sees (``ORIENTATIONS``; bundles written before the key existed ran in index order)."""
ORIENTATIONS = ("canonical", "index")
"""``canonical``: arrays are transposed/flipped to patient axes (``deepliver.dataset.slices``), so the liver is
on the same side of every slice whatever the scanner's direction matrix; ``index``: the grid's own order."""


@dataclass
class LoadedModel:
    """A bundle ready to run: its ``ModelConfig``, a ``Predictor``, and the bundle folder (None in training)."""

    config: ModelConfig
    predictor: Predictor
    path: Optional[Path] = None


def load_model(bundle_dir: str | os.PathLike, device: str = "cpu", runtime: str = "torch",
               threads: int = 0) -> LoadedModel:
    """Load a bundle: rebuild the network from ``model.json`` and its weights (no unpickling).

    ``runtime`` ``"torch"`` or ``"onnx"`` (``model.onnx`` in the bundle, run by onnxruntime; no torch
    needed). ``device`` ``auto``, ``cpu`` or ``cuda``. ``threads``: onnxruntime's intra-op threads (0: its
    default). Raises ``BundleError`` / ``ConfigError`` (one line).
    """
    path = Path(bundle_dir)
    config = read_bundle_config(path)
    if runtime == "onnx":
        return _load_onnx(path, config, device, threads)
    if runtime != "torch":
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    from deepliver.models.registry import build_inference_model

    device = resolve_device(device)
    module = build_inference_model(config)
    try:
        module.load_state_dict(load_state_dict(path), strict=True)
    except RuntimeError as e:
        raise BundleError(f"weights do not fit the network described in model.json ({str(e).splitlines()[0]})",
                          path) from e
    return LoadedModel(config, TorchPredictor(module.to(device).eval(), device), path)


def _load_onnx(path: Path, config: ModelConfig, device: str, threads: int) -> LoadedModel:
    """The onnxruntime ``LoadedModel`` of a bundle, its ``model.onnx`` checked against ``model.json``."""
    record = config.runtimes.get("onnx") or {}
    if record.get("supported") is False:
        raise BundleError(f"this {config.architecture} bundle has no ONNX export ({record.get('reason')}); "
                          "run it with --runtime torch (or auto)", path)
    onnx = onnx_file(path, config)
    if onnx is None:
        failed = f" (the export after training failed: {record['error']})" if record.get("error") else ""
        raise BundleError(f"{ONNX_FILE} is missing{failed}: export it with `deepliver bundle export-onnx "
                          f"{path}` (needs torch), or run with --runtime torch", path)
    try:
        predictor = OnnxPredictor(onnx, device=device, threads=threads)
    except ConfigError:
        raise
    except Exception as e:  # onnxruntime's own errors: a corrupt or foreign file
        raise BundleError(f"onnxruntime cannot load it ({type(e).__name__}: {str(e).splitlines()[0]}); re-export "
                          f"it: deepliver bundle export-onnx {path}", onnx) from e
    check_onnx_input(predictor.session.get_inputs()[0].shape, config, onnx)
    return LoadedModel(config, predictor, path)


def model_from_module(module, config: ModelConfig, device: str = "cpu", amp: bool = False) -> LoadedModel:
    """Wrap a live ``nn.Module`` (e.g. during training) as a ``LoadedModel``."""
    return LoadedModel(config, TorchPredictor(module, device, amp), None)


def normalize_intensity(hu: np.ndarray, intensity: Intensity) -> np.ndarray:
    """Clip HU to ``intensity.window`` then scale: ``window`` -> [0, 1], ``zscore`` -> ``(hu - mean) / std``."""
    lo, hi = (float(v) for v in intensity.window)
    x = np.clip(hu.astype(np.float32, copy=False), lo, hi)     # a new array: scaled in place below
    if intensity.normalization == "window":
        np.subtract(x, np.float32(lo), out=x)
        return np.divide(x, np.float32(hi - lo), out=x)
    if intensity.normalization == "zscore":
        np.subtract(x, np.float32(intensity.mean), out=x)
        return np.divide(x, np.float32(intensity.std or 1.0), out=x)
    raise ConfigError(f"intensity normalization must be 'window' or 'zscore', got {intensity.normalization!r}")


def pad_value(intensity: Intensity) -> float:
    """The normalised value of the window's lower bound (air), used to pad inputs."""
    return float(normalize_intensity(np.array([intensity.window[0]], np.float32), intensity)[0])


def roi_box(mask: np.ndarray, spacing_xyz, margin_mm: float) -> Optional[tuple[slice, slice, slice]]:
    """The ``(z, y, x)`` slices of ``mask``'s bounding box grown by ``margin_mm`` on every side (clipped to
    the array), or None when the mask is empty. ``spacing_xyz`` is the mask's spacing in mm, ``(x, y, z)``."""
    nonzero = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    if any(len(n) == 0 for n in nonzero):
        return None
    spacing_zyx = tuple(spacing_xyz)[::-1]
    box = []
    for n, size, sp in zip(nonzero, mask.shape, spacing_zyx):
        grow = int(np.ceil(margin_mm / sp - 1e-6))
        box.append(slice(max(0, int(n[0]) - grow), min(size, int(n[-1]) + 1 + grow)))
    return tuple(box)  # type: ignore[return-value]


def crop_to_roi(image: sitk.Image, roi_mask: np.ndarray, margin_mm: float):
    """``(cropped_image, box)``: ``image`` cut to ``roi_box`` of ``roi_mask`` (``(z, y, x)``, on ``image``'s grid),
    physical position kept; ``(None, None)`` when the mask is empty."""
    if tuple(roi_mask.shape) != Geometry.from_image(image).shape:
        raise GeometryError(f"ROI mask shape (z, y, x) {tuple(roi_mask.shape)} differs from the image's "
                            f"{Geometry.from_image(image).shape}")
    box = roi_box(roi_mask, image.GetSpacing(), margin_mm)
    if box is None:
        return None, None
    index = [box[2].start, box[1].start, box[0].start]
    size = [box[2].stop - box[2].start, box[1].stop - box[1].start, box[0].stop - box[0].start]
    return sitk.RegionOfInterest(image, size, index), box


def resample_for_model(image: sitk.Image, target_spacing, is_label: bool = False,
                       pixel_type: Optional[int] = None) -> sitk.Image:
    """``image`` on the grid with the bundle's ``target_spacing`` (``(x, y, z)`` mm, None keeps an axis) over
    the same field of view, in ``pixel_type`` (a SimpleITK pixel ID; None keeps the image's); the image
    itself when nothing changes."""
    source = Geometry.from_image(image)
    target = spacing_geometry(source, target_spacing)
    if target.size == source.size and np.allclose(target.spacing, source.spacing, rtol=0, atol=1e-6):
        return image if pixel_type in (None, image.GetPixelID()) else sitk.Cast(image, pixel_type)
    return resample_to_geometry(image, target, is_label=is_label, pixel_type=pixel_type)


def model_orientation(grid: Geometry, mode: str) -> Optional[Orientation]:
    """The reorientation that brings arrays on ``grid`` to the order a network trained with ``mode`` expects
    (``ORIENTATIONS``); None when nothing moves (index order, an already canonical grid, or a grid too oblique
    to assign patient axes, near 45 degrees, which stays in index order)."""
    if mode not in ORIENTATIONS:
        raise ConfigError(f"orientation must be one of {', '.join(ORIENTATIONS)}, got {mode!r}")
    if mode == "index":
        return None
    try:
        orientation = canonical_orientation(grid)
    except GeometryError:
        return None
    return None if orientation.is_identity else orientation


def to_model_order(array: np.ndarray, orientation: Optional[Orientation]) -> np.ndarray:
    """``(z, y, x)`` in the grid's index order -> the network's order (a contiguous copy when it moves)."""
    return array if orientation is None else np.ascontiguousarray(orientation.apply(array))


def from_model_order(array: np.ndarray, orientation: Optional[Orientation]) -> np.ndarray:
    """The inverse of ``to_model_order`` for ``(..., z, y, x)`` arrays (leading axes, e.g. channels, kept)."""
    if orientation is None:
        return array
    lead = array.ndim - 3
    index = (slice(None),) * lead + tuple(slice(None, None, -1) if f else slice(None) for f in orientation.flip)
    axes = tuple(range(lead)) + tuple(lead + int(a) for a in np.argsort(orientation.axes))
    return np.ascontiguousarray(np.transpose(array[index], axes))


def _probabilities(array: np.ndarray, model: LoadedModel, progress, stage: str) -> np.ndarray:
    config = model.config
    opts = {**INFERENCE_DEFAULTS, **config.inference}
    pad = pad_value(config.intensity)
    if config.spatial_dims == 2:
        return predict_slices(array, model.predictor, context=(config.in_channels - 1) // 2,
                              batch_size=int(opts["batch_size"]), divisor=int(opts["divisor"]), pad_value=pad,
                              progress=progress, stage=stage)
    return predict_windows(array, model.predictor, tuple(config.patch_size)[::-1], overlap=float(opts["overlap"]),
                           blend=str(opts["blend"]), batch_size=int(opts["batch_size"]),
                           divisor=int(opts["divisor"]), pad_value=pad, progress=progress, stage=stage)


def _back_to_grid(probs: np.ndarray, model_grid: Geometry, target: Geometry) -> tuple[tuple[slice, ...], np.ndarray]:
    """Probabilities ``(K, z, y, x)`` on ``model_grid`` -> ``(box, labels)``: uint8 labels on the part ``box``
    (``(z, y, x)`` slices) of ``target``, every voxel of ``target`` outside it being 0.

    One channel (binary models): only the part of ``target`` near the model-grid voxels at >= 0.5 is
    resampled (that part is ``box``). Exact: a linearly interpolated value (extrapolation = the nearest voxel's)
    is a convex combination of neighbouring voxels, so it reaches 0.5 only next to a voxel that does. A liver
    is about a tenth of a CT, so this is most of the resampling time saved."""
    whole = tuple(slice(0, n) for n in target.shape)
    if model_grid == target:
        labels = (probs[0] >= 0.5) if probs.shape[0] == 1 else np.argmax(probs, 0)
        return whole, labels.astype(np.uint8)
    if probs.shape[0] == 1:
        region = _target_region(probs[0] >= 0.5, model_grid, target)
        if region is None:
            return (slice(0, 0),) * 3, np.zeros((0, 0, 0), dtype=np.uint8)
        start, size = region
        sub = Geometry(size, target.spacing, tuple(target.index_to_physical(start)), target.direction)
        img = resample_to_geometry(model_grid.image_from_array(probs[0]), sub, is_label=False, default_value=0.0,
                                   extrapolate=True)
        box = tuple(slice(a, a + n) for a, n in zip(start[::-1], size[::-1]))
        return box, (sitk.GetArrayViewFromImage(img) >= 0.5).view(np.uint8)
    channels = [sitk.GetArrayFromImage(resample_to_geometry(model_grid.image_from_array(p), target, is_label=False,
                                                            default_value=0.0, extrapolate=True)) for p in probs]
    return whole, np.argmax(np.stack(channels), axis=0).astype(np.uint8)


def _target_region(mask: np.ndarray, source: Geometry, target: Geometry):
    """``(start, size)`` (x, y, z) of the ``target`` voxels within one ``source`` voxel of ``mask``'s bounding
    box (``mask`` (z, y, x) on ``source``): None when ``mask`` is empty; all of ``target`` when the box
    touches the border of ``source`` (beyond it, extrapolation copies the border voxels outwards)."""
    box = roi_box(mask, source.spacing, 0.0)
    if box is None:
        return None
    lo = np.array([b.start for b in box[::-1]])
    hi = np.array([b.stop - 1 for b in box[::-1]])
    if np.any(lo == 0) or np.any(hi == np.array(source.size) - 1):
        return (0, 0, 0), tuple(target.size)
    corners = np.array(np.meshgrid(*zip(lo - 1.0, hi + 1.0), indexing="ij")).reshape(3, -1).T
    corners = target.physical_to_index(source.index_to_physical(corners))
    start = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 1, 0)
    stop = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 2, np.array(target.size))
    if np.any(stop <= start):
        return None
    return tuple(int(v) for v in start), tuple(int(v) for v in stop - start)


@dataclass
class ModelOutput:
    """A segmentation network's probabilities ``(K, z, y, x)`` on ``model_grid`` (index order; one channel =
    the foreground of a binary model), for the ``box`` (slices of the input's ``(z, y, x)`` array) of an
    input grid of ``shape``; ``crop_grid`` is that box's geometry. ``labels()`` brings them back."""

    probs: np.ndarray
    model_grid: Geometry
    crop_grid: Geometry
    box: tuple
    shape: tuple

    def label_region(self) -> tuple[tuple[slice, ...], np.ndarray]:
        """``(box, labels)``: uint8 labels (1 = foreground of a binary model, else the argmax class) on the
        part ``box`` (``(z, y, x)`` slices) of the input grid; every voxel outside ``box`` is 0."""
        box, labels = _back_to_grid(self.probs, self.model_grid, self.crop_grid)
        return tuple(slice(c.start + b.start, c.start + b.stop) for c, b in zip(self.box, box)), labels

    def labels(self) -> np.ndarray:
        """uint8 ``(z, y, x)`` on the whole input grid (``label_region`` pasted into zeros)."""
        out = np.zeros(self.shape, dtype=np.uint8)
        box, labels = self.label_region()
        out[box] = labels
        return out


def model_probabilities(image: sitk.Image, model: LoadedModel, *, roi_mask: Optional[np.ndarray] = None,
                        progress: Optional[ProgressCallback] = None, stage: str = "liver") -> Optional[ModelOutput]:
    """The steps of ``predict_volume`` up to the probabilities on the model's grid (segmentation bundles);
    None when ``roi_mask`` is given and empty."""
    config = model.config
    if config.architecture not in SEGMENTATION_ARCHITECTURES:
        raise ConfigError(f"predict_volume runs segmentation networks ({', '.join(SEGMENTATION_ARCHITECTURES)});"
                          f" this bundle is a {config.architecture!r} model", model.path)
    geometry = Geometry.from_image(image)
    box: Optional[tuple] = tuple(slice(0, n) for n in geometry.shape)
    if roi_mask is not None:
        image, box = crop_to_roi(image, np.asarray(roi_mask), config.crop_margin_mm)
        if image is None:
            return None
    crop_geometry = Geometry.from_image(image)
    resampled = resample_for_model(image, config.target_spacing, pixel_type=sitk.sitkFloat32)
    model_grid = Geometry.from_image(resampled)
    orientation = model_orientation(model_grid, str({**INFERENCE_DEFAULTS, **config.inference}["orientation"]))
    array = to_model_order(normalize_intensity(sitk.GetArrayViewFromImage(resampled), config.intensity), orientation)
    probs = from_model_order(_probabilities(array, model, progress, stage), orientation)
    return ModelOutput(probs, model_grid, crop_geometry, box, geometry.shape)


def predict_volume(image: sitk.Image, model: LoadedModel, *, roi_mask: Optional[np.ndarray] = None,
                   progress: Optional[ProgressCallback] = None, stage: str = "liver") -> np.ndarray:
    """The model's label on ``image``'s grid: uint8 ``(z, y, x)``, 1 = foreground (binary models) or the
    argmax class index (models with more than 2 outputs).

    ``image``: a 3D CT in HU (any spacing and direction). ``roi_mask``: ``(z, y, x)`` on ``image``'s grid;
    when given (the tumor stage), the model runs on its bounding box + ``config.crop_margin_mm`` and
    everything outside is 0 (an empty ROI gives all zeros). ``progress(stage, done, total)`` per batch.
    """
    if model.config.architecture in ("fasterrcnn", "yolo"):  # detectors: boxes rasterized in the ROI (H8)
        from deepliver.inference.detect import detect_volume
        return detect_volume(image, model, roi_mask=roi_mask, progress=progress, stage=stage)
    output = model_probabilities(image, model, roi_mask=roi_mask, progress=progress, stage=stage)
    if output is None:
        return np.zeros(Geometry.from_image(image).shape, dtype=np.uint8)
    return output.labels()
