"""Geometry against SimpleITK's own index/physical transforms; comparisons and their messages."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.errors import GeometryError
from deepliver.imaging import Geometry, geometry_differences, same_geometry


@pytest.mark.parametrize("direction", ["identity", "flipped", "oblique"])
def test_index_physical_round_trip_matches_simpleitk(make_ct, direction):
    image = make_ct(direction)
    geometry = Geometry.from_image(image)
    indices = np.array([[0, 0, 0], [47, 39, 11], [3.5, 7.25, 2.0], [10, 0, 5]])
    points = geometry.index_to_physical(indices)
    for index, point in zip(indices, points):
        np.testing.assert_allclose(point, image.TransformContinuousIndexToPhysicalPoint(index.tolist()), atol=1e-9)
    np.testing.assert_allclose(geometry.physical_to_index(points), indices, atol=1e-9)


def test_shape_and_array_order(make_ct):
    image = make_ct()
    geometry = Geometry.from_image(image)
    assert geometry.size == (48, 40, 12) and geometry.shape == (12, 40, 48)
    array = sitk.GetArrayFromImage(image)
    rebuilt = geometry.image_from_array(array)
    assert same_geometry(rebuilt, image, tol=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(rebuilt), array)
    with pytest.raises(GeometryError, match=r"array shape \(z, y, x\) \(40, 12, 48\) differs"):
        geometry.image_from_array(np.zeros((40, 12, 48)))


def test_dict_round_trip_through_json(make_ct):
    geometry = Geometry.from_image(make_ct("oblique"))
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry


def test_differences_are_named_with_tolerance(make_ct):
    a = Geometry.from_image(make_ct())
    b = Geometry(a.size, a.spacing, (a.origin[0] + 5e-5, a.origin[1], a.origin[2]), a.direction)
    assert same_geometry(a, b)  # within the default 1e-4 mm
    c = Geometry(a.size, (0.7, 0.8, 3.0), (a.origin[0] + 1.0, a.origin[1], a.origin[2]), a.direction)
    diffs = geometry_differences(a, c)
    assert len(diffs) == 2 and diffs[0].startswith("spacing") and diffs[1].startswith("origin")
    assert "(0.7, 0.8, 2.5) vs (0.7, 0.8, 3)" in diffs[0]
    assert not same_geometry(a, c)


def test_voxel_volume_and_invalid_geometry():
    geometry = Geometry((10, 10, 10), (0.5, 0.5, 2.0), (0, 0, 0))
    assert geometry.voxel_volume_ml == pytest.approx(0.5 * 0.5 * 2.0 / 1000)
    with pytest.raises(GeometryError, match="spacing must be positive"):
        Geometry((10, 10, 10), (0.5, 0.0, 2.0), (0, 0, 0))
    with pytest.raises(GeometryError, match="3D geometry needs"):
        Geometry((10, 10), (0.5, 0.5), (0, 0))
