"""The phantom's abdomen: body wall, thorax, organs and bones around the liver, in anatomy coordinates.

``draw_anatomy(rng)`` draws every parameter (sizes, positions, HU) of one case at real adult scale;
``paint_anatomy(canvas, anatomy, tumors)`` paints it in order on a ``Canvas`` (later structures win):
body wall (skin, subcutaneous fat, muscle) and visceral fat, paraspinal and psoas muscles, lungs and heart
above a domed diaphragm, bowel loops with gas, stomach with an air-fluid level, pancreas, portal vein,
the liver with vessels and tumors, gallbladder, IVC, aorta, kidneys (cortex, medulla, sinus fat), spleen
(HU close to liver), spine (vertebral bodies, discs, canal, arch) and ribs. Lengths are mm, HU values
Hounsfield units; anatomy axes are LPS (x left, y posterior, z superior), z = 0 at the liver's centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from deepliver.dataset.phantom_canvas import Canvas, Tissue
from deepliver.dataset.phantom_liver import LiverModel, Tumor, draw_liver, paint_liver
from deepliver.dataset.phantom_shapes import WaveField, ellipsoid_field, rotation, segment_distance

__all__ = ["Body", "Anatomy", "draw_anatomy", "paint_anatomy", "REAL_WIDTH_MM"]

REAL_WIDTH_MM = 380.0
"""Field of view (mm) that holds a real-size abdomen; smaller fields of view get a scaled-down body."""
_BIG = 1e4


@dataclass(frozen=True)
class Body:
    """Elliptic body outline (semi-axes ``a`` left-right, ``b_ant`` / ``b_post``) and wall thicknesses."""

    a: float
    b_ant: float
    b_post: float
    skin: float
    fat: float
    muscle: float

    def depth(self, X, Y) -> np.ndarray:
        """Depth (mm) below the skin along the ray from the body axis; negative outside the body."""
        x2, y2 = X * X, Y * Y
        inv_b2 = np.where(Y < 0, np.float32(self.b_ant ** -2), np.float32(self.b_post ** -2))
        r = np.sqrt(x2 + y2) + np.float32(1e-3)
        rn = np.sqrt(x2 * np.float32(self.a ** -2) + y2 * inv_b2) + np.float32(1e-6)
        return r / rn - r

    def fat_at(self, X, Y) -> np.ndarray:
        """Subcutaneous fat thickness (mm): thicker in front, thinner at the back."""
        front = np.clip(-Y / (np.abs(Y) + np.abs(X) + np.float32(1)), -1, 1)
        return np.float32(self.fat) * (1 + np.float32(0.5) * front)

    def cavity(self, X, Y) -> np.ndarray:
        """Depth (mm) inside the muscle wall; positive in the abdominal/thoracic cavity."""
        return self.depth(X, Y) - np.float32(self.skin + self.muscle) - self.fat_at(X, Y)

    def place(self, x: float, y: float, z: float) -> np.ndarray:
        """A position given for a nominal body (a = 165, b = 110 / 120 mm) moved onto this body."""
        return np.array([x * self.a / 165, y * (self.b_ant / 110 if y < 0 else self.b_post / 120), z])


@dataclass
class Blob:
    """An ellipsoid: centre, semi-axes (mm) and rotation."""

    center: np.ndarray
    semi: np.ndarray
    rot: np.ndarray

    def field(self, X, Y, Z, grow: float = 1.0, shift=(0.0, 0.0, 0.0)) -> np.ndarray:
        return ellipsoid_field(X, Y, Z, self.center + self.rot @ np.asarray(shift), self.semi * grow, self.rot)

    def bounds(self, pad: float = 0.0):
        reach = float(np.max(self.semi)) + pad
        return self.center - reach, self.center + reach


@dataclass
class Anatomy:
    """Every drawn parameter of one case (real scale)."""

    body: Body
    hu: dict
    liver: LiverModel
    domes: tuple[float, float]
    organs: dict
    bowel: list
    ribs: list
    wave: WaveField


def _blob(rng, body: Body, center, semi, angles, jitter=6.0, size=0.12) -> Blob:
    c = body.place(*center) + rng.normal(0, jitter, 3)
    s = np.asarray(semi, float) * rng.uniform(1 - size, 1 + size, 3)
    return Blob(c, s, rotation(np.asarray(angles, float) + rng.normal(0, 5, 3)))


def draw_palette(rng: np.random.Generator) -> dict:
    """HU of each tissue for one case (a contrast-enhanced, portal-venous-like CT)."""
    u = rng.uniform
    hu = {"skin": u(10, 40), "fat": u(-110, -85), "muscle": u(40, 60), "visceral_fat": u(-105, -80),
          "lung": u(-880, -820), "heart": u(110, 150), "bowel": u(10, 40), "gas": u(-1000, -960),
          "stomach_wall": u(50, 80), "stomach_fluid": u(5, 25), "pancreas": u(70, 100), "liver": u(55, 70),
          "gallbladder": u(0, 20), "ivc": u(120, 160), "aorta": u(150, 200), "cortex": u(150, 190),
          "medulla": u(90, 120), "sinus_fat": u(-80, -40), "bone": u(700, 1000), "marrow": u(180, 300),
          "disc": u(80, 110), "canal": u(20, 35)}
    hu["spleen"] = u(50, 60)
    hu["table"] = u(-200, 100)
    bright = rng.random() < 0.7
    hu["liver_vessel"] = hu["liver"] + (u(60, 110) if bright else -u(15, 30))
    like_spleen = min(hu["spleen"], hu["liver"] - 12)  # close to spleen, yet >= 9 HU from the liver
    hu["tumor"] = {"hypo": (20, 45), "hyper": (80, 110), "spleen-like": (like_spleen - 3, like_spleen + 3)}
    return hu


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one case's anatomy (real scale)."""
    u = rng.uniform
    body = Body(u(150, 175), u(100, 120), u(110, 125), u(2, 3), u(8, 28), u(8, 14))
    hu = draw_palette(rng)
    liver = draw_liver(rng, body.cavity, body.place, u(1200, 2000), hu["liver"], hu["liver_vessel"])
    top = liver.shape.top()
    domes = (top - 6, top - u(10, 25))
    organs = {
        "heart": _blob(rng, body, (15, -25, top + 55), (55, 45, 50), (0, 0, 20)),
        "stomach": _blob(rng, body, (58, -28, top - 50), (46, 34, 52), (0, 15, 30)),
        "gallbladder": _blob(rng, body, (-42, -48, -38), (14, 15, 30), (35, 0, 0), size=0.2)
        if rng.random() < 0.8 else None,
        "kidney_r": _blob(rng, body, (-70, 52, -62), (26, 23, 50), (0, -12, -25)),
        "kidney_l": _blob(rng, body, (70, 52, -45), (26, 23, 50), (0, 12, 25)),
        "spleen": _blob(rng, body, (92, 45, top - 55), (28, 48, 52), (0, 0, 40)),
        "air_level": u(0.2, 0.7),
        "aorta": (body.place(12, 32, 0), u(10, 13)),
        "ivc": (body.place(-22, 28, 0), u(11, 14)),
        "portal": (body.place(-5, 15, -45), body.place(-30, 5, -12), u(6, 8)),
        "pancreas": [body.place(-20, 5, -40), body.place(15, 15, -30), body.place(55, 35, -20), u(8, 12)],
        "spine": (body.place(0, 50, 0), u(19, 24), u(15, 19), u(28, 34), u(0, 30)),
    }
    return Anatomy(body, hu, liver, domes, organs, _draw_bowel(rng, body, liver.shape.z_range()[0]),
                   _draw_ribs(rng, top),
                   WaveField(rng, 5, (30, 80)))


