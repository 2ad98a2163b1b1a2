"""Resampling to a spacing and back onto a reference geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.errors import ConfigError
from deepliver.imaging import Geometry, resample_to_geometry, resample_to_spacing, same_geometry, spacing_geometry


def _label(image: sitk.Image) -> sitk.Image:
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)
    array[2:10, 5:30, 8:40] = 1
    array[4:7, 12:18, 15:22] = 2
    array[11, 39, 47] = 2  # a corner voxel must survive too
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    return label


@pytest.mark.parametrize("direction", ["identity", "oblique"])
def test_label_to_finer_spacing_and_back_is_identical(make_ct, direction):
    label = _label(make_ct(direction))
    fine = resample_to_spacing(label, (0.35, 0.4, 1.25), is_label=True)
    assert fine.GetSize() == (96, 80, 24)
    back = resample_to_geometry(fine, Geometry.from_image(label), is_label=True)
    assert same_geometry(back, label, tol=1e-9)
    assert back.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label))


def test_spacing_keeps_origin_direction_and_extent(make_ct):
    image = make_ct("oblique")
    out = resample_to_spacing(image, (1.4, None, 1.0))
    extent_in = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    extent_out = np.asarray(out.GetSize()) * np.asarray(out.GetSpacing())
    np.testing.assert_allclose(extent_out, extent_in, atol=1e-9)  # 48*0.7 = 24*1.4; 12*2.5 = 30*1.0
    assert out.GetOrigin() == image.GetOrigin() and out.GetDirection() == image.GetDirection()
    assert out.GetSpacing() == (1.4, 0.8, 1.0) and out.GetPixelID() == image.GetPixelID()


def test_linear_image_resampling_on_a_ramp(make_ct):
    base = make_ct()
    zz, yy, xx = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in (12, 40, 48)), indexing="ij")
    ramp = sitk.GetImageFromArray(3 * xx + 2 * yy + zz)  # linear: interpolation must be exact
    ramp.CopyInformation(base)
    target = Geometry((20, 20, 6), (1.05, 1.2, 3.75), base.GetOrigin(), base.GetDirection())
    out = sitk.GetArrayFromImage(resample_to_geometry(ramp, target))
    index = np.indices(target.shape).astype(float)  # (z, y, x) index grids on the target
    scale = np.asarray(target.spacing)[::-1, None, None, None] / np.asarray(base.GetSpacing())[::-1, None, None, None]
    z, y, x = index * scale
    np.testing.assert_allclose(out, 3 * x + 2 * y + z, atol=1e-4)


def test_same_spacing_returns_the_image_and_bad_spacing_is_refused(make_ct):
    image = make_ct()
    assert resample_to_spacing(image, image.GetSpacing()) is image
    with pytest.raises(ConfigError, match="3 values"):
        spacing_geometry(Geometry.from_image(image), (1.0, 1.0))
    with pytest.raises(ConfigError, match="positive"):
        resample_to_spacing(image, (1.0, -1.0, 1.0))


def test_outside_voxels_read_as_air_for_images_and_background_for_labels(make_ct):
    image = make_ct(spacing=(0.5, 0.75, 2.5))  # 30 * 0.5 mm is exact in binary: no interpolation weights
    shifted = Geometry(image.GetSize(), image.GetSpacing(),
                       np.asarray(image.GetOrigin()) + (30 * 0.5, 0, 0), image.GetDirection())
    out = sitk.GetArrayFromImage(resample_to_geometry(image, shifted))
    assert (out[:, :, -10:] == sitk.GetArrayViewFromImage(image).min()).all()
    np.testing.assert_array_equal(out[:, :, :18], sitk.GetArrayFromImage(image)[:, :, 30:])
    label = sitk.GetArrayFromImage(resample_to_geometry(_label(image), shifted, is_label=True))
    assert (label[:, :, -10:] == 0).all()


@pytest.mark.parametrize("n, old, new", [(40, 0.8, 1.5), (36, 0.75, 1.5), (48, 0.7, 1.4), (10, 0.5, 2.0)])
def test_back_to_the_fine_grid_extrapolates_at_the_border(n, old, new):
    # a coarse grid of round(n*old/new) voxels leaves the last fine voxel centres just outside it
    fine = Geometry((n, n, 4), (old, old, 1.0), (0.0, 0.0, 0.0))
    coarse = spacing_geometry(fine, (new, new, None))
    ones = coarse.image_from_array(np.ones(coarse.shape, dtype=np.float32))
    back = sitk.GetArrayFromImage(resample_to_geometry(ones, fine, default_value=0.0, extrapolate=True))
    assert back.shape == fine.shape and (back == 1).all()


@pytest.mark.parametrize("direction", ["identity", "oblique"])
def test_integer_image_resampled_into_float_equals_the_cast_image_resampled(make_ct, direction):
    """What inference does (int16 CT straight into float32) gives what training's cache does (cast to float32,
    then resample): same voxels, bit for bit, padding included."""
    image = make_ct(direction)
    assert image.GetPixelID() == sitk.sitkInt16
    geometry = Geometry.from_image(image)
    target = Geometry(geometry.size, (0.93, 1.27, 1.9), tuple(np.asarray(geometry.origin) - 1.3), geometry.direction)
    direct = resample_to_geometry(image, target, pixel_type=sitk.sitkFloat32)
    cast = resample_to_geometry(sitk.Cast(image, sitk.sitkFloat32), target)
    assert direct.GetPixelID() == sitk.sitkFloat32
    values = sitk.GetArrayFromImage(direct)
    np.testing.assert_array_equal(values, sitk.GetArrayFromImage(cast))
    assert (values != np.rint(values)).mean() > 0.25                      # interpolated, not rounded
    assert (values == sitk.GetArrayViewFromImage(image).min()).any()      # and padded with the minimum
