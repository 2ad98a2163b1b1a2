"""Detector tumor stage: rasterization of boxes, clipping to the liver, orientation, the predict_volume entry.

Expected masks are computed independently: pixel-centre tests on a meshgrid for rasterization, and
SimpleITK's DICOMOrient + nearest-neighbour resampling (physical space) for orientation.
"""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from deepliver.dataset.boxes import Box, scale_box
from deepliver.dataset.slices import canonical_orientation
from deepliver.dataset.slices import Window, resize_slice, window_slice
from deepliver.inference.detect import (boxes_to_mask, crop_square, detect_slices, detect_volume, liver_square,
                                        rasterize_boxes, square_to_canonical, to_image_order)
from deepliver.inference.predict import load_model, predict_volume
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle
from deepliver.models.fasterrcnn import build_fasterrcnn
from testhelpers import reoriented


def centre_mask(boxes, shape, scale):
    """Independent rasterization: pixel (z, y, x) is in when its centre, in network-slice units, is inside."""
    depth, height, width = shape
    yy, xx = np.meshgrid((np.arange(height) + 0.5) * scale[1], (np.arange(width) + 0.5) * scale[0], indexing="ij")
    out = np.zeros(shape, np.uint8)
    for z, rows in boxes.items():
        for x1, y1, x2, y2 in rows:
            out[z][(xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)] = 1
    return out


def test_rasterize_matches_pixel_centres():
    rng = np.random.default_rng(3)
    shape = (4, 30, 40)
    for scale in [(1.0, 1.0), (64 / 40, 64 / 30), (0.5, 0.75)]:
        boxes = {}
        for z in range(shape[0]):
            xy = rng.uniform(-5, 70, size=(3, 4))
            boxes[z] = np.stack([np.minimum(xy[:, 0], xy[:, 2]), np.minimum(xy[:, 1], xy[:, 3]),
                                 np.maximum(xy[:, 0], xy[:, 2]), np.maximum(xy[:, 1], xy[:, 3])], axis=1)
        got = rasterize_boxes(boxes, shape, scale)
        np.testing.assert_array_equal(got, centre_mask(boxes, shape, scale))
        assert got.any()


def test_convert_box_round_trips_to_its_pixels():
    """A ground-truth box written by convert on a resized slice comes back as exactly its pixels."""
    height, width, size = 30, 40, 64
    truth = np.zeros((1, height, width), np.uint8)
    truth[0, 7:19, 11:26] = 1                       # inclusive x 11..25, y 7..18
    box = scale_box(Box(11, 7, 25, 18, 180), size / width, size / height, size, size)
    edges = np.array([[box.x_min, box.y_min, box.x_max + 1, box.y_max + 1]], float)   # COCO -> [x1, y1, x2, y2]
    got = rasterize_boxes({0: edges}, truth.shape, (size / width, size / height))
    np.testing.assert_array_equal(got, truth)


@pytest.mark.parametrize("direction", [(-1, 0, 0, 0, -1, 0, 0, 0, 1),   # RAS-like flips of x and y
                                       (0, 0, 1, 1, 0, 0, 0, -1, 0)])   # permuted axes, z flipped
