"""Shared helpers for the metrics tests."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk


def _write_label(array, path, spacing=(0.8, 0.9, 2.5), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def write_label():
    """``write_label(array, path, spacing, origin)``: write a (z, y, x) uint8 label with spacing (x, y, z)
    and origin (mm); returns the path."""
    return _write_label


@pytest.fixture
def label_pair():
    """A prediction and a reference label map (z, y, x) with liver and tumor, and the spacing (x, y, z)."""
    z, y, x = np.ogrid[:24, :40, :48]
    ref = (((z - 12) / 9.0) ** 2 + ((y - 20) / 15.0) ** 2 + ((x - 24) / 18.0) ** 2 < 1).astype(np.uint8)
    pred = (((z - 11) / 9.0) ** 2 + ((y - 21) / 14.0) ** 2 + ((x - 25) / 18.0) ** 2 < 1).astype(np.uint8)
    ref[10:14, 15:22, 15:22] = 2
    pred[10:14, 16:22, 15:22] = 2
    pred[6:8, 26:28, 30:32] = 2
    return pred, ref, (0.8, 0.9, 2.5)
