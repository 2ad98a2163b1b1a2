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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_liver_stage_equals_largest_component_after_resampling_everything(seed):
    image, model = _case(seed), _model()
    steps, timings = [], {}
    got = _liver_stage(image, model, PostprocessOptions(), steps, timings, None)
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
    got = _liver_stage(image, model, PostprocessOptions(liver_largest_component=False), steps, {}, None)
    np.testing.assert_array_equal(got, predict_volume(image, model))
    assert steps == []