def test_boxes_land_on_the_right_voxels_of_a_reoriented_image(direction):
    base = sitk.GetImageFromArray(np.zeros((8, 20, 24), np.int16))
    base.SetSpacing((0.8, 0.9, 2.0))
    image = reoriented(base, direction)
    orientation = canonical_orientation(image)
    canon_image = sitk.DICOMOrient(image, "LPS")
    canon_shape = sitk.GetArrayFromImage(canon_image).shape
    size = 32
    boxes = {2: np.array([[3.0, 5.0, 17.5, 12.0]]), 5: np.array([[0.0, 0.0, 8.0, 30.0]])}
    got = boxes_to_mask(boxes, orientation, canon_shape, size)

    depth, height, width = canon_shape
    expected_canon = centre_mask(boxes, canon_shape, (size / width, size / height))
    canon_mask = sitk.GetImageFromArray(expected_canon)
    canon_mask.CopyInformation(canon_image)
    expected = sitk.GetArrayFromImage(sitk.Resample(canon_mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    assert expected.sum() > 0
    np.testing.assert_array_equal(got, expected)


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory):
    """A randomly initialised mobilenet Faster R-CNN bundle that keeps every box (score threshold 0)."""
    torch.manual_seed(0)
    args = {"variant": "mobilenet_v3_large_fpn", "image_size": 64, "box_score_thresh": 0.0}
    config = ModelConfig(architecture="fasterrcnn", task="tumor", spatial_dims=2, arch_args=args,
                         labels={"background": 0, "tumor": 1}, patch_size=(64, 64),
                         intensity=Intensity(window=(-100.0, 400.0)),
                         inference={"score_threshold": 0.0, "batch_size": 4})
    return save_bundle(tmp_path_factory.mktemp("bundle") / "model", config, build_fasterrcnn(args).state_dict())


def _noisy_ct_and_liver(seed: int):
    """A flipped-direction noisy CT (6 x 48 x 40) and a box-shaped liver on two of its slices."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(60, 40, (6, 48, 40)).astype(np.float32)
    image = reoriented(sitk.GetImageFromArray(hu), (-1, 0, 0, 0, 1, 0, 0, 0, -1))
    liver = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    liver[2:4, 10:30, 8:25] = 1
    return image, liver


def test_detect_volume_is_clipped_to_the_liver_and_dispatched(detector_bundle):
    image, liver = _noisy_ct_and_liver(0)
    model = load_model(detector_bundle)
    got = detect_volume(image, model, roi_mask=liver)
    assert got.dtype == np.uint8 and got.shape == liver.shape
    assert got.any() and not (got & (liver == 0)).any()
    np.testing.assert_array_equal(predict_volume(image, model, roi_mask=liver, stage="tumor"), got)
    model.config.inference["rasterize"] = "box"            # unclipped boxes spill outside the liver
    unclipped = detect_volume(image, model, roi_mask=liver)
    assert (unclipped & (liver == 0)).any()
    np.testing.assert_array_equal(unclipped & liver, got)
    assert not detect_volume(image, model, roi_mask=np.zeros_like(liver)).any()


def test_liver_square_is_the_grown_box_made_square_and_crops_with_padding():
    roi = np.zeros((5, 40, 60), bool)
    roi[1:3, 10:20, 5:45] = True
    roi[4, 12, 30] = True
    # spacing (x, y, z) = (1, 2, 3) mm, margin 4 mm: x grows 4 px, y 2 px -> y 8..21 (14), x 1..48 (48)
    square = liver_square(roi, (1.0, 2.0, 3.0), 4.0)
    assert square == (8 - (48 - 14) // 2, 1, 48)
    assert liver_square(np.zeros_like(roi), (1.0, 1.0, 1.0), 4.0) is None
    pixels = np.arange(40 * 60, dtype=np.int16).reshape(40, 60)
    padded = np.pad(pixels, 100, constant_values=-7)
    y0, x0, side = square
    np.testing.assert_array_equal(crop_square(pixels, square, -7),
                                  padded[100 + y0:100 + y0 + side, 100 + x0:100 + x0 + side])


def test_a_training_box_in_the_square_comes_back_as_its_pixels():
    """convert-style inclusive box -> square pixels (training) -> network edges -> canonical mask (inference)."""
    from deepliver.train.detection_crop import square_boxes

    truth = np.zeros((1, 40, 60), np.uint8)
    truth[0, 11:17, 20:29] = 1                                  # inclusive x 20..28, y 11..16
    square, size = (-4, 6, 48), 128                             # upsampled: 48 canonical px -> 128
    (xa, ya, xb, yb), = square_boxes([(20, 11, 28, 16)], square, size)
    edges = np.array([[xa, ya, xb + 1, yb + 1]], float)
    got = rasterize_boxes({0: square_to_canonical(edges, square, size)}, truth.shape)
    np.testing.assert_array_equal(got, truth)


def test_detect_volume_with_the_liver_crop_runs_the_network_on_the_square(detector_bundle):
    image, liver = _noisy_ct_and_liver(1)
    model = load_model(detector_bundle)
    model.config.inference["crop"] = "liver"
    model.config.crop_margin_mm = 3.0
    got = detect_volume(image, model, roi_mask=liver)

    orientation = canonical_orientation(image)                  # expected: crop, detect, map back by hand
    canon_hu, canon_liver = orientation.apply(sitk.GetArrayFromImage(image)), orientation.apply(liver) > 0
    zs, ys, xs = (np.flatnonzero(canon_liver.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1)))
    y0, y1, x0, x1 = ys[0] - 3, ys[-1] + 4, xs[0] - 3, xs[-1] + 4   # spacing 1 mm: 3 px margin
    side = max(y1 - y0, x1 - x0)
    y0, x0 = y0 - (side - (y1 - y0)) // 2, x0 - (side - (x1 - x0)) // 2
    padded = np.pad(canon_hu, ((0, 0), (100, 100), (100, 100)), constant_values=-100.0)
    expected = np.zeros(canon_hu.shape, np.uint8)
    for z in range(zs[0], zs[-1] + 1):
        plane = padded[z, 100 + y0:100 + y0 + side, 100 + x0:100 + x0 + side]
        (boxes, _), = detect_slices(model, [resize_slice(window_slice(plane, Window(-100.0, 400.0)), 64)])
        scaled = boxes * side / 64 + np.array([x0, y0, x0, y0])
        expected[z] = centre_mask({0: scaled}, (1,) + canon_hu.shape[1:], (1.0, 1.0))[0]
    expected &= canon_liver
    assert expected.any()
    np.testing.assert_array_equal(got, to_image_order(expected, orientation))
