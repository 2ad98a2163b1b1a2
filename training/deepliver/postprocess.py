"""Post-processing of liver and tumor masks: largest component, closing, hole filling, tumor-in-liver.

Arrays are numpy ``(z, y, x)``; ``spacing`` is always given in ITK order ``(x, y, z)`` in mm, as
``Geometry.spacing`` and ``SimpleITK.Image.GetSpacing()`` give it (it is reversed inside). No torch.

Steps, in order (each switchable in ``PostprocessOptions``):

liver (``postprocess_liver``)
  1. ``liver_largest_component``: keep the largest 26-connected component (SimpleITK ConnectedComponent
     fully connected + RelabelComponent; ties go to the component met first in raster order).
  2. ``liver_closing``: morphological closing with an ellipsoid of radius ``liver_closing_mm`` mm
     (see ``ellipsoid``), so anisotropic spacing is handled. Outside the volume the mask is taken to
     continue as its edge values, so a structure touching the border is not eroded there.
  3. ``liver_fill_holes_2d``: fill holes in each axial slice (background 4-connected in the slice, as
     ``scipy.ndimage.binary_fill_holes`` in 2D).
  4. ``liver_fill_holes_3d``: fill holes in 3D (background 6-connected, as scipy's default and
     SimpleITK's BinaryFillhole).
tumor (``postprocess_tumor``)
  1. ``tumor_inside_liver``: keep tumor voxels inside the liver dilated by ``tumor_liver_dilation_mm``.
  2. ``tumor_min_volume``: drop 26-connected components whose volume is under ``tumor_min_volume_mm3``.
  3. ``tumor_closing``: closing with an ellipsoid of ``tumor_closing_mm`` mm, clipped again to the
     dilated liver when ``tumor_inside_liver`` is on.

Every step works on the bounding box of its input plus a margin, so the cost follows the organ, not the
volume. Each function takes ``record``, a list to which one dict per step is appended (name, parameters,
voxels before/after, added, removed); ``postprocess_file`` writes them into the sidecar JSON.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import cc3d
import numpy as np
import SimpleITK as sitk

from deepliver.errors import ConfigError, GeometryError

__all__ = [
    "PostprocessOptions", "postprocess_liver", "postprocess_tumor", "postprocess_label", "postprocess_file",
    "sidecar_path", "largest_component", "binary_dilate_mm", "binary_close_mm", "fill_holes_2d",
    "fill_holes_3d", "remove_small_components", "ellipsoid", "ellipsoid_radii",
]

_EPS_MM2 = 1e-6
"""Tolerance (mm²) on the ellipsoid boundary, so offsets exactly at the radius are inside."""


@dataclass
class PostprocessOptions:
    """Which post-processing steps run and their parameters (mm, mm³). A radius or volume of 0 skips
    the step. Serialised as is into the sidecar JSON (``to_dict`` / ``from_dict``)."""

    liver_largest_component: bool = True
    liver_closing_mm: float = 3.0
    liver_fill_holes_2d: bool = True
    liver_fill_holes_3d: bool = True
    tumor_inside_liver: bool = True
    tumor_liver_dilation_mm: float = 2.0
    tumor_min_volume_mm3: float = 10.0
    tumor_closing_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("liver_closing_mm", "tumor_liver_dilation_mm", "tumor_min_volume_mm3", "tumor_closing_mm"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"post-processing option {name} must be a finite number >= 0 "
                                  f"(0 turns the step off), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PostprocessOptions":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown post-processing option(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(known))}")
        return cls(**data)


# --- geometry helpers ---------------------------------------------------------------------------------
def _spacing_zyx(spacing: Sequence[float]) -> tuple[float, float, float]:
    if len(spacing) != 3 or min(spacing) <= 0:
        raise GeometryError(f"spacing must be 3 positive values (x, y, z) in mm, got {tuple(spacing)}")
    return (float(spacing[2]), float(spacing[1]), float(spacing[0]))


def ellipsoid_radii(radius_mm: float, spacing: Sequence[float]) -> tuple[int, int, int]:
    """Half-extent in voxels ``(z, y, x)`` of the ``radius_mm`` ellipsoid for ``spacing`` ``(x, y, z)`` mm."""
    return tuple(int(math.floor(math.sqrt(radius_mm ** 2 + _EPS_MM2) / s)) for s in _spacing_zyx(spacing))


def ellipsoid(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """The structuring element: a bool ``(z, y, x)`` array holding the voxel offsets ``d`` with
    ``(dz*sz)² + (dy*sy)² + (dx*sx)² <= radius_mm² (+1e-6 mm²)``; ``spacing`` is ``(x, y, z)`` mm."""
    sz, sy, sx = _spacing_zyx(spacing)
    rz, ry, rx = ellipsoid_radii(radius_mm, spacing)
    dz, dy, dx = np.ogrid[-rz:rz + 1, -ry:ry + 1, -rx:rx + 1]
    return (dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2 <= radius_mm ** 2 + _EPS_MM2


def _bbox(mask: np.ndarray) -> Optional[list[tuple[int, int]]]:
    """``[(start, stop)]`` per axis of the True voxels, or None when there are none."""
    out = []
    for axis in range(mask.ndim):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        nz = np.flatnonzero(mask.any(axis=others))
        if nz.size == 0:
            return None
        out.append((int(nz[0]), int(nz[-1]) + 1))
    return out


def _box(bbox: list[tuple[int, int]], margin: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(0, a - m), min(n, b + m)) for (a, b), m, n in zip(bbox, margin, shape))


def _check_mask(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 3:
        raise GeometryError(f"{name} must be a 3D (z, y, x) array, got shape {mask.shape}")
    return mask if mask.dtype == bool else mask != 0


# --- single operations ----------------------------------------------------------------------------
def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a bool ``(z, y, x)`` mask (a new array; all False if empty)."""
    mask = _check_mask(mask, "mask")
    out = np.zeros_like(mask)
    bbox = _bbox(mask)
    if bbox is None:
        return out
    box = _box(bbox, (0, 0, 0), mask.shape)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask[box]).view(np.uint8))
    relabeled = sitk.RelabelComponent(sitk.ConnectedComponent(image, True), sortByObjectSize=True)
    out[box] = sitk.GetArrayViewFromImage(relabeled) == 1  # ``relabeled`` stays alive during the view
    return out