def _draw_bowel(rng, body: Body, liver_bottom: float) -> list:
    """Bowel segments ``(start, end, radius, content)`` (content: fluid, gas or stool): the colon frame
    (ascending, hepatic flexure under the liver, transverse, descending) and chains of small-bowel loops
    packing the abdomen below the liver."""
    colon = [(-110, 10, -260), (-105, 0, -95), (-45, -70, -85), (40, -70, -75), (100, 0, -45), (110, 20, -260)]
    points = [body.place(x, y, liver_bottom + z + 75) + rng.normal(0, 5, 3) for x, y, z in colon]
    segments = [(p, q, rng.uniform(16, 24), ("gas", "stool")[int(rng.random() < 0.5)])
                for p, q in zip(points[:-1], points[1:])]
    lo, hi = body.place(-95, -95, -_BIG), body.place(95, 40, liver_bottom + 10)
    for _ in range(16):
        p = body.place(rng.uniform(-85, 85), rng.uniform(-90, 30), liver_bottom - rng.uniform(0, 200))
        for _ in range(8):
            q = np.clip(p + rng.normal(0, 22, 3), lo, hi)
            segments.append((p, q, rng.uniform(8, 14), "gas" if rng.random() < 0.15 else "fluid"))
            p = q
    return segments


def _draw_ribs(rng, top: float) -> list:
    """Ribs ``(side, z at the back, drop to the front, front angle deg)`` from above the liver down."""
    ribs, z, k = [], top + rng.uniform(40, 70), 0
    gap = rng.uniform(24, 30)
    while z > -70:
        front = -55 if k < 4 else (-25 if z > -30 else 10)
        for side in (-1, 1):
            ribs.append((side, z + rng.normal(0, 2), rng.uniform(70, 110), front + rng.normal(0, 5)))
        z -= gap
        k += 1
    return ribs


