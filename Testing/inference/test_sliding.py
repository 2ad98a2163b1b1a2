"""``to_probabilities`` against torch's sigmoid and softmax, extreme logits included."""

import numpy as np
import pytest
import torch

from deepliver.inference.sliding import to_probabilities


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
