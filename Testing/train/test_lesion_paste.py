"""Lesion copy-paste augmentation (``SampleSource.paste``): where a lesion lands, the values it gets, what it
leaves alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from deepliver.train.data import PASTE_RING, CachedCase, SampleSource


def _cached(name: str, image: np.ndarray, label: np.ndarray) -> CachedCase:
    fg = {t: {"voxels": int(m.sum()), "slices": np.flatnonzero(m.any(axis=(1, 2))).tolist(),
              "samples": np.argwhere(m).tolist()} for t, m in (("liver", label >= 1), ("tumor", label == 2))}
    return CachedCase(name, image, label, {"pad_value": 0.0, "foreground": fg})


def _cases():
    """A recipient with a liver (0.6) and no tumour; a donor whose liver is 0.5 with one disc lesion (0.2)."""
    shape = (7, 48, 48)
    r_image, r_label = np.full(shape, 0.1, np.float32), np.zeros(shape, np.uint8)
    r_label[:, 4:44, 6:42] = 1
    r_image[r_label == 1] = 0.6
    d_image, d_label = np.full(shape, 0.1, np.float32), np.zeros(shape, np.uint8)
    d_label[:, 8:40, 8:40] = 1
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 22) ** 2 + (xx - 25) ** 2 <= 16
    d_label[2:5][:, disc] = 2
    d_image[d_label == 1], d_image[d_label == 2] = 0.5, 0.2
    return _cached("recipient", r_image, r_label), _cached("donor", d_image, d_label), disc


def test_a_pasted_lesion_keeps_its_shape_and_contrast_and_lands_on_the_liver():
    recipient, donor, disc = _cases()
    source = SampleSource([recipient, donor], "tumor", (32, 32), context=1, lesion_paste=1.0)
    center = np.array([3, 24, 24])
    image, target = source._extract(recipient, center)
    assert not target.any()
    liver = recipient.label[2:5, 8:40, 8:40] == 1                    # the patch around center, as _extract cuts it
    pasted = 0
    for seed in range(20):
        out, new = source.paste(recipient, center, image, target, np.random.default_rng(seed))
        lesion = new[0] > 0
        if not lesion.any():
            continue
        pasted += 1
        # the disc, moved (and maybe mirrored: it is symmetric), in the centre slice of the sample
        (ys, xs), (dy, dx) = np.nonzero(lesion), np.nonzero(disc)
        assert lesion.sum() == disc.sum() and np.ptp(ys) == np.ptp(dy) and np.ptp(xs) == np.ptp(dx)
        assert (liver[1][lesion]).all()
        # its value: 0.2 on a 0.5 liver becomes 0.2 - 0.5 + 0.6 on a 0.6 liver; the ring of donor liver pasted
        # around it takes the recipient's liver value, so nothing else changes anywhere
        np.testing.assert_allclose(out[1][lesion], 0.3, atol=1e-6)
        changed = out != image
        assert np.array_equal(changed[1], lesion)
        # the slices beside it: the lesion's own neighbours (slice 1 or 5 of the donor has none)
        assert all(not c.any() or np.array_equal(c, lesion) for c in changed) and changed.sum() >= 2 * disc.sum()
        assert np.array_equal(new, target + (out != image)[1][None])   # target: the old one + the lesion
        again, again_new = source.paste(recipient, center, image, target, np.random.default_rng(seed))
        assert np.array_equal(again, out) and np.array_equal(again_new, new)
    assert pasted >= 15


def test_paste_never_overwrites_a_tumour_nor_leaves_the_liver():
    recipient, donor, _ = _cases()
    label = recipient.label.copy()
    label[:, 10:30, 10:30] = 2                                           # most of the liver is tumour already
    image = recipient.image.copy()
    image[label == 2] = 0.9
    recipient = _cached("recipient", image, label)
    source = SampleSource([recipient, donor], "tumor", (32, 32), context=1, lesion_paste=1.0)
    center = np.array([3, 24, 24])
    sample, target = source._extract(recipient, center)
    free = label[2:5, 8:40, 8:40] == 1
    for seed in range(30):
        out, new = source.paste(recipient, center, sample, target, np.random.default_rng(seed))
        changed = out != sample
        assert not (changed & ~free).any()
        assert (new >= target).all()
        grown = ndimage.binary_dilation(new[0] > target[0], np.ones((3, 3), bool), iterations=PASTE_RING)
        assert not (changed[1] & ~grown).any()


def test_paste_is_drawn_with_its_probability_and_only_for_2d_tumour_samples():
    recipient, donor, _ = _cases()
    plain = SampleSource([recipient, donor], "tumor", (32, 32), context=1)
    half = SampleSource([recipient, donor], "tumor", (32, 32), context=1, lesion_paste=0.5)
    differ = 0
    for seed in range(60):
        a, ta = plain.draw(np.random.default_rng(seed))
        b, tb = half.draw(np.random.default_rng(seed))
        differ += not np.array_equal(a, b)
    assert 10 <= differ <= 40
    with pytest.raises(ValueError, match="2D samples of the tumor task"):
        SampleSource([recipient, donor], "liver", (32, 32), lesion_paste=0.5)
    with pytest.raises(ValueError, match="2D samples of the tumor task"):
        SampleSource([recipient, donor], "tumor", (4, 32, 32), lesion_paste=0.5)