def paint_anatomy(canvas: Canvas, anat: Anatomy, tumors: list[Tumor]) -> None:
    """Paint the whole case on ``canvas``, outside in and back to front (see the module docstring)."""
    _paint_wall_and_thorax(canvas, anat)
    _paint_gut(canvas, anat)
    paint_liver(canvas, anat.liver, tumors)
    _paint_organs(canvas, anat)
    _paint_spine(canvas, anat.organs["spine"], anat.hu)
    _paint_ribs(canvas, anat.body, anat.ribs, anat.hu)
    _paint_table(canvas, anat.body, anat.hu["table"])


def _paint_wall_and_thorax(canvas: Canvas, anat: Anatomy) -> None:
    """Skin, fat, muscle and cavity fat; paraspinal and psoas muscles; lungs above the domes; heart."""
    body, hu, T = anat.body, anat.hu, Tissue
    canvas.paint(None, None, lambda X, Y, Z: _wall(body, hu, X, Y))
    for side in (-1, 1):
        c, s = body.place(36 * side, 85, 0), np.array([26.0, 20.0])
        canvas.paint(c - [s[0], s[1], _BIG], c + [s[0], s[1], _BIG],
                     _disc(c, s, T.MUSCLE, hu["muscle"]), only=(T.MUSCLE, T.FAT, T.VISCERAL_FAT))
        canvas.paint(body.place(36 * side - 25, 20, -_BIG), body.place(36 * side + 25, 70, -20),
                     _psoas(body.place(36 * side, 45, 0), hu["muscle"]), only=(T.VISCERAL_FAT,))
    zr, zl = anat.domes
    canvas.paint((-_BIG, -_BIG, min(zr, zl) - 95), (_BIG, _BIG, _BIG), _lungs(body, zr, zl, hu["lung"]),
                 only=(T.VISCERAL_FAT,), sparse=True)
    _paint_blob(canvas, anat.organs["heart"], [(0, T.HEART, hu["heart"])], only=(T.LUNG, T.VISCERAL_FAT))


def _paint_gut(canvas: Canvas, anat: Anatomy) -> None:
    """Bowel, stomach, pancreas and the extrahepatic portal vein, all over cavity fat."""
    hu, o, T = anat.hu, anat.organs, Tissue
    for segment in anat.bowel:
        _paint_bowel(canvas, segment, hu, anat.wave)
    _paint_stomach(canvas, o["stomach"], o["air_level"], hu)
    *chain, radius = o["pancreas"]
    for p0, p1 in zip(chain[:-1], chain[1:]):
        _paint_tube(canvas, p0, p1, radius, [(0, T.PANCREAS, hu["pancreas"])], only=(T.VISCERAL_FAT,))
    p0, p1, radius = o["portal"]
    _paint_tube(canvas, p0, p1, radius, [(0, T.VESSEL, hu["liver_vessel"] + 10)],
                only=(T.VISCERAL_FAT, T.PANCREAS))


def _paint_organs(canvas: Canvas, anat: Anatomy) -> None:
    """After the liver (so they carve it where they overlap): gallbladder, IVC, aorta, kidneys, spleen."""
    hu, o, T = anat.hu, anat.organs, Tissue
    if o["gallbladder"] is not None:
        _paint_blob(canvas, o["gallbladder"], [(0, T.GALLBLADDER, hu["gallbladder"] + 30),
                                               (2, T.GALLBLADDER, hu["gallbladder"])])
    for name in ("ivc", "aorta"):
        c, r = o[name]
        canvas.paint(c - [r * 1.2, r, _BIG], c + [r * 1.2, r, _BIG],
                     _disc(c, np.array([r * 1.2, r]), T.VESSEL, hu[name]))
    for name in ("kidney_r", "kidney_l"):
        _paint_kidney(canvas, o[name], hu)
    _paint_spleen(canvas, o["spleen"], hu["spleen"], anat.wave)


