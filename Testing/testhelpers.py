"""Independent reference helpers shared by several test folders (importable: pytest's pythonpath has Testing/)."""

import numpy as np
import SimpleITK as sitk


def reoriented(image: sitk.Image, direction) -> sitk.Image:
    """The same physical image on a grid whose index axes follow ``direction`` (a signed permutation, 9 values
    row-major), made with SimpleITK's resampler, not with the code under test: nearest neighbour at exact
    voxel centres, so every voxel value is kept."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    size_in, spacing_in = np.array(image.GetSize()), np.array(image.GetSpacing())
    lo = np.array(image.GetOrigin())
    hi = lo + (size_in - 1) * spacing_in
    size, spacing, origin = [0] * 3, [0.0] * 3, lo.copy()
    for i in range(3):
        p = int(np.argmax(np.abs(d[:, i])))
        size[i], spacing[i] = int(size_in[p]), float(spacing_in[p])
        origin[p] = hi[p] if d[p, i] < 0 else lo[p]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkNearestNeighbor, origin.tolist(), spacing,
                         d.ravel().tolist(), 0, image.GetPixelID())