def _dilate_zero(mask: np.ndarray, radius_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Dilation by the ellipsoid, the array's outside taken as False. The ellipsoid is the union of
    x-segments, one per ``(dz, dy)``: each segment is a 1D maximum filter (from running counts along x, so
    that ``deepliver segment`` does not import scipy), shifted and OR-ed."""
    sz, sy, sx = spacing_zyx
    r2 = radius_mm ** 2 + _EPS_MM2
    rz, ry = int(math.floor(math.sqrt(r2) / sz)), int(math.floor(math.sqrt(r2) / sy))
    nz, ny, nx = mask.shape
    out = np.zeros_like(mask)
    segments: dict[int, np.ndarray] = {}
    wmax = int(math.floor(math.sqrt(r2) / sx))
    counts = None
    for dz in range(-rz, rz + 1):
        for dy in range(-ry, ry + 1):
            rest = r2 - (dz * sz) ** 2 - (dy * sy) ** 2
            if rest < 0:
                continue
            w = int(math.floor(math.sqrt(rest) / sx))
            if w not in segments:
                if w == 0:
                    segments[w] = mask
                else:
                    # x-window [i - w, i + w] holds a voxel <=> running count at i + w + 1 > at i - w; the
                    # counts padded by wmax (0 before, the total after) make both ends plain slices
                    if counts is None:
                        counts = np.empty((nz, ny, nx + 1 + 2 * wmax), dtype=np.int32)
                        counts[:, :, :wmax + 1] = 0
                        np.cumsum(mask, axis=2, dtype=np.int32, out=counts[:, :, wmax + 1:wmax + 1 + nx])
                        counts[:, :, wmax + 1 + nx:] = counts[:, :, wmax + nx:wmax + 1 + nx]
                    segments[w] = counts[:, :, wmax + w + 1:wmax + w + 1 + nx] > counts[:, :, wmax - w:wmax - w + nx]
            src = segments[w][max(-dz, 0):nz - max(dz, 0), max(-dy, 0):ny - max(dy, 0)]
            out[max(dz, 0):nz + min(dz, 0), max(dy, 0):ny + min(dy, 0)] |= src
    return out


def binary_dilate_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilation of a bool ``(z, y, x)`` mask by ``ellipsoid(radius_mm, spacing)``; spacing ``(x, y, z)`` mm."""
    mask = _check_mask(mask, "mask")
    radii = ellipsoid_radii(radius_mm, spacing)
    bbox = _bbox(mask)
    if bbox is None or radius_mm <= 0 or max(radii) == 0:
        return mask.copy()
    box = _box(bbox, radii, mask.shape)
    out = np.zeros_like(mask)
    out[box] = _dilate_zero(np.ascontiguousarray(mask[box]), radius_mm, _spacing_zyx(spacing))
    return out


def binary_close_mm(mask: np.ndarray, radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Closing of a bool ``(z, y, x)`` mask by ``ellipsoid(radius_mm, spacing)``; spacing ``(x, y, z)`` mm.

    Equals ``scipy.ndimage.binary_closing`` with that ellipsoid on the mask padded with its edge values
    (``np.pad(mode="edge")``) and cropped back: a structure touching the volume border is not eroded there.
    """
    mask = _check_mask(mask, "mask")
    radii = ellipsoid_radii(radius_mm, spacing)
    bbox = _bbox(mask)
    if bbox is None or radius_mm <= 0 or max(radii) == 0:
        return mask.copy()
    margin = [r + 1 for r in radii]
    box = _box(bbox, margin, mask.shape)
    padded = np.pad(mask[box], [(m, m) for m in margin], mode="edge")
    sp = _spacing_zyx(spacing)
    dilated = _dilate_zero(padded, radius_mm, sp)
    closed = ~_dilate_zero(~dilated, radius_mm, sp)  # erosion; outside counts as True (edge values)
    out = mask.copy()
    out[box] |= closed[tuple(slice(m, -m) for m in margin)]
    return out


def fill_holes_3d(mask: np.ndarray) -> np.ndarray:
    """Fill 3D holes (background not 6-connected to the volume border) of a bool ``(z, y, x)`` mask."""
    mask = _check_mask(mask, "mask")
    bbox = _bbox(mask)
    out = mask.copy()
    if bbox is None:
        return out
    box = _box(bbox, (0, 0, 0), mask.shape)
    # A background shell around the box stands for everything outside it; background components other
    # than the shell's are holes (cc3d labelling is several times faster than a fill-hole filter).
    background = np.pad(~mask[box], 1, constant_values=True)
    labels = cc3d.connected_components(background, connectivity=6)
    out[box] = (labels != labels[0, 0, 0])[1:-1, 1:-1, 1:-1]
    return out


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes in each axial slice (background not 4-connected to the slice border) of a bool
    ``(z, y, x)`` mask."""
    mask = _check_mask(mask, "mask")
    bbox = _bbox(mask)
    out = mask.copy()
    if bbox is None:
        return out
    box = _box(bbox, (0, 0, 0), mask.shape)
    background = np.pad(~mask[box], ((0, 0), (1, 1), (1, 1)), constant_values=True)
    filled = np.empty(background.shape, bool)
    for z, plane in enumerate(background):  # the padded ring is one background component per slice
        labels = cc3d.connected_components(plane, connectivity=4)
        filled[z] = labels != labels[0, 0]
    out[box] = filled[:, 1:-1, 1:-1]
    return out


def remove_small_components(mask: np.ndarray, min_volume_mm3: float, spacing: Sequence[float]) -> np.ndarray:
    """Drop the 26-connected components of a bool ``(z, y, x)`` mask whose volume (voxels x voxel volume,
    mm³) is under ``min_volume_mm3``; spacing ``(x, y, z)`` mm."""
    mask = _check_mask(mask, "mask")
    voxel_mm3 = float(np.prod(spacing))
    min_voxels = int(math.ceil(min_volume_mm3 / voxel_mm3 - 1e-9))
    bbox = _bbox(mask)
    out = mask.copy()
    if bbox is None or min_voxels <= 1:
        return out
    box = _box(bbox, (0, 0, 0), mask.shape)
    out[box] = cc3d.dust(np.ascontiguousarray(mask[box]), threshold=min_voxels, connectivity=26)
    return out


# --- steps with records ---------------------------------------------------------------------------
def _step(record: Optional[list], name: str, before: np.ndarray, after: np.ndarray, grows: bool,
          **params) -> np.ndarray:
    """Append a step's record. Every step either only adds voxels (``grows``: closing, hole filling) or
    only removes them (component and volume filters, clipping), so the counts give added and removed."""
    if record is not None:
        n_before, n_after = int(np.count_nonzero(before)), int(np.count_nonzero(after))
        record.append({"step": name, "params": params, "voxels_before": n_before, "voxels_after": n_after,
                       "added": n_after - n_before if grows else 0,
                       "removed": 0 if grows else n_before - n_after})
    return after


def postprocess_liver(mask: np.ndarray, spacing: Sequence[float], options: Optional[PostprocessOptions] = None,
                      record: Optional[list] = None) -> np.ndarray:
    """Clean a liver mask (bool or 0/1 ``(z, y, x)``; spacing ``(x, y, z)`` mm); returns a bool mask
    (a new array unless every liver step is off).

    Runs the enabled liver steps of ``options`` (module docstring); appends one dict per enabled step
    to ``record`` when given.
    """
    options = options or PostprocessOptions()
    mask = _check_mask(mask, "liver mask")
    if options.liver_largest_component:
        mask = _step(record, "liver_largest_component", mask, largest_component(mask), False, connectivity=26)
    if options.liver_closing_mm > 0:
        radius = options.liver_closing_mm
        mask = _step(record, "liver_closing", mask, binary_close_mm(mask, radius, spacing), True,
                     radius_mm=radius, radius_voxels_zyx=list(ellipsoid_radii(radius, spacing)))
    if options.liver_fill_holes_2d:
        mask = _step(record, "liver_fill_holes_2d", mask, fill_holes_2d(mask), True, plane="axial",
                     connectivity=4)
    if options.liver_fill_holes_3d:
        mask = _step(record, "liver_fill_holes_3d", mask, fill_holes_3d(mask), True, connectivity=6)
    return mask


def postprocess_tumor(tumor_mask: np.ndarray, liver_mask: np.ndarray, spacing: Sequence[float],
                      options: Optional[PostprocessOptions] = None, record: Optional[list] = None) -> np.ndarray:
    """Clean a tumor mask against a (post-processed) liver mask; both ``(z, y, x)``, spacing ``(x, y, z)``
    mm. Returns a bool mask (a new array unless every tumor step is off); appends one dict per enabled step
    to ``record`` when given."""
    options = options or PostprocessOptions()
    tumor = _check_mask(tumor_mask, "tumor mask")
    liver = _check_mask(liver_mask, "liver mask")
    if tumor.shape != liver.shape:
        raise GeometryError(f"tumor mask shape {tumor.shape} differs from liver mask shape {liver.shape}")
    # Every step happens within the box of liver | tumor grown by the dilation and closing radii (+1): cut
    # there, the result is the same as on the whole grid (nothing outside; the closing never reaches a
    # cut edge, and where the box meets the volume border it is the border), a fraction of the work.
    bbox = _bbox(liver | tumor)
    if bbox is None:
        box = tuple(slice(0, n) for n in tumor.shape)
    else:
        grow = [a + b + 1 for a, b in zip(
            ellipsoid_radii(options.tumor_liver_dilation_mm if options.tumor_inside_liver else 0.0, spacing),
            ellipsoid_radii(max(options.tumor_closing_mm, 0.0), spacing))]
        box = _box(bbox, grow, tumor.shape)
    out = np.zeros_like(tumor)
    out[box] = _postprocess_tumor_box(tumor[box], liver[box], spacing, options, record)
    return out


def _postprocess_tumor_box(tumor: np.ndarray, liver: np.ndarray, spacing: Sequence[float],
                           options: PostprocessOptions, record: Optional[list]) -> np.ndarray:
    allowed = None
    if options.tumor_inside_liver:
        allowed = binary_dilate_mm(liver, options.tumor_liver_dilation_mm, spacing)
        tumor = _step(record, "tumor_inside_liver", tumor, tumor & allowed, False,
                      liver_dilation_mm=options.tumor_liver_dilation_mm)
    if options.tumor_min_volume_mm3 > 0:
        tumor = _step(record, "tumor_min_volume", tumor,
                      remove_small_components(tumor, options.tumor_min_volume_mm3, spacing), False,
                      min_volume_mm3=options.tumor_min_volume_mm3, connectivity=26)
    if options.tumor_closing_mm > 0:
        closed = binary_close_mm(tumor, options.tumor_closing_mm, spacing)
        if allowed is not None:
            closed &= allowed | tumor
        tumor = _step(record, "tumor_closing", tumor, closed, True, radius_mm=options.tumor_closing_mm,
                      clipped_to_liver=allowed is not None)
    return tumor


def postprocess_label(label: np.ndarray, spacing: Sequence[float], options: Optional[PostprocessOptions] = None,
                      record: Optional[list] = None) -> np.ndarray:
    """Clean a label map (uint8 ``(z, y, x)``, 0 background / 1 liver / 2 tumor; spacing ``(x, y, z)`` mm).

    The liver mask is every voxel >= 1 (tumor included); the tumor mask is label 2. Liver steps run first,
    then the tumor steps against the cleaned liver. Result: 1 on the cleaned liver, 2 on the cleaned
    tumor (which may reach ``tumor_liver_dilation_mm`` beyond the liver), 0 elsewhere, uint8.
    """
    label = np.asarray(label)
    if label.ndim != 3:
        raise GeometryError(f"label must be a 3D (z, y, x) array, got shape {label.shape}")
    liver = postprocess_liver(label >= 1, spacing, options, record)
    tumor = postprocess_tumor(label == 2, liver, spacing, options, record)
    out = liver.astype(np.uint8)
    out[tumor] = 2
    return out


# --- files ----------------------------------------------------------------------------------------
def sidecar_path(out_path: str | os.PathLike) -> Path:
    """The sidecar JSON of a label file: its volume extension replaced by ``.json``
    (``out.nii.gz`` -> ``out.json``, ``out.seg.nrrd`` -> ``out.json``)."""
    from deepliver.imaging.volumes import volume_extension
    path = Path(out_path)
    ext = volume_extension(path)
    stem = path.name[:-len(ext)] if ext else path.stem
    return path.with_name(stem + ".json")


def _counts(label: np.ndarray) -> dict[str, int]:
    return {"liver": int(np.count_nonzero(label)), "tumor": int(np.count_nonzero(label == 2))}


def postprocess_file(label_path: str | os.PathLike, out_path: str | os.PathLike,
                     options: Optional[PostprocessOptions] = None, reference=None) -> dict[str, Any]:
    """Post-process the label file ``label_path`` into ``out_path`` (same geometry) and write the sidecar
    JSON ``sidecar_path(out_path)``. ``reference`` (a ``SimpleITK.Image`` or ``Geometry``), when given,
    must have the label's geometry. Returns the sidecar's content: input, output, options, steps (one
    dict per step: voxels before/after, added, removed), liver/tumor voxel counts before and after.
    """
    from deepliver import __version__
    from deepliver.atomic import write_json_atomic
    from deepliver.imaging.geometry import Geometry
    from deepliver.imaging.volumes import VOLUME_EXTENSIONS, read_label, volume_extension, write_label

    options = options or PostprocessOptions()
    if volume_extension(out_path) is None:  # before the work, not after
        raise ConfigError(f"unknown output extension; use one of {', '.join(VOLUME_EXTENSIONS)}", out_path)
    image = read_label(label_path, reference)
    geometry = Geometry.from_image(image)
    label = sitk.GetArrayFromImage(image)
    steps: list[dict] = []
    cleaned = postprocess_label(label, geometry.spacing, options, steps)
    write_label(cleaned, out_path, geometry)
    info = {
        "input": os.fspath(label_path), "output": os.fspath(out_path), "options": options.to_dict(),
        "spacing_xyz_mm": list(geometry.spacing), "steps": steps,
        "voxels": {"before": _counts(label), "after": _counts(cleaned)},
        "deepliver": {"version": __version__},
    }
    write_json_atomic(sidecar_path(out_path), info)
    return info