def _paint_kidney(canvas: Canvas, kidney: Blob, hu: dict) -> None:
    """Cortex, medulla and sinus fat at the medial hilum."""
    hilum = (-12.0 if kidney.center[0] > 0 else 12.0, 0.0, 0.0)

    def painter(X, Y, Z):
        f = kidney.field(X, Y, Z)
        yield f < 0, Tissue.KIDNEY, hu["cortex"]
        yield f < -6, Tissue.KIDNEY, hu["medulla"]
        yield kidney.field(X, Y, Z, 0.45, hilum) < 0, Tissue.KIDNEY, hu["sinus_fat"]
    canvas.paint(*kidney.bounds(2), painter)


def _wall(body: Body, hu: dict, X, Y):
    d = body.depth(X, Y)
    fat = body.fat_at(X, Y)
    yield d > 0, Tissue.SKIN, hu["skin"]
    yield d > body.skin, Tissue.FAT, hu["fat"]
    yield d > body.skin + fat, Tissue.MUSCLE, hu["muscle"]
    yield d > body.skin + fat + body.muscle, Tissue.VISCERAL_FAT, hu["visceral_fat"]


def _disc(center, semi, tissue: int, value: float) -> Callable:
    """A cylinder along z with an elliptic section."""
    return lambda X, Y, Z: [(((X - center[0]) / semi[0]) ** 2 + ((Y - center[1]) / semi[1]) ** 2 < 1,
                             tissue, value)]


def _psoas(center, value: float) -> Callable:
    def painter(X, Y, Z):
        radius = np.clip(np.float32(4) + np.float32(0.15) * (np.float32(-20) - Z), 0, 20)
        yield (X - center[0]) ** 2 + (Y - center[1]) ** 2 < radius ** 2, Tissue.MUSCLE, value
    return painter


def _lungs(body: Body, zr: float, zl: float, value: float) -> Callable:
    right, left = body.place(-60, 10, 0), body.place(60, 10, 0)

    def painter(X, Y, Z):
        k = np.float32(0.006)
        dome = np.maximum(zr - k * ((X - right[0]) ** 2 + (Y - right[1]) ** 2),
                          zl - k * ((X - left[0]) ** 2 + (Y - left[1]) ** 2))
        yield Z > np.maximum(dome, np.float32(min(zr, zl) - 90)), Tissue.LUNG, value  # over cavity fat only
    return painter


def _paint_blob(canvas: Canvas, blob: Blob, layers, only=None) -> None:
    """Layers ``(offset mm, tissue, HU)``: voxels with field < -offset."""
    canvas.paint(*blob.bounds(2), lambda X, Y, Z: _offset_layers(blob.field(X, Y, Z), layers), only=only)


def _paint_tube(canvas: Canvas, p0, p1, radius: float, layers, only=None) -> None:
    lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
    canvas.paint(lo, hi, lambda X, Y, Z: _offset_layers(segment_distance(X, Y, Z, p0, p1) - radius, layers),
                 only=only)


def _offset_layers(f, layers):
    for offset, tissue, value in layers:
        yield f < -offset, tissue, value


def _paint_bowel(canvas: Canvas, segment, hu: dict, wave: WaveField) -> None:
    """A bowel segment over cavity fat: an enhancing wall around fluid, gas, or mottled stool with gas."""
    p0, p1, radius, content = segment

    def painter(X, Y, Z):
        f = segment_distance(X, Y, Z, p0, p1) - np.float32(radius)
        yield f < 0, Tissue.BOWEL, hu["bowel"] + 30
        if content == "fluid":
            yield f < -2, Tissue.BOWEL, hu["bowel"]
        elif content == "gas":
            yield f < -2, Tissue.GAS, hu["gas"]
        else:
            w = wave(X * 6, Y * 6, Z * 6)
            yield f < -2, Tissue.BOWEL, np.float32(-60) + 70 * w
            yield (f < -2) & (w > 0.9), Tissue.GAS, hu["gas"]
    lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
    canvas.paint(lo, hi, painter, only=(Tissue.VISCERAL_FAT,))


def _paint_stomach(canvas: Canvas, blob: Blob, air_level: float, hu: dict) -> None:
    level = np.float32(blob.center[1] - air_level * blob.semi[1])

    def painter(X, Y, Z):
        f = blob.field(X, Y, Z)
        yield f < 0, Tissue.STOMACH, hu["stomach_wall"]
        yield f < -4, Tissue.STOMACH, hu["stomach_fluid"]
        yield (f < -4) & (Y < level), Tissue.GAS, hu["gas"]
    canvas.paint(*blob.bounds(2), painter, only=(Tissue.VISCERAL_FAT, Tissue.LUNG))


