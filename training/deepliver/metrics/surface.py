"""Surface-distance metrics in mm: Hausdorff (``hd``), 95th-percentile Hausdorff (``hd95``) and average
symmetric surface distance (``assd``). No torch.

Surfaces are the masks' boundary voxels: voxels of the mask with at least one of their 6 face
neighbours outside it (``mask & ~binary_erosion(mask)``, outside the volume counting as background), as
MONAI's ``get_mask_edges``. For every boundary voxel of one mask, its distance is the exact Euclidean
distance in mm (voxel centres scaled by the spacing) to the nearest boundary voxel of the other, found with
a KD-tree over the boundary voxels (``scipy.spatial.KDTree``, as MONAI does on CPU; the same numbers as
``distance_transform_edt(sampling=spacing)`` without its cost on the whole bounding box when a few
speckles stretch it).

- ``hd``: the largest distance in either direction.
- ``hd95``: MONAI's convention: the 95th percentile (linear interpolation) of the prediction→reference
  distances and of the reference→prediction distances, then the larger of the two. (The other common
  convention, the 95th percentile of both directions pooled, gives smaller values on speckled masks.)
- ``assd``: the mean of both directions' distances pooled, as MONAI's
  ``compute_average_surface_distance(symmetric=True)``.

Empty masks: both empty → 0.0 for all three; exactly one empty → None (JSON null).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy.spatial import KDTree

__all__ = ["SURFACE_METRICS", "HD95_DEFINITION", "boundary", "bounding_box", "surface_distances",
           "surface_metrics"]

SURFACE_METRICS = ("hd", "hd95", "assd")
HD95_DEFINITION = ("max of the two directed 95th percentiles of boundary-voxel distances "
                   "(MONAI compute_hausdorff_distance, percentile=95)")


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a bool 3D mask: in the mask with a 6-neighbour outside it (or outside the array)."""
    padded = np.pad(mask, 1)
    c = padded[1:-1, 1:-1, 1:-1]
    interior = (c & padded[:-2, 1:-1, 1:-1] & padded[2:, 1:-1, 1:-1] & padded[1:-1, :-2, 1:-1]
                & padded[1:-1, 2:, 1:-1] & padded[1:-1, 1:-1, :-2] & padded[1:-1, 1:-1, 2:])
    return mask & ~interior


def bounding_box(mask: np.ndarray, margin: int = 0) -> Optional[tuple[slice, ...]]:
    """Slices of the True voxels' bounding box grown by ``margin`` voxels (clipped), or None if empty."""
    box = []
    for axis in range(mask.ndim):
        nz = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if nz.size == 0:
            return None
        box.append(slice(max(0, int(nz[0]) - margin), min(mask.shape[axis], int(nz[-1]) + 1 + margin)))
    return tuple(box)


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing_zyx: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each prediction boundary voxel to the reference boundary, and back.

    ``pred``/``ref``: bool ``(z, y, x)`` masks, both non-empty; ``spacing_zyx``: voxel size in mm in
    ``(z, y, x)`` order (reverse ITK's ``(x, y, z)``).
    """
    box = bounding_box(pred | ref, margin=1)
    # The box keeps a one-voxel background margin (or meets the array border), so boundaries found on
    # the crop are those of the full masks.
    edge_pred, edge_ref = boundary(pred[box]), boundary(ref[box])
    scale = np.asarray(spacing_zyx, dtype=np.float64)
    points_pred = np.argwhere(edge_pred) * scale
    points_ref = np.argwhere(edge_ref) * scale
    to_ref = KDTree(points_ref, leafsize=32).query(points_pred, k=1, workers=-1)[0]
    to_pred = KDTree(points_pred, leafsize=32).query(points_ref, k=1, workers=-1)[0]
    return to_ref, to_pred


def surface_metrics(pred: np.ndarray, ref: np.ndarray,
                    spacing_zyx: Sequence[float]) -> dict[str, Optional[float]]:
    """``hd``, ``hd95`` and ``assd`` in mm (module docstring) of bool ``(z, y, x)`` masks."""
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return {"hd": 0.0, "hd95": 0.0, "assd": 0.0}
    if not (has_pred and has_ref):
        return {"hd": None, "hd95": None, "assd": None}
    to_ref, to_pred = surface_distances(pred, ref, spacing_zyx)
    return {
        "hd": float(max(to_ref.max(), to_pred.max())),
        "hd95": float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))),
        "assd": float((to_ref.sum() + to_pred.sum()) / (to_ref.size + to_pred.size)),
    }
