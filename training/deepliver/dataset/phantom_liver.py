"""The phantom liver: a lobed, irregular organ with vessels and 0-16 tumors, in anatomy coordinates.

The liver is a smooth union of deformed ellipsoids (right lobe, left lobe, caudate/medial segment and an
optional inferior tip) whose boundary is perturbed by a smooth random field and clipped to the abdominal
cavity, then scaled to a drawn volume (1.2-2 L at real scale). Portal and hepatic vein trees are capsule
chains inside it; tumors are irregular blobs, painted only over liver, so label 2 is tumor within liver.
All lengths are mm at real adult scale (see ``phantom_shapes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Optional

import numpy as np

from deepliver.dataset.phantom_canvas import Canvas, Tissue
from deepliver.dataset.phantom_shapes import (WaveField, at_mask, ellipsoid_field, rotation, segment_distance,
                                              smin)

__all__ = ["LiverShape", "Tumor", "draw_liver", "draw_tumors", "paint_liver", "TUMOR_KINDS"]

TUMOR_KINDS = ("hypo", "hyper", "spleen-like")
_NOMINAL_LOBES = [  # center (x, y, z), semi-axes, rotation angles (deg about x, y, z), probability
    ((-62, 5, 0), (60, 68, 74), (0, 8, 0), 1.0),        # right lobe
    ((8, -45, 22), (62, 30, 36), (0, -10, -18), 1.0),   # left lobe, anterior, crossing the midline
    ((-22, 22, 14), (26, 28, 40), (0, 0, 10), 1.0),     # caudate / medial segment
    ((-80, -5, -52), (34, 40, 38), (10, 0, 0), 0.5),    # inferior tip of the right lobe (variant)
]


@dataclass
class LiverShape:
    """Signed field of the liver (mm, negative inside). ``cavity`` gives the depth below the abdominal
    wall (mm, positive inside the cavity) so the liver follows the body wall."""

    lobes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    wave: WaveField
    amp: float
    cavity: object
    blend: float = 14.0
    _z_range: Optional[tuple[float, float]] = dc_field(default=None, init=False, repr=False, compare=False)

    def field(self, X, Y, Z) -> np.ndarray:
        """The liver's signed field at anatomy points (broadcasting arrays, mm)."""
        f = None
        for center, semi, rot in self.lobes:
            fi = ellipsoid_field(X, Y, Z, center, semi, rot)
            f = fi if f is None else smin(f, fi, self.blend)
        reach = np.float32(self.wave.bound * self.amp)  # beyond f > reach the liver cannot be
        band = f < reach
        f = f + at_mask(band, lambda x, y, z: np.float32(self.amp) * self.wave(x, y, z), X, Y, Z)
        wall = at_mask(band, lambda x, y, z: np.float32(3.0) - self.cavity(x, y), X, Y, Z, fill=0.0)
        return np.maximum(f, wall)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Anatomy box (lo, hi) containing the liver."""
        reach = np.array([np.max(semi) for _, semi, _ in self.lobes])
        centers = np.array([c for c, _, _ in self.lobes])
        pad = reach[:, None] + self.wave.bound * self.amp + self.blend
        return (centers - pad).min(axis=0), (centers + pad).max(axis=0)

    def grid_points(self, step: float) -> np.ndarray:
        """Points ``(N, 3)`` of a regular grid (``step`` mm) over ``bounds()``."""
        lo, hi = self.bounds()
        axes = [np.arange(a, b, step) for a, b in zip(lo, hi)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)

    def volume_ml(self, step: float = 4.0) -> float:
        """Volume (mL at real scale) estimated on a ``step`` mm grid."""
        p = self.grid_points(step).astype(np.float32)
        return float(np.count_nonzero(self.field(p[:, 0], p[:, 1], p[:, 2]) < 0)) * step ** 3 / 1000.0

    def scaled(self, factor: float) -> "LiverShape":
        """The same shape grown by ``factor`` about the mean lobe centre (the cavity does not move)."""
        mid = np.mean([c for c, _, _ in self.lobes], axis=0)
        lobes = [(mid + (c - mid) * factor, s * factor, r) for c, s, r in self.lobes]
        return LiverShape(lobes, self.wave, self.amp * factor, self.cavity, self.blend * factor)

    def z_range(self, step: float = 4.0) -> tuple[float, float]:
        """Lowest and highest z (mm) inside the liver (computed once)."""
        if self._z_range is None:
            p = self.grid_points(step).astype(np.float32)
            z = p[self.field(p[:, 0], p[:, 1], p[:, 2]) < 0, 2]
            self._z_range = (float(z.min()), float(z.max()))
        return self._z_range

    def top(self) -> float:
        """Highest z (mm) inside the liver."""
        return self.z_range()[1]


@dataclass
class Tumor:
    """An irregular blob: radius ``radius`` (mm) modulated by ``1 + irregularity * wave``."""

    center: np.ndarray
    radius: float
    irregularity: float
    wave: WaveField
    kind: str
    hu: float
    necrosis: float = 0.0
    rim: float = 0.0

    def field(self, X, Y, Z) -> np.ndarray:
        dx, dy, dz = X - self.center[0], Y - self.center[1], Z - self.center[2]
        r = np.sqrt(dx * dx + dy * dy + dz * dz)
        return r - np.float32(self.radius) * (1 + np.float32(self.irregularity) * self.wave(X, Y, Z))


@dataclass
class LiverModel:
    """The liver's shape, HU, texture and vessels (``segments``: start, end, radius, HU)."""

    shape: LiverShape
    hu: float
    texture: WaveField
    fine_texture: WaveField
    segments: list = dc_field(default_factory=list)


