"""A detector bundle (Faster R-CNN or YOLO) as the cascade's tumor stage: boxes rasterized inside the liver.

Steps of ``detect_volume``: the CT is brought to the canonical orientation ``deepliver convert`` writes
(``deepliver.dataset.slices``: z inferior -> superior, y anterior -> posterior, x patient right -> left;
axes only permuted and flipped) -> each axial slice in the ROI's z-range is windowed to uint8 and resized to
the bundle's square slice size exactly as ``convert`` did -> the detector gives boxes -> boxes scoring at
least ``inference["score_threshold"]`` (stored in the bundle) are rasterized on the canonical slice grid ->
(``rasterize = "box_in_roi"``, the default) intersected with the ROI mask (the liver) -> mapped back to the
image's own axis order and directions. The result is a uint8 ``(z, y, x)`` mask on the image grid.

Liver crop (``inference["crop"] = "liver"``, what tumor detectors are trained with by default): before
windowing, each canonical slice is cut to one square around the ROI's in-plane bounding box over all its
slices, grown by the bundle's ``crop_margin_mm`` (``liver_square``; the square is centred on the box and
padded with the window's low HU where it leaves the image), and that square is resized to the network's
size. Phantom lesions are 2-23 pixels (median 11) on a whole 256 slice; in the liver's square 3-39
(median 17); on a 512 CT resized to 256 the gain is about 1.8x. Training (``deepliver.train.detection_crop``) cuts its slices with the same functions.

Rasterization: a box is ``[x1, y1, x2, y2]`` in pixel-edge coordinates of the network's slice (pixel ``i``
covers ``[i, i + 1)``); scaled back to the canonical slice by ``width / size`` and ``height / size``, it
holds the pixels whose *centres* lie inside it: columns ``ceil(x1' - 0.5)`` to ``floor(x2' - 0.5)``. A
ground-truth box of inclusive pixels ``x_min..x_max`` (convert's boxes, ``[x_min, x_max + 1)``) therefore
rasterizes to exactly those pixels. No HU refinement is done inside the box: a box covers up to 4/pi times
the area of a round lesion, which caps the Dice of a perfect detector near 0.88 for round lesions; the
tumor post-processing (``deepliver.postprocess``) runs afterwards as for segmentation models.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import SimpleITK as sitk

from deepliver.dataset.slices import Orientation, Window, canonical_orientation, resize_slice, window_slice
from deepliver.inference.predict import roi_box
from deepliver.errors import ConfigError, GeometryError
from deepliver.imaging.geometry import Geometry
from deepliver.progress import ProgressCallback

__all__ = ["DETECTION_ARCHITECTURES", "DETECT_DEFAULTS", "RASTERIZE_MODES", "CROP_MODES", "box_pixel_range",
           "rasterize_boxes", "to_image_order", "canonical_spacing", "liver_square", "crop_square",
           "square_to_canonical", "boxes_to_mask", "detect_slices",
           "detect_volume_thresholds", "detect_canonical", "detect_volume"]

DETECTION_ARCHITECTURES = ("fasterrcnn", "yolo")
RASTERIZE_MODES = ("box_in_roi", "box")
CROP_MODES = ("none", "liver")
DETECT_DEFAULTS = {"score_threshold": 0.5, "iou_threshold": 0.5, "max_detections": 100, "batch_size": 8,
                   "rasterize": "box_in_roi", "crop": "none"}
"""Defaults for a detector bundle's ``ModelConfig.inference`` keys (a bundle without ``crop`` sees whole
slices, as bundles did before the liver crop)."""


def box_pixel_range(lo: float, hi: float, scale: float, size: int) -> tuple[int, int]:
    """``(start, stop)`` of the pixels (on a grid of ``size``) whose centres lie in ``[lo, hi] / scale``;
    ``lo``/``hi`` are pixel-edge coordinates on a grid ``scale`` times finer. Empty when ``start >= stop``."""
    start = int(np.ceil(lo / scale - 0.5 - 1e-6))
    stop = int(np.floor(hi / scale - 0.5 + 1e-6)) + 1
    return max(start, 0), min(stop, size)


def rasterize_boxes(boxes: dict[int, np.ndarray], shape: tuple[int, int, int],
                    scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """A uint8 ``(z, y, x)`` mask of ``shape`` with 1 inside every box of ``boxes`` (``{z: (n, 4) [x1, y1, x2,
    y2]}``, pixel edges on slices ``scale = (sx, sy)`` times the grid's width and height; see the module
    docstring for the pixel-centre rule)."""
    depth, height, width = shape
    mask = np.zeros(shape, dtype=np.uint8)
    for z, slice_boxes in boxes.items():
        if not 0 <= z < depth:
            continue
        for x1, y1, x2, y2 in np.asarray(slice_boxes, dtype=np.float64).reshape(-1, 4):
            xs, xe = box_pixel_range(x1, x2, scale[0], width)
            ys, ye = box_pixel_range(y1, y2, scale[1], height)
            if xs < xe and ys < ye:
                mask[z, ys:ye, xs:xe] = 1
    return mask


def to_image_order(canonical: np.ndarray, orientation: Orientation) -> np.ndarray:
    """The inverse of ``orientation.apply``: a canonical ``(z, y, x)`` array back in the image's own order."""
    index = tuple(slice(None, None, -1) if f else slice(None) for f in orientation.flip)
    return np.ascontiguousarray(np.transpose(canonical[index], np.argsort(orientation.axes)))


