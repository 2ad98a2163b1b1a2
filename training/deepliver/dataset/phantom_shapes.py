"""Building blocks of the phantom generator: the voxel grid seen from anatomy space, and shape fields.

Anatomy is modelled in *anatomy coordinates*: millimetres at real adult scale, LPS axes (x to the
patient's left, y posterior, z superior), the body axis at ``x = y = 0`` and ``z = 0`` at the liver's
centre. A ``Frame`` maps voxel indices of the output grid to anatomy coordinates
(``q = (origin + direction @ (spacing * index) - shift) / scale``), so a shape is the same physical size
whatever the spacing or direction, and each structure is evaluated only on the index box that covers it.

Arrays are numpy ``(z, y, x)``. Coordinate arrays returned by ``Frame.coords`` are float32 and
*broadcastable* to the block's shape: on an axis-aligned grid ``X`` has shape ``(1, 1, nx)``, which keeps
most fields cheap; shape functions must therefore combine them with broadcasting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

from deepliver.imaging.geometry import Geometry

__all__ = ["Frame", "Box", "WaveField", "ellipsoid_radius", "ellipsoid_field", "segment_distance", "smin",
           "rotation", "at_mask"]

Box = tuple[slice, slice, slice]
"""An index box ``(z, y, x)`` of the output grid."""


@dataclass(frozen=True)
class Frame:
    """Voxel index ``(x, y, z)`` -> anatomy coordinates (mm at real scale): ``q = q0 + steps @ index``."""

    shape: tuple[int, int, int]
    q0: np.ndarray
    steps: np.ndarray

    @classmethod
    def from_geometry(cls, geometry: Geometry, shift: Sequence[float], scale: float) -> "Frame":
        """The frame of ``geometry`` whose anatomy sits at physical ``shift + scale * q`` (mm)."""
        q0 = (np.asarray(geometry.origin) - np.asarray(shift, dtype=float)) / scale
        steps = geometry.direction_matrix * np.asarray(geometry.spacing) / scale
        return cls(geometry.shape, q0, steps)

    def to_index(self, q: np.ndarray) -> np.ndarray:
        """Continuous voxel index ``(x, y, z)`` of anatomy points ``q`` (``(..., 3)``)."""
        return np.linalg.solve(self.steps, (np.asarray(q, dtype=float) - self.q0).T).T

    def contains(self, q: np.ndarray, margin: float = 0.0) -> np.ndarray:
        """Whether anatomy points ``q`` (``(N, 3)``) fall inside the grid, ``margin`` voxels from its edges."""
        idx = self.to_index(q)
        upper = np.array(self.shape[::-1], dtype=float) - 1 - margin
        return np.all((idx >= margin) & (idx <= upper), axis=-1)

    def bounds(self, box: Optional[Box] = None) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy box (lo, hi, mm) around the voxel centres of ``box`` (default: the whole grid)."""
        zs, ys, xs = box if box is not None else self.full()
        corners = np.array([[(s.start, s.stop - 1)[(c >> a) & 1] for a, s in enumerate((xs, ys, zs))]
                            for c in range(8)], dtype=float)
        q = self.q0 + corners @ self.steps.T
        return q.min(axis=0), q.max(axis=0)

    def box(self, lo: Sequence[float], hi: Sequence[float], within: Optional[Box] = None) -> Optional[Box]:
        """The index box covering the anatomy box ``lo..hi`` (mm), clipped to ``within`` (default: the
        grid); None if empty. The anatomy box is first clipped to the grid's own anatomy bounds."""
        within = within if within is not None else self.full()
        g_lo, g_hi = self.bounds(within)
        lo = np.maximum(np.asarray(lo, dtype=float), g_lo - 1)
        hi = np.minimum(np.asarray(hi, dtype=float), g_hi + 1)
        if np.any(hi < lo):
            return None
        corners = np.array([[(lo, hi)[(c >> a) & 1][a] for a in range(3)] for c in range(8)])
        idx = self.to_index(corners)
        first = np.floor(idx.min(axis=0)).astype(int)
        last = np.ceil(idx.max(axis=0)).astype(int)
        out = []
        for a, s in zip((2, 1, 0), within):
            start, stop = max(int(first[a]), s.start), min(int(last[a]) + 1, s.stop)
            if stop <= start:
                return None
            out.append(slice(start, stop))
        return tuple(out)  # type: ignore[return-value]

    def full(self) -> Box:
        """The whole grid as a box."""
        return tuple(slice(0, n) for n in self.shape)  # type: ignore[return-value]

    def blocks(self, lo: Optional[Sequence[float]] = None, hi: Optional[Sequence[float]] = None,
               max_voxels: int = 1 << 21) -> Iterator[Box]:
        """Index boxes covering the anatomy box ``lo..hi`` (None: the whole grid), z-slab by z-slab.

        Each slab holds at most ``max_voxels`` voxels of the full plane and its box is recomputed, so on an
        oblique grid a tall thin structure is evaluated near itself rather than over the whole plane.
        """
        first = self.full() if lo is None else self.box(lo, hi)
        if first is None:
            return
        zs = first[0]
        step = max(1, max_voxels // (self.shape[1] * self.shape[2]))
        for z in range(zs.start, zs.stop, step):
            slab = (slice(z, min(z + step, zs.stop)), first[1], first[2])
            block = slab if lo is None else self.box(lo, hi, within=slab)
            if block is not None:
                yield block

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomy coordinates ``X, Y, Z`` (float32, broadcastable to the box's ``(z, y, x)`` shape)."""
        ranges = [np.arange(s.start, s.stop, dtype=np.float32) for s in (box[2], box[1], box[0])]  # x, y, z
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        out = []
        for row in range(3):
            total = np.full((1, 1, 1), self.q0[row], dtype=np.float32)
            for axis in range(3):
                step = self.steps[row, axis]
                if abs(step) > 1e-12:
                    total = total + (np.float32(step) * ranges[axis]).reshape(shapes[axis])
            out.append(total)
        return out[0], out[1], out[2]


def at_mask(mask: np.ndarray, fn, X, Y, Z, fill: float = 0.0) -> np.ndarray:
    """``fn(x, y, z)`` evaluated only where ``mask`` is True (1-D coordinate arrays), ``fill`` elsewhere;
    the result has the broadcast shape of ``mask`` and the coordinates. Saves work on sparse masks."""
    shape = np.broadcast_shapes(np.shape(mask), np.shape(X), np.shape(Y), np.shape(Z))
    idx = np.nonzero(np.broadcast_to(mask, shape))
    out = np.full(shape, fill, dtype=np.float32)
    if idx[0].size:
        out[idx] = fn(*(np.broadcast_to(c, shape)[idx] for c in (X, Y, Z)))
    return out


def rotation(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation matrix from angles (degrees) about x, then y, then z."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _local(X, Y, Z, center, rot: Optional[np.ndarray]):
    """Coordinates relative to ``center`` in the frame whose axes are ``rot``'s columns."""
    dx, dy, dz = X - np.float32(center[0]), Y - np.float32(center[1]), Z - np.float32(center[2])
    if rot is None:
        return dx, dy, dz
    r = np.asarray(rot, dtype=np.float32)
    return (r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz, r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
            r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz)


def ellipsoid_radius(X, Y, Z, center, semi, rot: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalised radius: 1 on the ellipsoid with semi-axes ``semi`` (mm), < 1 inside."""
    u, v, w = _local(X, Y, Z, center, rot)
    a, b, c = (np.float32(s) for s in semi)
    return np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)


def ellipsoid_field(X, Y, Z, center, semi, rot: Optional[np.ndarray] = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid: negative inside, about -min(semi) at the centre."""
    return (ellipsoid_radius(X, Y, Z, center, semi, rot) - 1) * np.float32(min(semi))


def segment_distance(X, Y, Z, p0: Sequence[float], p1: Sequence[float]) -> np.ndarray:
    """Distance (mm) from each point to the segment ``p0``-``p1``."""
    p0, p1 = np.asarray(p0, dtype=np.float32), np.asarray(p1, dtype=np.float32)
    v = p1 - p0
    dx, dy, dz = X - p0[0], Y - p0[1], Z - p0[2]
    t = np.clip((dx * v[0] + dy * v[1] + dz * v[2]) / max(float(v @ v), 1e-6), 0, 1)
    return np.sqrt((dx - t * v[0]) ** 2 + (dy - t * v[1]) ** 2 + (dz - t * v[2]) ** 2)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth minimum (polynomial, blend width ``k`` mm): a smooth union of two signed fields."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b + (a - b) * h - np.float32(k) * h * (1 - h)


class WaveField:
    """A smooth random field with zero mean and unit standard deviation: a sum of plane cosine waves.

    ``wavelength`` (mm, min and max) sets how fast it varies. Deterministic for a given generator state.
    """

    def __init__(self, rng: np.random.Generator, waves: int = 6, wavelength: tuple[float, float] = (20, 60)):
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = rng.uniform(*wavelength, size=waves)
        self.k = (2 * np.pi * directions / lengths[:, None]).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=waves).astype(np.float32)
        self.amp = np.float32(np.sqrt(2.0 / waves))
        self.bound = float(np.sqrt(2.0 * waves))  # the largest possible absolute value of the field

    def __call__(self, X, Y, Z) -> np.ndarray:
        total = None
        for k, phase in zip(self.k, self.phase):
            wave = np.cos(k[0] * X + k[1] * Y + k[2] * Z + phase)
            total = wave if total is None else total + wave
        return total * self.amp

    def at(self, points: np.ndarray) -> np.ndarray:
        """The field at anatomy points ``(N, 3)``."""
        p = np.asarray(points, dtype=np.float32)
        return self(p[:, 0], p[:, 1], p[:, 2])
