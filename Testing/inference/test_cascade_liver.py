"""The cascade's liver stage: false positives cut on the model grid give the liver that resampling everything
back and keeping the largest component on the input grid gives."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepliver.imaging.geometry import Geometry
from deepliver.inference.cascade import _liver_stage, segment_image
from deepliver.inference.predict import LoadedModel, predict_volume
from deepliver.models.bundle import Intensity, ModelConfig
from deepliver.postprocess import PostprocessOptions, largest_component, postprocess_liver

LO, HI, T = -100.0, 400.0, 100.5
T_NORM = (T - LO) / (HI - LO)


def _threshold(batch):
    fg = np.where(batch[:, 0] > T_NORM, 6.0, -6.0)
    return np.stack([np.zeros_like(fg), fg], axis=1).astype(np.float32)


def _case(seed: int):
    """A rotated, anisotropic CT: a large bright ellipsoid (the 'liver'), a notch in it, and small bright
    specks far from it (the false positives a model makes)."""
    rng = np.random.default_rng(seed)
    shape = (24, 60, 70)
    z, y, x = np.indices(shape, dtype=float)
    hu = rng.normal(0, 20, shape)
    hu[((z - 12) / 8) ** 2 + ((y - 30) / 18) ** 2 + ((x - 28) / 20) ** 2 < 1] = 200
    hu[10:14, 28:31, 40:50] = 0                                      # a notch the closing may fill
    for _ in range(6):                                               # specks, away from the ellipsoid
        cz, cy, cx = rng.integers(2, 22), rng.integers(3, 57), rng.integers(56, 68)
        hu[cz - 1:cz + 1, cy - 1:cy + 2, cx - 1:cx + 1] = 250
    a = math.radians(20)
    direction = (math.cos(a), -math.sin(a), 0, math.sin(a), math.cos(a), 0, 0, 0, -1)
    geometry = Geometry(shape[::-1], (0.7, 0.8, 2.0), (3.0, -4.0, 10.0), direction)
    return geometry.image_from_array(np.rint(hu).astype(np.int16))


def _model():
    config = ModelConfig(architecture="unet", task="liver", spatial_dims=2, target_spacing=(1.3, 1.1, None),
                         intensity=Intensity(window=(LO, HI)), patch_size=(16, 16),
                         inference={"divisor": 4, "batch_size": 8})
    return LoadedModel(config, _threshold)


def _full(region, image):
    """A liver stage's ``(box, array)`` pasted into zeros of the image's ``(z, y, x)`` shape."""
    box, array = region
    out = np.zeros(Geometry.from_image(image).shape, np.uint8)
    out[box] = array
    assert array.shape == out[box].shape
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_liver_stage_equals_largest_component_after_resampling_everything(seed):
    image, model = _case(seed), _model()
    steps, timings = [], {}
    got = _full(_liver_stage(image, model, PostprocessOptions(), steps, timings, None), image)
    raw = predict_volume(image, model)                               # every component back on the CT grid
    np.testing.assert_array_equal(largest_component(got), largest_component(raw))
    assert np.count_nonzero(raw) > np.count_nonzero(largest_component(raw))       # there were specks
    assert np.count_nonzero(got) == np.count_nonzero(largest_component(raw))      # they are gone already
    (record,) = steps
    assert record["step"] == "liver_largest_component_model_grid" and record["removed"] > 0
    # the whole cascade's liver equals the liver post-processing of the full resampled prediction
    spacing = image.GetSpacing()
    result = segment_image(image, model)
    expected = postprocess_liver(raw, spacing, PostprocessOptions())
    from SimpleITK import GetArrayFromImage
    np.testing.assert_array_equal(GetArrayFromImage(result.label) >= 1, expected)


def test_liver_stage_keeps_everything_when_the_step_is_off():
    image, model = _case(0), _model()
    steps: list = []
    got = _full(_liver_stage(image, model, PostprocessOptions(liver_largest_component=False), steps, {}, None), image)
    np.testing.assert_array_equal(got, predict_volume(image, model))
    assert steps == []


def _tumor_model(margin_mm: float):
    """Tumor 'network': HU > 300 (window 100..500), on its own grid (0.9 mm in-plane)."""
    lo, hi, t = 100.0, 500.0, 300.5

    def predictor(batch):
        fg = np.where(batch[:, 0] > (t - lo) / (hi - lo), 6.0, -6.0)
        return np.stack([np.zeros_like(fg), fg], axis=1).astype(np.float32)

    config = ModelConfig(architecture="unet", task="tumor", spatial_dims=2, target_spacing=(0.9, 0.9, None),
                         intensity=Intensity(window=(lo, hi)), patch_size=(16, 16), crop_margin_mm=margin_mm,
                         inference={"divisor": 4, "batch_size": 8})
    return LoadedModel(config, predictor)


@pytest.mark.parametrize("seed, border, margin_mm", [(0, False, 10.0), (1, True, 4.0), (2, False, 25.0)])
def test_cascade_on_the_work_box_equals_every_step_on_the_whole_grid(seed, border, margin_mm):
    """The cascade works on the liver's box grown by the later steps' reach; its label and step records
    equal those of the same steps run on whole-grid arrays (liver network -> liver post-processing -> tumor
    network on the liver's box + margin -> tumor post-processing), with the liver touching the volume's
    border or not, and with tumors at the liver's edge (where the dilation and the closing reach out)."""
    import SimpleITK as sitk

    from deepliver.postprocess import postprocess_tumor

    image = _case(seed)
    hu = sitk.GetArrayFromImage(image)
    z, y, x = np.indices(hu.shape)
    if border:                                                       # a liver reaching z = 0 and the last z
        hu[((y - 30) / 18) ** 2 + ((x - 28) / 20) ** 2 < 1] = 200
    rng = np.random.default_rng(seed)
    for _ in range(4):                                               # tumors, some cut by the liver's edge
        cz, cy, cx = rng.integers(4, 20), rng.integers(16, 44), rng.integers(10, 46)
        hu[(z - cz) ** 2 / 4 + (y - cy) ** 2 / 9 + (x - cx) ** 2 / 9 < 1] = 400
    hu[3:5, 5:8, 60:64] = 400                                        # bright speck outside the liver
    hu[12, 45:47, 12:14] = 400                                       # a lesion under the minimum volume
    geometry = Geometry.from_image(image)
    image = geometry.image_from_array(hu.astype(np.int16))
    liver_model, tumor_model = _model(), _tumor_model(margin_mm)
    options = PostprocessOptions(tumor_closing_mm=2.0)

    result = segment_image(image, liver_model, tumor_model, options)

    spacing, steps = image.GetSpacing(), []
    liver = postprocess_liver(predict_volume(image, liver_model), spacing, options, steps)
    tumor_raw = predict_volume(image, tumor_model, roi_mask=liver)
    tumor = postprocess_tumor(tumor_raw, liver, spacing, options, steps)
    expected = liver.astype(np.uint8)
    expected[tumor] = 2
    got = sitk.GetArrayFromImage(result.label)
    np.testing.assert_array_equal(got, expected)
    assert (got == 2).sum() > 20 and (tumor_raw.astype(bool) & ~tumor).any()   # tumors found, some cut
    if border:
        assert liver[0].any() and liver[-1].any()
    records = result.info["postprocess_steps"]
    assert records[0]["step"] == "liver_largest_component_model_grid"
    # the liver's largest-component step finds the specks gone already; every later record is the same
    assert [r["voxels_after"] for r in records[1:]] == [r["voxels_after"] for r in steps]
    assert records[2:] == steps[1:]
    assert result.info["liver_ml"] == pytest.approx(np.count_nonzero(expected) * geometry.voxel_volume_ml, abs=1e-3)
