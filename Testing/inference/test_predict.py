"""predict_volume: identity-style predictors must come back as the thresholded input on the input grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from deepliver.imaging.geometry import Geometry
from deepliver.inference.predict import LoadedModel, load_model, predict_volume
from deepliver.inference.predictor import Predictor
from deepliver.inference.sliding import blend_weights, window_starts
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle

LO, HI, T = -100.0, 400.0, 100.5           # window and a threshold between integer HU values
T_NORM = (T - LO) / (HI - LO)


def _direction():
    a = math.radians(30)
    rot = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    return tuple((rot @ np.diag([-1, 1, -1])).ravel())     # rotated, x and z flipped


def _image(shape_zyx=(9, 21, 26), spacing=(0.7, 0.9, 2.5), seed=0):
    hu = np.random.default_rng(seed).integers(-300, 500, size=shape_zyx).astype(np.int16)
    geometry = Geometry(shape_zyx[::-1], spacing, (10.0, -20.0, 5.0), _direction())
    return geometry.image_from_array(hu), hu


def _config(dims, **kw):
    base = dict(architecture="unet", task="liver", spatial_dims=dims, target_spacing=(None, None, None),
                intensity=Intensity(window=(LO, HI)), patch_size=(16, 12) if dims == 2 else (16, 12, 8),
                inference={"divisor": 8, "batch_size": 4, "overlap": 0.5, "blend": "gaussian"})
    return ModelConfig(**{**base, **kw})


def _threshold_channel(channel):
    def predict(batch):
        assert batch.dtype == np.float32
        fg = np.where(batch[:, channel] > T_NORM, 10.0, -10.0)
        return np.stack([np.zeros_like(fg), fg], axis=1).astype(np.float32)     # 2-class softmax logits
    return predict


def test_2d_slices_with_neighbour_channels_come_back_on_the_input_grid():
    image, hu = _image()
    # channel 0 of a 3-channel input is the slice below (z - 1, clamped): the mask must be shifted by one
    model = LoadedModel(_config(2, in_channels=3), _threshold_channel(0))
    assert isinstance(model.predictor, Predictor)
    out = predict_volume(image, model)
    expected = hu[np.clip(np.arange(hu.shape[0]) - 1, 0, None)] > T
    assert out.dtype == np.uint8 and out.shape == hu.shape
    np.testing.assert_array_equal(out, expected)
    centre = predict_volume(image, LoadedModel(_config(2, in_channels=3), _threshold_channel(1)))
    np.testing.assert_array_equal(centre, hu > T)


def test_3d_sliding_window_with_padding_and_blending_is_the_identity():
    image, hu = _image(shape_zyx=(6, 21, 26))        # z smaller than the patch: padded
    calls = []

    def sigmoid_identity(batch):
        calls.append(batch.shape)
        return (20.0 * (batch - T_NORM)).astype(np.float32)                 # one channel: sigmoid logits
    out = predict_volume(image, LoadedModel(_config(3), sigmoid_identity))
    np.testing.assert_array_equal(out, hu > T)
    assert all(shape[1:] == (1, 8, 16, 16) for shape in calls)    # patch (x16, y12 -> 16 by divisor 8, z8)


def _box_image(spacing):
    hu = np.full((20, 40, 36), -500, np.int16)
    hu[5:15, 8:30, 10:25] = 300
    geometry = Geometry(hu.shape[::-1], spacing, (0.0, 0.0, 0.0), _direction())
    return geometry.image_from_array(hu), hu > T


def test_resampling_path_returns_the_box_within_one_voxel():
    image, truth = _box_image((0.8, 0.6, 2.0))
    for dims in (2, 3):
        config = _config(dims, target_spacing=(1.3, 1.1, 2.9 if dims == 3 else None),
                         in_channels=3 if dims == 2 else 1)
        predictor = _threshold_channel(1 if dims == 2 else 0)
        out = predict_volume(image, LoadedModel(config, predictor)).astype(bool)
        assert np.all(out <= ndimage.binary_dilation(truth)), dims
        assert np.all(ndimage.binary_erosion(truth) <= out), dims


def test_roi_crop_pastes_back_inside_box_plus_margin_only():
    image, hu = _image(shape_zyx=(12, 30, 34))
    roi = np.zeros(hu.shape, bool)
    roi[5:7, 10:14, 12:20] = True
    margin = 2.0
    model = LoadedModel(_config(2, in_channels=3, crop_margin_mm=margin), _threshold_channel(1))
    out = predict_volume(image, model, roi_mask=roi, stage="tumor")
    grow = [math.ceil(margin / s) for s in (2.5, 0.9, 0.7)]                 # z, y, x voxels
    box = tuple(slice(max(0, lo - g), min(n, hi + g)) for (lo, hi), g, n in
                zip(((5, 7), (10, 14), (12, 20)), grow, hu.shape))
    expected = np.zeros(hu.shape, bool)
    expected[box] = hu[box] > T
    np.testing.assert_array_equal(out, expected)
    assert not predict_volume(image, model, roi_mask=np.zeros_like(roi)).any()


def test_window_starts_and_weights():
    assert window_starts(26, 16, 0.5) == [0, 8, 10]
    assert window_starts(10, 16, 0.25) == [0]
    w = blend_weights((8, 16, 16))
    assert w.max() == pytest.approx(1.0, abs=1e-6) and w.min() > 0 and w[4, 8, 8] > w[0, 0, 0]


def test_onnx_runtime_matches_torch_on_a_bundle(tmp_path):
    import torch

    from deepliver.models.registry import build_model

    config = _config(2, in_channels=3, arch_args={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0},
                     target_spacing=(1.1, 1.1, None), inference={"divisor": 4, "batch_size": 4})
    torch.manual_seed(0)
    module = build_model(config).eval()
    save_bundle(tmp_path, config, module.state_dict())
    torch.onnx.export(module, torch.zeros(1, 3, 32, 32), str(tmp_path / "model.onnx"), dynamo=False,
                      input_names=["input"], output_names=["logits"], opset_version=17,
                      dynamic_axes={"input": {0: "n", 2: "y", 3: "x"}, "logits": {0: "n", 2: "y", 3: "x"}})
    image, _ = _image(shape_zyx=(7, 30, 27))
    a = predict_volume(image, load_model(tmp_path, runtime="torch"))
    b = predict_volume(image, load_model(tmp_path, runtime="onnx"))
    assert np.count_nonzero(a != b) <= max(1, a.size // 10000)


def _left_half(batch):
    """2-class logits marking the first half (low x) of every slice the network is fed: not mirror-symmetric."""
    fg = np.full(batch[:, 0].shape, -10.0, np.float32)
    fg[..., : batch.shape[-1] // 2] = 10.0
    return np.stack([np.zeros_like(fg), fg], axis=1)


def test_canonical_orientation_gives_the_same_physical_answer_for_any_direction_matrix():
    hu = np.random.default_rng(1).integers(-300, 500, size=(6, 14, 20)).astype(np.int16)
    size, spacing = hu.shape[::-1], (0.8, 0.9, 2.0)
    plain = Geometry(size, spacing, (5.0, -3.0, 7.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    # the same voxels in the same physical places, stored with x and z reversed (direction diag(-1, 1, -1))
    flipped = Geometry(size, spacing, plain.index_to_physical((size[0] - 1, 0, size[2] - 1)), (-1, 0, 0, 0, 1, 0, 0, 0, -1))
    expected = np.zeros(hu.shape, bool)
    expected[..., : hu.shape[2] // 2] = True                   # patient right half (LPS x increasing = left)
    answers = {}
    for mode in ("canonical", "index"):
        model = LoadedModel(_config(2, in_channels=3, inference={"divisor": 2, "orientation": mode}), _left_half)
        a = predict_volume(plain.image_from_array(hu), model).astype(bool)
        b = predict_volume(flipped.image_from_array(np.ascontiguousarray(hu[::-1, :, ::-1])), model)[::-1, :, ::-1]
        answers[mode] = (a, b.astype(bool))
    np.testing.assert_array_equal(answers["canonical"][0], expected)
    np.testing.assert_array_equal(answers["canonical"][1], expected)
    np.testing.assert_array_equal(answers["index"][1], ~expected)      # index order: the answer flips with the file


def test_model_order_round_trip_with_permuted_axes():
    from deepliver.inference.predict import from_model_order, model_orientation, to_model_order

    # a coronal-like grid: index x -> patient L, index y -> patient S (reversed), index z -> patient P
    grid = Geometry((5, 4, 3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 0, 1, 0, -1, 0))
    orientation = model_orientation(grid, "canonical")
    assert orientation is not None and orientation.axes != (0, 1, 2)
    a = np.arange(60).reshape(3, 4, 5)
    moved = to_model_order(a, orientation)
    assert moved.shape == (4, 3, 5)                           # (S, P, L) = (index y, index z, index x)
    np.testing.assert_array_equal(from_model_order(moved[None], orientation)[0], a)
    assert model_orientation(grid, "index") is None
    with pytest.raises(Exception, match="orientation must be one of"):
        model_orientation(grid, "ras")


@pytest.mark.parametrize("where", ["inside", "border", "empty"])
def test_back_to_grid_resamples_only_near_the_mask_and_equals_a_full_resample(where):
    """The bounding-box shortcut of ``_back_to_grid`` against SimpleITK resampling the whole grid."""
    import SimpleITK as sitk

    from deepliver.inference.predict import _back_to_grid

    c, s = math.cos(0.3), math.sin(0.3)
    target = Geometry((61, 57, 23), (0.8, 0.7, 2.5), (-20.0, 13.0, 40.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    source = Geometry((33, 27, 39), (1.5, 1.5, 1.5), (-21.0, 12.5, 39.0), (c, -s, 0, s, c, 0, 0, 0, 1))
    rng = np.random.default_rng(3)
    probs = rng.random((1, 39, 27, 33)).astype(np.float32) * 0.49          # everything below 0.5 ...
    if where == "inside":
        probs[0, 10:20, 8:15, 12:22] = ndimage.gaussian_filter(rng.random((10, 7, 10)), 1) + 0.3
    elif where == "border":
        probs[0, 5:9, 0:6, 20:25] = 0.9                                     # touches y = 0
    src = source.image_from_array(probs[0])
    full = sitk.ResampleImageFilter()
    full.SetReferenceImage(target.image_from_array(np.zeros(target.shape, np.float32)))
    full.SetInterpolator(sitk.sitkLinear)
    full.SetDefaultPixelValue(0.0)
    full.SetUseNearestNeighborExtrapolator(True)
    expected = (sitk.GetArrayFromImage(full.Execute(src)) >= 0.5).astype(np.uint8)
    box, region = _back_to_grid(probs, source, target)
    got = np.zeros(target.shape, np.uint8)
    got[box] = region
    np.testing.assert_array_equal(got, expected)
    if where == "inside":                       # the part resampled is near the mask, not the whole grid
        assert region.size < 0.5 * expected.size and expected[box].sum() == expected.sum()
    assert expected.any() == (where != "empty")
