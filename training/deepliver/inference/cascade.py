"""The liver -> tumor cascade on one volume.

read -> liver model (at its bundle's spacing and window) -> liver post-processing -> tumor model inside the
liver's bounding box + margin -> tumor post-processing -> one uint8 label (0 background, 1 liver, 2 tumor) on
the input image's exact grid. Which kind of model each stage is (2D U-Net, 3D U-Net, detector) is the
bundle's business: ``deepliver.inference.predict.predict_volume`` dispatches on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver import __version__
from deepliver.imaging.geometry import Geometry
from deepliver.labels import LIVER, TUMOR
from deepliver.postprocess import (PostprocessOptions, ellipsoid_radii, largest_component, postprocess_liver,
                                   postprocess_tumor)
from deepliver.progress import ProgressCallback

__all__ = ["CascadeResult", "segment_image", "label_summary"]


@dataclass
class CascadeResult:
    """The label (uint8 image on the input grid) and what happened (sidecar JSON content)."""

    label: sitk.Image
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def liver_found(self) -> bool:
        return bool(self.info.get("liver_found"))


def label_summary(label: np.ndarray, geometry: Geometry) -> dict[str, Any]:
    """Liver and tumor volumes (mL; liver counts tumor voxels too, as LiTS does) and the tumor lesion
    count (3D, 26-connected) of a ``(z, y, x)`` label array."""
    import cc3d

    from deepliver.inference.predict import roi_box

    box = roi_box(label > 0, geometry.spacing, 0.0)          # counted on the labelled box only
    label = label[box] if box is not None else label[:0]
    tumor = label == TUMOR.value
    lesions = int(cc3d.connected_components(tumor.astype(np.uint8), connectivity=26).max()) if tumor.any() else 0
    voxel_ml = geometry.voxel_volume_ml
    return {"liver_ml": round(float(np.count_nonzero(label >= LIVER.value)) * voxel_ml, 3),
            "tumor_ml": round(float(np.count_nonzero(tumor)) * voxel_ml, 3),
            "lesion_count": lesions}


def _model_record(model) -> dict[str, Any]:
    """What the sidecar says about a model: enough to tell later which bundle made a label."""
    config = model.config
    path = Path(model.path) if model.path is not None else None
    return {"path": str(path) if path else None, "name": path.name if path else None, "architecture": config.architecture,
            "spatial_dims": config.spatial_dims, "task": config.task, "created": config.created,
            "deepliver_version": config.deepliver_version, "validation": config.validation}


Region = tuple[tuple[slice, slice, slice], np.ndarray]
"""``(box, array)``: the ``(z, y, x)`` slices of a grid and a uint8 array on them, the grid being 0 elsewhere."""


def _liver_stage(image: sitk.Image, liver_model, options: PostprocessOptions, steps: list, timings: dict,
                 progress: Optional[ProgressCallback]) -> Region:
    """The liver model's label on the input grid, as the region that can hold liver. A binary segmentation
    network's foreground is cut to its largest 26-connected component on the model's grid first, so that
    false positives far from the liver (which ``postprocess_liver`` drops anyway) do not make the resampling
    back and the post-processing on the input grid cover the whole volume: the removed voxels' probability
    is set to 0, and since no interpolation cell holds voxels of two 26-connected components, the liver's
    resampled boundary is the one it had (recorded as step ``liver_largest_component_model_grid``, voxels of
    the model grid)."""
    from deepliver.inference.predict import SEGMENTATION_ARCHITECTURES, model_probabilities, predict_volume

    start = time.perf_counter()
    if liver_model.config.architecture not in SEGMENTATION_ARCHITECTURES:
        out = predict_volume(image, liver_model, progress=progress, stage="liver")
        timings["liver_model_s"] = time.perf_counter() - start
        return tuple(slice(0, n) for n in out.shape), out  # type: ignore[return-value]
    output = model_probabilities(image, liver_model, progress=progress, stage="liver")
    timings["liver_model_s"] = time.perf_counter() - start
    if options.liver_largest_component and output.probs.shape[0] == 1:
        start = time.perf_counter()
        foreground = output.probs[0] >= 0.5
        removed = foreground & ~largest_component(foreground)
        before, gone = int(np.count_nonzero(foreground)), int(np.count_nonzero(removed))
        output.probs[0][removed] = 0.0          # a fresh array of this call (``model_probabilities``)
        steps.append({"step": "liver_largest_component_model_grid",
                      "params": {"connectivity": 26, "spacing_mm": [round(v, 6) for v in output.model_grid.spacing]},
                      "voxels_before": before, "voxels_after": before - gone, "added": 0, "removed": gone})
        timings["liver_postprocess_s"] = time.perf_counter() - start
    start = time.perf_counter()
    region = output.label_region()
    timings["liver_model_s"] += time.perf_counter() - start
    return region  # type: ignore[return-value]


def _work_box(region: Region, geometry: Geometry, options: PostprocessOptions, tumor_model) -> tuple[slice, ...]:
    """The part of the input grid the rest of the cascade works on: the liver region's foreground box grown
    by every reach of the later steps, summed (the liver closing's radius + 1, the tumor crop's margin, the
    tumor dilation and closing radii + 1), so that each step finds there exactly what it would find on the
    whole grid (each works on its input's box plus that margin, clipped to the grid; the grid's border is
    the work box's border wherever the box reaches it). A detector's tumor stage sees whole slices, so it
    gets the whole grid. Empty when the liver model found nothing."""
    from deepliver.inference.predict import SEGMENTATION_ARCHITECTURES, roi_box

    box, array = region
    whole = tuple(slice(0, n) for n in geometry.shape)
    found = roi_box(array, geometry.spacing, 0.0) if array.size else None
    if found is None:
        return (slice(0, 0),) * 3
    if tumor_model is not None and tumor_model.config.architecture not in SEGMENTATION_ARCHITECTURES:
        return whole
    spacing = geometry.spacing
    reach = 1 + np.array(ellipsoid_radii(options.liver_closing_mm, spacing))
    if tumor_model is not None:
        reach += np.ceil(tumor_model.config.crop_margin_mm / np.array(spacing[::-1]) - 1e-6).astype(int)
        reach += np.array(ellipsoid_radii(options.tumor_liver_dilation_mm if options.tumor_inside_liver else 0.0,
                                          spacing)) + np.array(ellipsoid_radii(options.tumor_closing_mm, spacing))
    return tuple(slice(max(0, b.start + f.start - int(m)), min(n, b.start + f.stop + int(m)))
                 for b, f, m, n in zip(box, found, reach, geometry.shape))


def _crop_region(region: Region, work: tuple[slice, ...]) -> np.ndarray:
    """``region`` on the ``work`` box (a new array; ``work`` holds every nonzero voxel of the region)."""
    box, array = region
    out = np.zeros(tuple(w.stop - w.start for w in work), dtype=np.uint8)
    both = [slice(max(b.start, w.start), min(b.stop, w.stop)) for b, w in zip(box, work)]
    if all(s.stop > s.start for s in both):
        out[tuple(slice(s.start - w.start, s.stop - w.start) for s, w in zip(both, work))] = \
            array[tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(both, box))]
    return out


def segment_image(image: sitk.Image, liver_model, tumor_model=None,
                  postprocess: Optional[PostprocessOptions] = None,
                  progress: Optional[ProgressCallback] = None) -> CascadeResult:
    """Run the cascade on a CT ``image`` (HU) with loaded models (``deepliver.inference.predict.load_model``).

    ``tumor_model`` None gives a liver-only label. When no liver is found the label is all zeros and
    ``info["liver_found"]`` is False (not an error: the caller says so).
    """
    from deepliver.inference.predict import predict_volume

    options = postprocess or PostprocessOptions()
    geometry = Geometry.from_image(image)
    spacing = geometry.spacing
    timings: dict[str, float] = {}

    steps: list[dict[str, Any]] = []
    region = _liver_stage(image, liver_model, options, steps, timings, progress)
    # From here on the work is done on the box that can hold liver and tumor (``_work_box``): a tenth of a CT
    start = time.perf_counter()
    work = _work_box(region, geometry, options, tumor_model)
    liver = postprocess_liver(_crop_region(region, work), spacing, options, steps)
    timings["liver_postprocess_s"] = timings.get("liver_postprocess_s", 0.0) + time.perf_counter() - start

    sub = np.zeros(liver.shape, dtype=np.uint8)
    info: dict[str, Any] = {"deepliver_version": __version__, "postprocess": options.to_dict(),
                            "liver_model": str(liver_model.path) if liver_model.path else None, "liver_found": bool(liver.any()),
                            "models": {"liver": _model_record(liver_model)}}
    if liver.any():
        sub[liver] = LIVER.value
        if tumor_model is not None:
            start = time.perf_counter()
            whole = work == tuple(slice(0, n) for n in geometry.shape)
            work_image = image if whole else sitk.RegionOfInterest(
                image, [w.stop - w.start for w in work[::-1]], [w.start for w in work[::-1]])
            tumor_raw = predict_volume(work_image, tumor_model, roi_mask=liver, progress=progress, stage="tumor")
            timings["tumor_model_s"] = time.perf_counter() - start
            start = time.perf_counter()
            tumor = postprocess_tumor(tumor_raw, liver, spacing, options, steps)
            timings["tumor_postprocess_s"] = time.perf_counter() - start
            sub[tumor] = TUMOR.value
            info["tumor_model"] = str(tumor_model.path)
            info["models"]["tumor"] = _model_record(tumor_model)
    label = np.zeros(geometry.shape, dtype=np.uint8)
    label[work] = sub
    info["postprocess_steps"] = steps
    info["timings"] = {k: round(v, 4) for k, v in timings.items()}
    info.update(label_summary(sub, geometry))
    return CascadeResult(geometry.image_from_array(label), info)
