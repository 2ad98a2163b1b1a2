"""``to_probabilities`` against torch's sigmoid and softmax, extreme logits included; ``predict_slices``' batches
(neighbour channels, padding) against slices stacked and padded by hand."""

import numpy as np
import pytest
import torch

from deepliver.inference.sliding import predict_slices, to_probabilities


@pytest.mark.parametrize("channels", [1, 2, 3])
def test_probabilities_equal_torchs(channels):
    rng = np.random.default_rng(channels)
    logits = (rng.normal(0, 4, (3, channels, 5, 7)) * rng.choice([1, 30], (3, 1, 5, 7))).astype(np.float32)
    logits[0, :, 0, 0] = np.float32(-1e4), *([np.float32(1e4)] * (channels - 1))   # exp overflows
    t = torch.from_numpy(logits)
    expected = torch.sigmoid(t) if channels == 1 else torch.softmax(t, dim=1)
    expected = expected[:, 1:2] if channels == 2 else expected
    got = to_probabilities(logits.copy())
    assert got.dtype == np.float32 and got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("nz, context, batch_size, divisor", [(11, 1, 4, 8), (5, 2, 16, 1), (3, 0, 2, 4)])
def test_predict_slices_feeds_neighbour_channels_padded_and_maps_outputs_back(nz, context, batch_size, divisor):
    """Every batch the network sees equals the slices z - context .. z + context (clamped at the ends) padded
    symmetrically to a multiple of ``divisor`` with ``pad_value``; the output is the network's (2-channel
    softmax foreground) cropped back, slice z at z."""
    rng = np.random.default_rng(nz)
    volume = rng.normal(size=(nz, 13, 10)).astype(np.float32)
    seen = []

    def network(batch):
        seen.append(batch.copy())
        weights = np.arange(1, batch.shape[1] + 1, dtype=np.float32)[None, :, None, None]
        fg = (batch * weights).sum(axis=1)
        return np.stack([np.zeros_like(fg), fg], axis=1)

    got = predict_slices(volume, network, context=context, batch_size=batch_size, divisor=divisor, pad_value=-7.0)
    inputs = np.concatenate(seen)
    assert [len(b) for b in seen] == [min(batch_size, nz - s) for s in range(0, nz, batch_size)]
    py, px = (-13) % divisor, (-10) % divisor
    for z in range(nz):
        stack = np.stack([volume[min(max(z + c, 0), nz - 1)] for c in range(-context, context + 1)])
        expected = np.pad(stack, [(0, 0), (py // 2, py - py // 2), (px // 2, px - px // 2)], constant_values=-7.0)
        np.testing.assert_array_equal(inputs[z], expected)
        fg = (stack * np.arange(1, 2 * context + 2)[:, None, None]).sum(axis=0)
        np.testing.assert_allclose(got[0, z], 1 / (1 + np.exp(-fg)), rtol=1e-5, atol=1e-6)
    assert got.shape == (1, nz, 13, 10)