def draw_liver(rng: np.random.Generator, cavity, place, volume_ml: float, hu: float,
               vessel_hu: float) -> LiverModel:
    """Draw a liver of ``volume_ml`` (real scale) with its vessel trees. ``place(x, y, z)`` maps nominal
    positions onto this body; ``cavity(X, Y)`` is the depth inside the abdominal wall (mm)."""
    lobes = []
    for center, semi, angles, p in _NOMINAL_LOBES:
        if rng.random() >= p:
            continue
        c = np.asarray(place(*center), dtype=float) + rng.normal(0, 5, 3)
        s = np.asarray(semi, dtype=float) * rng.uniform(0.85, 1.15, 3)
        lobes.append((c, s, rotation(np.asarray(angles) + rng.normal(0, 6, 3))))
    shape = LiverShape(lobes, WaveField(rng, 8, (50, 140)), float(rng.uniform(3, 6)), cavity)
    for step in (6.0, 6.0, 4.0):
        shape = shape.scaled((volume_ml / max(shape.volume_ml(step), 1.0)) ** (1 / 3))
    model = LiverModel(shape, hu, WaveField(rng, 6, (25, 70)), WaveField(rng, 6, (6, 15)))
    model.segments = _vessel_trees(rng, shape, place, vessel_hu)
    return model


def _vessel_trees(rng, shape: LiverShape, place, vessel_hu: float) -> list:
    """Hepatic veins from near the IVC at the top, portal branches from the hilum."""
    top = shape.top()
    segments: list = []
    ivc_top = np.asarray(place(-22, 28, 0), dtype=float)
    ivc_top[2] = top - 25
    for d in ((-1, -0.2, -0.4), (-0.3, -1, -0.5), (1, -0.9, -0.3)):
        _branch(rng, shape, ivc_top, np.asarray(d, float), 55, 5.5, 2, vessel_hu, segments)
    hilum = np.asarray(place(-30, 5, -12), dtype=float)
    for d in ((-1, 0.1, 0.3), (1, -0.7, 0.3)):
        _branch(rng, shape, hilum, np.asarray(d, float), 45, 6.0, 2, vessel_hu + 10, segments)
    return segments


def _branch(rng, shape, start, direction, length, radius, depth, hu, out) -> None:
    direction = direction / np.linalg.norm(direction)
    end = start + direction * length
    for _ in range(3):  # pull the end back inside the liver
        if shape.field(*end.astype(np.float32)[:, None])[0] < -radius:
            break
        length *= 0.6
        end = start + direction * length
    out.append((start, end, radius, hu))
    if depth == 0:
        return
    for _ in range(2):
        child = direction + rng.normal(0, 0.55, 3)
        _branch(rng, shape, end, child, length * rng.uniform(0.6, 0.8), radius * 0.68, depth - 1, hu, out)