def _paint_spleen(canvas: Canvas, blob: Blob, value: float, wave: WaveField) -> None:
    """A crescent: the blob minus a medial ellipsoid (the hilum side), with a faint texture."""
    def painter(X, Y, Z):
        inside = (blob.field(X, Y, Z) < 0) & (blob.field(X, Y, Z, 0.9, (-32.0, 0.0, 0.0)) > 0)
        yield inside, Tissue.SPLEEN, np.float32(value) + 3 * wave(X, Y, Z)
    canvas.paint(*blob.bounds(2), painter)


def _paint_spine(canvas: Canvas, spine, hu: dict) -> None:
    center, a, b, period, phase = spine
    cx, cy = np.float32(center[0]), np.float32(center[1])
    canal_y = cy + np.float32(b + 9)

    def painter(X, Y, Z):
        disc = np.mod(Z - np.float32(phase), np.float32(period)) < np.float32(0.2 * period)
        rn = np.sqrt(((X - cx) / np.float32(a)) ** 2 + ((Y - cy) / np.float32(b)) ** 2)
        yield (rn < 1), Tissue.BONE, np.where(disc, np.float32(hu["disc"]), np.float32(hu["bone"]))
        yield (rn < 0.88) & ~disc, Tissue.BONE, hu["marrow"]
        rc = np.sqrt((X - cx) ** 2 + (Y - canal_y) ** 2)
        yield (rc < 15) & ~disc, Tissue.BONE, 0.6 * hu["bone"]
        yield (np.abs(X - cx) < 4) & (Y > canal_y) & (Y < canal_y + 30) & ~disc, Tissue.BONE, 0.7 * hu["bone"]
        yield rc < 9, Tissue.CANAL, hu["canal"]
    canvas.paint((cx - a - 16, cy - b - 1, -_BIG), (cx + a + 16, canal_y + 31, _BIG), painter)


def _paint_ribs(canvas: Canvas, body: Body, ribs: list, hu: dict) -> None:
    """All ribs in one pass: only voxels in the shell where ribs run (3 +- 4 mm inside the muscle wall's
    inner edge) are tested against each rib, which descends from the back (75 deg) to its front end."""
    if not ribs:
        return
    back = np.float32(np.radians(75.0))

    def painter(X, Y, Z):
        radial = (body.cavity(X, Y) + np.float32(3)) / np.float32(4)
        shape = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        idx = np.nonzero(np.broadcast_to(np.abs(radial) < 1, shape))
        x, y, z, rad = (np.broadcast_to(a, shape)[idx] for a in (X, Y, Z, radial))
        angles = {1: np.arctan2(y, x), -1: np.arctan2(y, -x)}
        code = np.zeros(x.shape, dtype=np.uint8)  # 1 cortex, 2 marrow
        for side, z_back, drop, front_deg in ribs:
            angle, front = angles[side], np.float32(np.radians(front_deg))
            z_rib = np.float32(z_back) - np.float32(drop) * (back - angle) / (back - front)
            rn = rad ** 2 + ((z - z_rib) / np.float32(5)) ** 2
            on = (angle > front) & (angle < back)
            np.maximum(code, np.where(on & (rn < 1), np.where(rn < 0.35, 2, 1), 0).astype(np.uint8), out=code)
        for value, tissue_hu in ((1, 0.8 * hu["bone"]), (2, hu["marrow"])):
            mask = np.zeros(shape, dtype=bool)
            mask[idx] = code == value
            yield mask, Tissue.BONE, tissue_hu
    z_lo = min(z - drop for _, z, drop, _ in ribs) - 8
    z_hi = max(z for _, z, _, _ in ribs) + 8
    canvas.paint((-body.a, -body.b_ant, z_lo), (body.a, body.b_post, z_hi), painter,
                 only=(Tissue.FAT, Tissue.MUSCLE, Tissue.VISCERAL_FAT, Tissue.LUNG))


def _paint_table(canvas: Canvas, body: Body, value: float) -> None:
    """The scanner table under the patient: a cradle (deepest in the middle), 8 mm thick."""
    y0 = np.float32(body.b_post + 3)

    def painter(X, Y, Z):
        top = y0 - np.float32(0.002) * X * X
        yield (Y > top) & (Y < top + 8) & (np.abs(X) < np.float32(0.85 * body.a)), Tissue.TABLE, value
    canvas.paint((-body.a, body.b_post - 60, -_BIG), (body.a, body.b_post + 12, _BIG), painter, only=(Tissue.AIR,))