def canonical_spacing(geometry: Geometry, orientation: Orientation) -> tuple[float, float, float]:
    """The spacing (mm) of the canonical array's axes, in ``(x, y, z)`` order like ``Geometry.spacing``."""
    zyx = [geometry.spacing[2 - axis] for axis in orientation.axes]
    return zyx[2], zyx[1], zyx[0]


def liver_square(roi: np.ndarray, spacing_xyz, margin_mm: float) -> Optional[tuple[int, int, int]]:
    """``(y0, x0, side)``: the square (pixels of the ``(z, y, x)`` mask's slices) centred on ``roi``'s in-plane
    bounding box over all slices grown by ``margin_mm`` (clipped to the slice first); it may reach past the
    slice. None for an empty ``roi``. ``spacing_xyz``: the mask's spacing in mm, ``(x, y, z)``."""
    box = roi_box(np.asarray(roi, dtype=bool), spacing_xyz, margin_mm)
    if box is None:
        return None
    height, width = box[1].stop - box[1].start, box[2].stop - box[2].start
    side = max(height, width)
    return box[1].start - (side - height) // 2, box[2].start - (side - width) // 2, side


def crop_square(pixels: np.ndarray, square: tuple[int, int, int], fill: float) -> np.ndarray:
    """The ``side x side`` part of a ``(y, x)`` slice at ``square = (y0, x0, side)``; ``fill`` where the square
    leaves the slice (same dtype as ``pixels``)."""
    y0, x0, side = square
    out = np.full((side, side), fill, dtype=pixels.dtype)
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + side, pixels.shape[0]), min(x0 + side, pixels.shape[1])
    if ys < ye and xs < xe:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = pixels[ys:ye, xs:xe]
    return out


def square_to_canonical(boxes: np.ndarray, square: tuple[int, int, int], size: int) -> np.ndarray:
    """Boxes ``(n, 4) [x1, y1, x2, y2]`` in pixel edges of the network's ``size`` slice of ``square`` as pixel
    edges of the canonical slice."""
    y0, x0, side = square
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * (side / size)
    return out + np.array([x0, y0, x0, y0], dtype=np.float64)


def _options(config) -> dict:
    opts = {**DETECT_DEFAULTS, **(config.inference or {})}
    if opts["rasterize"] not in RASTERIZE_MODES:
        raise ConfigError(f"inference rasterize must be one of {', '.join(RASTERIZE_MODES)}, got {opts['rasterize']!r}")
    if opts["crop"] not in CROP_MODES:
        raise ConfigError(f"inference crop must be one of {', '.join(CROP_MODES)}, got {opts['crop']!r}")
    return opts


