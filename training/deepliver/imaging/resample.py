"""Resampling: to a target spacing, and back onto a reference geometry.

Images use linear interpolation, labels nearest neighbour. Resampling to a spacing keeps the origin,
direction and physical extent (the size is rounded so the grid covers the same field of view).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from deepliver.errors import ConfigError
from deepliver.imaging.geometry import Geometry

__all__ = ["resample_to_spacing", "resample_to_geometry", "spacing_geometry"]

_INTEGER_TYPES = (sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16, sitk.sitkInt32, sitk.sitkUInt32,
                  sitk.sitkInt64, sitk.sitkUInt64)


def spacing_geometry(geometry: Geometry, spacing: Sequence[float | None]) -> Geometry:
    """The grid with ``spacing`` (mm, ``(x, y, z)``; None keeps an axis) over ``geometry``'s field of view.

    Same origin and direction; ``size = round(old_size * old_spacing / new_spacing)``, at least 1. The last
    old voxel centres may fall just outside the new grid: resample back with ``extrapolate=True``.
    """
    if len(spacing) != 3:
        raise ConfigError(f"target spacing needs 3 values (x, y, z), got {list(spacing)}")
    new_spacing = tuple(float(s) if s is not None else o for s, o in zip(spacing, geometry.spacing))
    if min(new_spacing) <= 0:
        raise ConfigError(f"target spacing must be positive, got {new_spacing}")
    size = tuple(max(1, int(round(n * o / s))) for n, o, s in zip(geometry.size, geometry.spacing, new_spacing))
    return Geometry(size, new_spacing, geometry.origin, geometry.direction)


def resample_to_geometry(image: sitk.Image, geometry: Geometry, is_label: bool = False,
                         default_value: float | None = None, extrapolate: bool = False,
                         pixel_type: int | None = None) -> sitk.Image:
    """Resample ``image`` onto ``geometry`` (nearest neighbour when ``is_label``, else linear).

    Voxels outside the input get ``default_value`` (0 for labels, the image minimum otherwise, so CT
    padding reads as air rather than water), or with ``extrapolate`` the value of the nearest input voxel
    (for mapping a model's output back onto the grid it was resampled from). The pixel type is kept, and
    integer images are interpolated in float and rounded to the nearest integer, unless ``pixel_type`` (a
    SimpleITK pixel ID) asks for another: then the interpolated values are written in that type directly
    (an int16 CT resampled into float32 equals the CT cast to float32 and resampled, without that cast's copy
    of the whole volume).
    """
    if default_value is None:
        default_value = 0.0 if is_label else float(np.min(sitk.GetArrayViewFromImage(image)))
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    integer = image.GetPixelID() in _INTEGER_TYPES
    # Linear interpolation of an integer image is done in float and rounded (ITK would truncate toward 0).
    if pixel_type is not None:
        return sitk.Resample(image, list(geometry.size), sitk.Transform(), interpolator, geometry.origin,
                             geometry.spacing, geometry.direction, default_value, pixel_type, extrapolate)
    out_type = sitk.sitkFloat32 if (integer and not is_label) else image.GetPixelID()
    out = sitk.Resample(image, list(geometry.size), sitk.Transform(), interpolator, geometry.origin,
                        geometry.spacing, geometry.direction, default_value, out_type, extrapolate)
    if out_type != image.GetPixelID():
        out = sitk.Cast(sitk.Round(out), image.GetPixelID())
    return out


def resample_to_spacing(image: sitk.Image, spacing: Sequence[float | None], is_label: bool = False) -> sitk.Image:
    """Resample ``image`` to ``spacing`` (mm, ``(x, y, z)``), keeping origin, direction and extent.

    Returns ``image`` itself when the spacing already matches within 1e-6 mm.
    """
    source = Geometry.from_image(image)
    target = spacing_geometry(source, spacing)
    if np.allclose(target.spacing, source.spacing, rtol=0, atol=1e-6) and target.size == source.size:
        return image
    return resample_to_geometry(image, target, is_label)
