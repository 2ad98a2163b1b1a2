"""2D connected-component boxes: hand-built masks with known boxes, and scipy as an independent reference."""

import numpy as np
from scipy import ndimage

from deepliver.dataset.boxes import Box, scale_box, slice_boxes, volume_boxes


def _known_mask():
    """A 64x64 (y, x) mask and its boxes [x_min, y_min, x_max, y_max] with pixel counts, by construction."""
    m = np.zeros((64, 64), dtype=bool)
    m[10:15, 5:10] = True                      # plain rectangle
    m[20:23, 20:23] = True                     # two squares touching only at a corner:
    m[23:26, 23:26] = True                     #   8-connected -> one box
    m[40, 3] = True                            # single pixel
    m[60:64, 0:3] = True                       # at the bottom-left border
    m[0:2, 62:64] = True                       # at the top-right border
    m[30:32, 40:42] = True                     # two blobs one pixel apart:
    m[30:32, 43:45] = True                     #   two boxes
    expected = {(5, 10, 9, 14): 25, (20, 20, 25, 25): 18, (3, 40, 3, 40): 1, (0, 60, 2, 63): 12,
                (62, 0, 63, 1): 4, (40, 30, 41, 31): 4, (43, 30, 44, 31): 4}
    return m, expected


def test_known_boxes_8_connected_inclusive():
    mask, expected = _known_mask()
    boxes = slice_boxes(mask)
    assert {tuple(b.as_list()): b.pixels for b in boxes} == expected
    assert len(boxes) == len(expected)


def test_min_pixels_drops_small_components():
    mask, expected = _known_mask()
    kept = {tuple(b.as_list()) for b in slice_boxes(mask, min_pixels=5)}
    assert kept == {k for k, n in expected.items() if n >= 5}


def test_no_connection_across_slices():
    vol = np.zeros((4, 16, 16), dtype=bool)
    vol[1, 2:5, 2:5] = True
    vol[2, 3:6, 3:6] = True       # overlaps slice 1's blob in 3D: still its own box
    boxes = volume_boxes(vol)
    assert sorted(boxes) == [1, 2]
    assert boxes[1] == [Box(2, 2, 4, 4, 9)] and boxes[2] == [Box(3, 3, 5, 5, 9)]
    assert volume_boxes(np.zeros((3, 5, 5), bool)) == {}


def test_random_masks_match_scipy_per_slice():
    rng = np.random.default_rng(0)
    vol = ndimage.binary_opening(rng.random((6, 48, 40)) > 0.6, np.ones((1, 2, 1))) | (rng.random((6, 48, 40)) > 0.97)
    for min_pixels in (1, 3):
        ours = volume_boxes(vol, min_pixels)
        for z in range(vol.shape[0]):
            labels, n = ndimage.label(vol[z], structure=np.ones((3, 3)))
            ref = set()
            for i, (ys, xs) in enumerate(ndimage.find_objects(labels), start=1):
                if np.count_nonzero(labels == i) >= min_pixels:
                    ref.add((xs.start, ys.start, xs.stop - 1, ys.stop - 1))
            assert {tuple(b.as_list()) for b in ours.get(z, [])} == ref
            assert len(ours.get(z, [])) == len(ref)


def test_scale_box_covers_the_scaled_pixel_area():
    box = Box(3, 4, 5, 9, 18)
    assert scale_box(box, 2.0, 2.0, 128, 128)[:4] == (6, 8, 11, 19)   # [3, 6) -> [6, 12)
    assert scale_box(box, 0.5, 0.5, 32, 32)[:4] == (1, 2, 2, 4)       # [3, 6) -> [1.5, 3); [4, 10) -> [2, 5)
    assert scale_box(Box(0, 0, 63, 63, 1), 0.5, 0.5, 32, 32)[:4] == (0, 0, 31, 31)
    assert scale_box(Box(7, 7, 7, 7, 1), 0.1, 0.1, 6, 6)[:4] == (0, 0, 0, 0)   # never empty