def detect_slices(model, pixels: list[np.ndarray],
                  score_threshold: Optional[float] = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Run a loaded detector (``LoadedModel`` of a fasterrcnn / yolo bundle) on windowed uint8 ``(y, x)``
    slices of the bundle's size; returns per slice ``(boxes (n, 4) [x1, y1, x2, y2] float64, scores (n,))``
    with scores >= ``score_threshold`` (default: the bundle's), highest first."""
    import torch

    from deepliver.models.fasterrcnn import slice_tensor

    config, opts = model.config, _options(model.config)
    module = getattr(model.predictor, "module", None)
    if module is None:
        raise ConfigError(f"{config.architecture} bundles run with the torch runtime only (no ONNX export yet)",
                          model.path)
    device = getattr(model.predictor, "device", "cpu")
    module.eval()
    threshold = float(opts["score_threshold"] if score_threshold is None else score_threshold)
    tensors = [slice_tensor(p).to(device) for p in pixels]
    found = []
    with torch.inference_mode():
        if config.architecture == "fasterrcnn":
            for out in module(tensors):
                keep = (out["scores"] >= threshold) & (out["labels"] == 1)
                found.append((out["boxes"][keep], out["scores"][keep]))
        else:
            from deepliver.models.yolo import yolo_detect
            found = yolo_detect(module, torch.stack(tensors), threshold, float(opts["iou_threshold"]),
                                int(opts["max_detections"]))
    return [(b.double().cpu().numpy().reshape(-1, 4), s.double().cpu().numpy()) for b, s in found]


def detect_canonical(hu: np.ndarray, model, z_range: Optional[tuple[int, int]] = None,
                     progress: Optional[ProgressCallback] = None, stage: str = "tumor",
                     score_threshold: Optional[float] = None,
                     square: Optional[tuple[int, int, int]] = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Boxes on the canonical ``(z, y, x)`` HU array ``hu`` for slices ``z_range`` (``[start, stop)``, all by
    default): ``{z: (boxes (n, 4), scores (n,))}``, boxes in pixel edges of the network's ``size x size``
    slice, scores >= ``score_threshold`` (default: the bundle's); slices without a box left out. Slices are
    windowed and resized exactly as ``deepliver convert`` writes them, after ``crop_square`` to ``square``
    (``(y0, x0, side)``) when given."""
    config, opts = model.config, _options(model.config)
    size = int(config.patch_size[0])
    window = Window(*config.intensity.window)
    start, stop = z_range or (0, hu.shape[0])
    batch = max(1, int(opts["batch_size"]))
    boxes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    total = stop - start
    if progress:
        progress(stage, 0, total)
    for first in range(start, stop, batch):
        zs = range(first, min(first + batch, stop))
        planes = [hu[z] if square is None else crop_square(hu[z], square, window.low) for z in zs]
        pixels = [resize_slice(window_slice(plane, window), size) for plane in planes]
        for z, (found, scores) in zip(zs, detect_slices(model, pixels, score_threshold)):
            if len(found):
                boxes[z] = (found, scores)
        if progress:
            progress(stage, zs[-1] + 1 - start, total)
    return boxes


def detect_volume(image: sitk.Image, model, *, roi_mask: Optional[np.ndarray] = None,
                  progress: Optional[ProgressCallback] = None, stage: str = "tumor") -> np.ndarray:
    """The detector's mask on ``image``'s grid: uint8 ``(z, y, x)``, 1 inside a detected box (see the module
    docstring). ``image``: CT in HU, any direction (near-axial). ``roi_mask``: ``(z, y, x)`` on ``image``'s
    grid (the liver): only its z-range is searched and, in ``box_in_roi`` mode, boxes are clipped to it; an
    empty ROI gives all zeros. ``progress(stage, done, total)`` per batch of slices."""
    threshold = float(_options(model.config)["score_threshold"])
    return detect_volume_thresholds(image, model, [threshold], roi_mask=roi_mask, progress=progress,
                                    stage=stage)[0]


def detect_volume_thresholds(image: sitk.Image, model, thresholds, *, roi_mask: Optional[np.ndarray] = None,
                             progress: Optional[ProgressCallback] = None, stage: str = "tumor") -> list[np.ndarray]:
    """``detect_volume``'s mask for each score threshold of ``thresholds`` from one pass of the detector
    (used to choose the bundle's threshold on validation cases)."""
    thresholds = [float(t) for t in thresholds]
    geometry = Geometry.from_image(image)
    out_shape = geometry.shape
    orientation = canonical_orientation(geometry)
    hu = orientation.apply(sitk.GetArrayFromImage(image))
    roi = None
    z_range = (0, hu.shape[0])
    if roi_mask is not None:
        roi_mask = np.asarray(roi_mask)
        if tuple(roi_mask.shape) != out_shape:
            raise GeometryError(f"ROI mask shape (z, y, x) {tuple(roi_mask.shape)} differs from the image's "
                                f"{out_shape}")
        roi = orientation.apply(roi_mask) > 0
        zs = np.flatnonzero(roi.any(axis=(1, 2)))
        if not zs.size:
            return [np.zeros(out_shape, dtype=np.uint8) for _ in thresholds]
        z_range = (int(zs[0]), int(zs[-1]) + 1)
    opts = _options(model.config)
    square = None
    if roi is not None and opts["crop"] == "liver":
        square = liver_square(roi, canonical_spacing(geometry, orientation), float(model.config.crop_margin_mm))
    found = detect_canonical(hu, model, z_range, progress, stage, min(thresholds), square)
    clip = roi if opts["rasterize"] == "box_in_roi" else None
    size = int(model.config.patch_size[0])
    return [boxes_to_mask({z: b[s >= t] for z, (b, s) in found.items()}, orientation, hu.shape, size, clip, square)
            for t in thresholds]


def boxes_to_mask(boxes: dict[int, np.ndarray], orientation: Orientation, canonical_shape: tuple[int, int, int],
                  size: int, roi: Optional[np.ndarray] = None,
                  square: Optional[tuple[int, int, int]] = None) -> np.ndarray:
    """Boxes found on canonical slices (``{z: (n, 4)}``, pixel edges of ``size x size`` network slices of the
    whole slice, or of ``square`` when given) as a uint8 mask in the image's own ``(z, y, x)`` order; ``roi``
    (canonical, boolean) clips it when given."""
    depth, height, width = canonical_shape
    if square is not None:
        boxes = {z: square_to_canonical(b, square, size) for z, b in boxes.items()}
        mask = rasterize_boxes(boxes, canonical_shape)
    else:
        mask = rasterize_boxes(boxes, canonical_shape, (size / width, size / height))
    if roi is not None:
        mask &= np.asarray(roi, dtype=bool).astype(np.uint8)
    return to_image_order(mask, orientation)
