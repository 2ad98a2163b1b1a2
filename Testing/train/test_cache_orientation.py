"""The training cache holds arrays in the order the network sees at inference (``data.orientation``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk

from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.dataset.slices import canonical_array
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.resample import resample_to_geometry, spacing_geometry
from deepliver.models.bundle import Intensity
from deepliver.train.cache import Preprocessing, cache_case, list_cases


def test_cache_is_canonical_for_a_flipped_scan_and_index_order_on_request(tmp_path):
    p = make_phantom(3, shape=(40, 36, 10), spacing=(1.5, 1.5, 3.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, -1))
    export_case(p.image, p.label, tmp_path / "ds")
    case = list_cases(tmp_path / "ds")[0]
    prep = Preprocessing((3.0, 3.0, None), Intensity(), "liver", 10.0)
    grid = spacing_geometry(Geometry.from_image(p.label), (3.0, 3.0, None))
    resampled = sitk.GetArrayFromImage(resample_to_geometry(p.label, grid, is_label=True))
    canonical = canonical_array(resample_to_geometry(p.label, grid, is_label=True))    # slices.py's own code
    assert not np.array_equal(canonical, resampled)                  # the direction really moves the voxels
    entry = cache_case(case, prep, tmp_path / "cache")
    np.testing.assert_array_equal(np.load(entry / "label.npy"), canonical)
    other = cache_case(case, replace(prep, orientation="index"), tmp_path / "cache")
    assert other != entry                                             # the orientation is part of the key
    np.testing.assert_array_equal(np.load(other / "label.npy"), resampled)
