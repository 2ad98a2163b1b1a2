"""Boxes around the 2D connected components of a mask, slice by slice.

A box is ``[x_min, y_min, x_max, y_max]`` in pixel indices of its slice, *inclusive* of the component's
extreme pixels (a single pixel at column 3, row 5 is ``[3, 5, 3, 5]``); ``0 <= x_min <= x_max < width``.
Components are 8-connected within a slice (pixels touching by an edge or a corner belong together) and
never connect across slices.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["Box", "slice_boxes", "volume_boxes", "scale_box"]

_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True  # 8-connected within a (y, x) plane, nothing across z


class Box(NamedTuple):
    """An inclusive pixel box and the number of pixels of its component."""

    x_min: int
    y_min: int
    x_max: int
    y_max: int
    pixels: int

    @property
    def width(self) -> int:
        """Width in pixels (``x_max - x_min + 1``)."""
        return self.x_max - self.x_min + 1

    @property
    def height(self) -> int:
        """Height in pixels (``y_max - y_min + 1``)."""
        return self.y_max - self.y_min + 1

    def as_list(self) -> list[int]:
        """``[x_min, y_min, x_max, y_max]``."""
        return [self.x_min, self.y_min, self.x_max, self.y_max]


def volume_boxes(mask: np.ndarray, min_pixels: int = 1) -> dict[int, list[Box]]:
    """Boxes of the 8-connected 2D components of each ``(y, x)`` slice of a ``(z, y, x)`` boolean mask.

    Returns ``{z: [Box, ...]}`` for the slices with at least one kept box, boxes sorted by
    ``(y_min, x_min, y_max, x_max)``. Components with fewer than ``min_pixels`` pixels are dropped.
    The work is done on the mask's bounding box only.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"expected a (z, y, x) mask, got shape {mask.shape}")
    if not mask.any():
        return {}
    zs, ys, xs = (np.flatnonzero(mask.any(axis=other)) for other in ((1, 2), (0, 2), (0, 1)))
    z0, y0, x0 = int(zs[0]), int(ys[0]), int(xs[0])
    crop = mask[z0:zs[-1] + 1, y0:ys[-1] + 1, x0:xs[-1] + 1]
    labels, count = ndimage.label(crop, structure=_IN_PLANE_8)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    out: dict[int, list[Box]] = {}
    for index, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None or sizes[index] < min_pixels:
            continue
        zsl, ysl, xsl = found
        box = Box(x0 + xsl.start, y0 + ysl.start, x0 + xsl.stop - 1, y0 + ysl.stop - 1, int(sizes[index]))
        out.setdefault(z0 + zsl.start, []).append(box)
    for boxes in out.values():
        boxes.sort(key=lambda b: (b.y_min, b.x_min, b.y_max, b.x_max))
    return dict(sorted(out.items()))


def slice_boxes(mask: np.ndarray, min_pixels: int = 1) -> list[Box]:
    """Boxes of the 8-connected components of one ``(y, x)`` boolean mask (see ``volume_boxes``)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a (y, x) mask, got shape {mask.shape}")
    return volume_boxes(mask[None], min_pixels).get(0, [])


def scale_box(box: Box, scale_x: float, scale_y: float, width: int, height: int) -> Box:
    """The box covering ``box``'s pixel area after resizing its slice by ``scale_x`` / ``scale_y``.

    Pixel ``i`` covers ``[i, i + 1)``; the area ``[x_min, x_max + 1)`` maps to
    ``[x_min * s, (x_max + 1) * s)``, whose inclusive pixels are ``floor(x_min * s)`` to
    ``ceil((x_max + 1) * s) - 1``, clipped to the new ``width`` / ``height``. ``pixels`` is scaled by
    ``scale_x * scale_y`` and rounded (at least 1).
    """
    def span(lo: int, hi: int, s: float, n: int) -> tuple[int, int]:
        a = min(max(int(math.floor(lo * s + 1e-9)), 0), n - 1)
        b = min(max(int(math.ceil((hi + 1) * s - 1e-9)) - 1, a), n - 1)
        return a, b

    x0, x1 = span(box.x_min, box.x_max, scale_x, width)
    y0, y1 = span(box.y_min, box.y_max, scale_y, height)
    return Box(x0, y0, x1, y1, max(1, int(round(box.pixels * scale_x * scale_y))))
