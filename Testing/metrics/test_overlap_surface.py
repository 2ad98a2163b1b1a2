"""Overlap and surface metrics against hand counts, brute force, SimpleITK and MONAI."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from scipy import ndimage

from deepliver.metrics import overlap_metrics, surface_distances, surface_metrics

SPACING_XYZ = (0.7, 1.1, 2.5)
SPACING_ZYX = SPACING_XYZ[::-1]


def test_overlap_counts_of_two_cubes():
    pred = np.zeros((12, 12, 12), bool)
    ref = np.zeros_like(pred)
    pred[2:8, 2:8, 2:8] = True  # 216 voxels
    ref[4:10, 4:10, 4:10] = True  # 216 voxels; overlap [4:8]^3 = 64
    tp, fp, fn = 64, 216 - 64, 216 - 64
    tn = 12 ** 3 - tp - fp - fn  # 1360
    m = overlap_metrics(pred, ref)
    assert m["dice"] == pytest.approx(2 * 64 / 432)
    assert m["iou"] == pytest.approx(64 / 368)
    assert m["precision"] == pytest.approx(64 / 216) and m["recall"] == pytest.approx(64 / 216)
    assert m["accuracy"] == pytest.approx((64 + 1360) / 1728)
    assert m["specificity"] == pytest.approx(tn / (tn + fp))


def test_empty_conventions():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:3, 2:4, 2:5] = True
    both = overlap_metrics(empty, empty)
    assert both["dice"] == 1.0 and both["iou"] == 1.0 and both["precision"] == 1.0 and both["recall"] == 1.0
    assert surface_metrics(empty, empty, SPACING_ZYX) == {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    missed = overlap_metrics(empty, full)
    assert missed["dice"] == 0.0 and missed["iou"] == 0.0 and missed["recall"] == 0.0
    assert missed["precision"] is None and missed["specificity"] == 1.0
    spurious = overlap_metrics(full, empty)
    assert spurious["dice"] == 0.0 and spurious["recall"] is None and spurious["precision"] == 0.0
    assert surface_metrics(empty, full, SPACING_ZYX) == {"hd": None, "hd95": None, "assd": None}
    assert surface_metrics(full, empty, SPACING_ZYX) == {"hd": None, "hd95": None, "assd": None}


def _brute_force(pred, ref, spacing_zyx):
    """All-pairs distances between boundary voxels (boundary = mask minus its 6-connected erosion)."""
    def points(mask):
        edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
        return np.argwhere(edge) * np.asarray(spacing_zyx)
    p, r = points(pred), points(ref)
    d = np.sqrt(((p[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    to_ref, to_pred = d.min(axis=1), d.min(axis=0)
    return {"hd": max(to_ref.max(), to_pred.max()),
            "hd95": max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)),
            "assd": np.concatenate([to_ref, to_pred]).mean()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distances_match_brute_force_on_tiny_masks(seed):
    rng = np.random.default_rng(seed)
    pred = ndimage.binary_dilation(rng.random((7, 9, 8)) < 0.05)
    ref = ndimage.binary_dilation(rng.random((7, 9, 8)) < 0.05)
    pred[0, 0, 0] = ref[6, 8, 7] = True  # masks touching the volume corners
    got = surface_metrics(pred, ref, SPACING_ZYX)
    expected = _brute_force(pred, ref, SPACING_ZYX)
    for key in ("hd", "hd95", "assd"):
        assert got[key] == pytest.approx(expected[key], rel=1e-9), key


def _speckled_pair():
    rng = np.random.default_rng(7)
    z, y, x = np.ogrid[:28, :44, :52]
    ref = ((z - 14) / 9.0) ** 2 + ((y - 22) / 16.0) ** 2 + ((x - 26) / 20.0) ** 2 < 1
    pred = ((z - 13) / 10.0) ** 2 + ((y - 23) / 15.0) ** 2 + ((x - 27) / 22.0) ** 2 < 1
    pred |= rng.random(pred.shape) < 0.002  # far speckles: hd95 conventions differ here
    pred[:, :, :2] |= ref[:, :, :2]
    ref[0] = True  # a structure touching the volume border
    return pred, ref


def test_hausdorff_matches_simpleitk():
    pred, ref = _speckled_pair()
    images = []
    for mask in (pred, ref):
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.SetSpacing(SPACING_XYZ)
        images.append(image)
    f = sitk.HausdorffDistanceImageFilter()
    f.Execute(*images)
    # SimpleITK measures between all voxels, not boundaries; the Hausdorff distance is the same
    assert surface_metrics(pred, ref, SPACING_ZYX)["hd"] == pytest.approx(f.GetHausdorffDistance(), rel=1e-9)


def test_hd_hd95_assd_match_monai():
    pred, ref = _speckled_pair()
    t = [torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, ref)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(*t, spacing=SPACING_ZYX).item()
        hd95 = compute_hausdorff_distance(*t, spacing=SPACING_ZYX, percentile=95).item()
        assd = compute_average_surface_distance(*t, symmetric=True, spacing=SPACING_ZYX).item()
    got = surface_metrics(pred, ref, SPACING_ZYX)
    assert got["hd"] == pytest.approx(hd, rel=1e-5)
    assert got["hd95"] == pytest.approx(hd95, rel=1e-5)
    assert got["assd"] == pytest.approx(assd, rel=1e-5)
    # the pooled-percentile convention gives a smaller number here: the choice matters and is stated
    pooled = np.percentile(np.concatenate(surface_distances(pred, ref, SPACING_ZYX)), 95)
    assert pooled < 0.9 * got["hd95"]


def test_distances_match_a_dense_distance_transform():
    pred, ref = _speckled_pair()
    edges = [m & ~ndimage.binary_erosion(m, border_value=0) for m in (pred, ref)]
    to_ref = ndimage.distance_transform_edt(~edges[1], sampling=SPACING_ZYX)[edges[0]]
    to_pred = ndimage.distance_transform_edt(~edges[0], sampling=SPACING_ZYX)[edges[1]]
    got_to_ref, got_to_pred = surface_distances(pred, ref, SPACING_ZYX)
    # both list boundary voxels in raster (z, y, x) order
    np.testing.assert_allclose(got_to_ref, to_ref, rtol=1e-9)
    np.testing.assert_allclose(got_to_pred, to_pred, rtol=1e-9)