def draw_tumors(rng: np.random.Generator, shape: LiverShape, count: int, min_diameter: float,
                hus: dict, in_view=None) -> list[Tumor]:
    """Draw ``count`` tumors (diameter 5-40 mm real scale, at least ``min_diameter``) inside the liver.

    About a third touch the liver surface. ``hus`` maps each kind of ``TUMOR_KINDS`` to a HU range;
    ``in_view(points) -> bool array`` keeps centres inside the output grid.
    """
    points = shape.grid_points(4.0)
    points = points + rng.uniform(-2, 2, points.shape)
    p32 = points.astype(np.float32)
    f = shape.field(p32[:, 0], p32[:, 1], p32[:, 2])
    inside = f < 0
    if in_view is not None:
        inside &= in_view(points)
    tumors: list[Tumor] = []
    for _ in range(count):
        radius = max(np.exp(rng.uniform(np.log(5), np.log(40))), min_diameter) / 2
        surface = rng.random() < 0.35
        ok = inside & ((f > -0.6 * radius) if surface else (f < -0.8 * radius))
        if not ok.any():
            ok = inside
        if not ok.any():
            break
        center = points[rng.choice(np.flatnonzero(ok))]
        kind = TUMOR_KINDS[rng.choice(3, p=(0.55, 0.25, 0.2))]
        hu = float(rng.uniform(*hus[kind]))
        necrosis = float(rng.uniform(10, 25)) if kind == "hypo" and radius > 8 and rng.random() < 0.5 else 0.0
        rim = float(rng.uniform(25, 50)) if kind == "hypo" and rng.random() < 0.3 else 0.0
        wave = WaveField(rng, 6, (1.2 * radius, 3.5 * radius))
        tumors.append(Tumor(center, radius, float(rng.uniform(0.06, 0.25)), wave, kind, hu, necrosis, rim))
    return tumors


def paint_liver(canvas: Canvas, liver: LiverModel, tumors: list[Tumor]) -> None:
    """Paint parenchyma (with texture), vessels (only over liver), then tumors (only over liver)."""
    shape = liver.shape

    def parenchyma(X, Y, Z):
        inside = shape.field(X, Y, Z) < 0
        if not inside.any():
            return
        texture = at_mask(inside, lambda x, y, z: 4 * liver.texture(x, y, z) + 2.5 * liver.fine_texture(x, y, z),
                          X, Y, Z)
        yield inside, Tissue.LIVER, np.float32(liver.hu) + texture

    canvas.paint(*shape.bounds(), parenchyma)
    for start, end, radius, hu in liver.segments:
        lo, hi = np.minimum(start, end) - radius, np.maximum(start, end) + radius
        canvas.paint(lo, hi, lambda X, Y, Z, s=start, e=end, r=radius, v=hu:
                     [(segment_distance(X, Y, Z, s, e) < r, Tissue.LIVER_VESSEL, v)], only=Tissue.HEPATIC)
    for k, tumor in enumerate(tumors[:Tissue.MAX_TUMORS]):
        reach = tumor.radius * (1 + tumor.wave.bound * tumor.irregularity) + 1
        canvas.paint(tumor.center - reach, tumor.center + reach,
                     lambda X, Y, Z, t=tumor, k=k: _tumor_layers(t, k, X, Y, Z), only=Tissue.HEPATIC)


def _tumor_layers(tumor: Tumor, k: int, X, Y, Z):
    f = tumor.field(X, Y, Z)
    inside = f < 0
    hu = np.float32(tumor.hu) + 5 * tumor.wave(X * 1.7, Y * 1.7, Z * 1.7)
    if tumor.necrosis:
        hu = hu - np.float32(tumor.necrosis) * np.clip(-f / tumor.radius - 0.4, 0, 1)
    if tumor.rim:
        hu = hu + np.float32(tumor.rim) * (f > -0.12 * tumor.radius)
    yield inside, Tissue.TUMOR + k, hu
