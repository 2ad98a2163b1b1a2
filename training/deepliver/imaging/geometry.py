"""Geometry of a 3D image: size, spacing (mm), origin (mm) and direction, in LPS as DICOM and ITK use.

``size``, ``spacing`` and ``origin`` are in ITK order ``(x, y, z)``; ``direction`` is the 3x3 matrix
row-major (``direction[3*r + c]``), whose columns are the physical directions of the x, y, z index axes.
Numpy arrays inside deepliver are in ``(z, y, x)`` order; ``Geometry.shape`` gives that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np
import SimpleITK as sitk

from deepliver.errors import GeometryError

__all__ = ["Geometry", "same_geometry", "geometry_differences", "DEFAULT_TOLERANCE"]

DEFAULT_TOLERANCE = 1e-4
"""Default tolerance: mm for spacing/origin (absolute), unitless for direction cosines."""


@dataclass(frozen=True)
class Geometry:
    """Where a voxel grid sits in patient space (LPS). All tuples are in ``(x, y, z)`` order."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in self.direction))
        if len(self.size) != 3 or len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise GeometryError(
                f"a 3D geometry needs 3 sizes, spacings, origins and 9 direction values; got "
                f"{len(self.size)}, {len(self.spacing)}, {len(self.origin)}, {len(self.direction)}")
        if min(self.spacing) <= 0:
            raise GeometryError(f"spacing must be positive, got {self.spacing}")

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def from_image(cls, image: sitk.Image) -> "Geometry":
        """The geometry of a 3D ``SimpleITK.Image``."""
        if image.GetDimension() != 3:
            raise GeometryError(f"expected a 3D image, got {image.GetDimension()}D")
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Geometry":
        """Inverse of ``to_dict``."""
        return cls(tuple(data["size"]), tuple(data["spacing"]), tuple(data["origin"]),
                   tuple(np.asarray(data["direction"], dtype=float).ravel()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (direction as 9 numbers, row-major)."""
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin),
                "direction": list(self.direction)}

    # --- use ----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy shape ``(z, y, x)`` of an array on this grid."""
        return (self.size[2], self.size[1], self.size[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        """Direction as a 3x3 array; column ``i`` is the physical direction of index axis ``i``."""
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (spacing in mm)."""
        return float(np.prod(self.spacing)) / 1000.0

    def index_to_physical(self, index_xyz: Sequence[float]) -> np.ndarray:
        """Physical LPS point (mm) of a continuous index ``(x, y, z)``; accepts an ``(N, 3)`` array too."""
        idx = np.asarray(index_xyz, dtype=float)
        return np.asarray(self.origin) + (idx * np.asarray(self.spacing)) @ self.direction_matrix.T

    def physical_to_index(self, point: Sequence[float]) -> np.ndarray:
        """Continuous index ``(x, y, z)`` of a physical LPS point (mm); accepts ``(N, 3)`` too."""
        p = np.asarray(point, dtype=float) - np.asarray(self.origin)
        return (p @ self.direction_matrix) / np.asarray(self.spacing)

    def apply(self, image: sitk.Image) -> sitk.Image:
        """Set this geometry's spacing, origin and direction on ``image`` (sizes must match) and return it."""
        if tuple(image.GetSize()) != self.size:
            raise GeometryError(f"image size {image.GetSize()} differs from geometry size {self.size}")
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """A ``SimpleITK.Image`` with this geometry from a ``(z, y, x)`` array of shape ``self.shape``."""
        if tuple(array.shape) != self.shape:
            raise GeometryError(f"array shape (z, y, x) {tuple(array.shape)} differs from {self.shape}")
        return self.apply(sitk.GetImageFromArray(np.ascontiguousarray(array)))


GeometryLike = Union[Geometry, sitk.Image]


def _as_geometry(g: GeometryLike) -> Geometry:
    return g if isinstance(g, Geometry) else Geometry.from_image(g)


def geometry_differences(a: GeometryLike, b: GeometryLike, tol: float = DEFAULT_TOLERANCE) -> list[str]:
    """Human-readable differences between two geometries (empty when they agree within ``tol``).

    Spacing and origin are compared in mm (absolute), direction cosines with the same ``tol``.
    """
    a, b = _as_geometry(a), _as_geometry(b)
    out = []
    if a.size != b.size:
        out.append(f"size {a.size} vs {b.size}")
    if not np.allclose(a.spacing, b.spacing, rtol=0, atol=tol):
        out.append(f"spacing {_fmt(a.spacing)} vs {_fmt(b.spacing)} mm")
    if not np.allclose(a.origin, b.origin, rtol=0, atol=tol):
        out.append(f"origin {_fmt(a.origin)} vs {_fmt(b.origin)} mm")
    if not np.allclose(a.direction, b.direction, rtol=0, atol=tol):
        out.append(f"direction {_fmt(a.direction)} vs {_fmt(b.direction)}")
    return out


def same_geometry(a: GeometryLike, b: GeometryLike, tol: float = DEFAULT_TOLERANCE) -> bool:
    """True when ``a`` and ``b`` (Geometry or SimpleITK images) agree within ``tol`` (see above)."""
    return not geometry_differences(a, b, tol)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"
