"""The phantom's canvas: a Hounsfield-unit array and a tissue-id array painted structure by structure.

Structures are painted in order (later ones win); ``only`` restricts a structure to voxels whose current
tissue is in a set (tumors only over liver, ribs only over wall or lung...). The label map is derived
from the final tissue ids, so it always agrees with what is visible: tissue ``LIVER`` and
``LIVER_VESSEL`` -> label 1, ``TUMOR + k`` -> label 2, anything else -> 0. Arrays are ``(z, y, x)``.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from deepliver.dataset.phantom_shapes import Frame

__all__ = ["Tissue", "Canvas", "Layer"]


class Tissue:
    """Tissue ids painted on the canvas (uint8). Tumors use ``TUMOR + k``, k < ``MAX_TUMORS``."""

    AIR, SKIN, FAT, MUSCLE, VISCERAL_FAT, LUNG, HEART, BOWEL, GAS, STOMACH = range(10)
    PANCREAS, GALLBLADDER, VESSEL, KIDNEY, SPLEEN, BONE, CANAL, TABLE = range(10, 18)
    LIVER, LIVER_VESSEL = 20, 21
    TUMOR, MAX_TUMORS = 32, 16

    WALL = (SKIN, FAT, MUSCLE, VISCERAL_FAT, LUNG)
    HEPATIC = (LIVER, LIVER_VESSEL)


Layer = tuple[np.ndarray, int, "float | np.ndarray"]
"""``(mask, tissue id, HU)``: mask and HU broadcastable to the block; HU a scalar or an array."""

Painter = Callable[[np.ndarray, np.ndarray, np.ndarray], Iterable[Layer]]
"""A structure: ``painter(X, Y, Z)`` (anatomy mm) yields the layers to paint, in order."""


class Canvas:
    """HU (float32) and tissue (uint8) arrays on ``frame``'s grid, initialised to air."""

    def __init__(self, frame: Frame, air_hu: float = -1000.0):
        self.frame = frame
        self.hu = np.full(frame.shape, air_hu, dtype=np.float32)
        self.tissue = np.zeros(frame.shape, dtype=np.uint8)

    def paint(self, lo: Optional[Sequence[float]], hi: Optional[Sequence[float]], painter: Painter,
              only: Optional[Sequence[int]] = None, sparse: bool = False) -> None:
        """Paint ``painter`` over the anatomy box ``lo..hi`` (mm; None for the whole grid).

        ``only``: tissue ids that may be painted over (None: any), as they were before this structure.
        ``sparse`` (with ``only``): call ``painter`` with 1-D coordinates of the allowed voxels only, which
        is cheaper when they are a small part of the box. Work is done block by block (``Frame.blocks``).
        """
        allowed = None if only is None else np.asarray(sorted(only), dtype=np.uint8)
        for block in self.frame.blocks(lo, hi):
            hu, tissue = self.hu[block], self.tissue[block]
            coords = self.frame.coords(block)
            if allowed is None:
                self._apply(hu, tissue, painter(*coords), None)
                continue
            before = np.isin(tissue, allowed)  # the tissue before this structure decides
            if not sparse:
                self._apply(hu, tissue, painter(*coords), before)
                continue
            idx = np.nonzero(before)
            if idx[0].size:
                points = [np.broadcast_to(c, hu.shape)[idx] for c in coords]
                for mask, tissue_id, value in painter(*points):
                    mask = np.broadcast_to(mask, idx[0].shape)
                    sel = tuple(i[mask] for i in idx)
                    hu[sel] = value if np.ndim(value) == 0 else np.broadcast_to(value, mask.shape)[mask]
                    tissue[sel] = tissue_id

    @staticmethod
    def _apply(hu: np.ndarray, tissue: np.ndarray, layers: Iterable[Layer], before: Optional[np.ndarray]):
        for mask, tissue_id, value in layers:
            mask = np.broadcast_to(mask, hu.shape)
            if before is not None:
                mask = mask & before
            np.copyto(hu, np.asarray(value, dtype=np.float32), where=mask)
            np.copyto(tissue, np.uint8(tissue_id), where=mask)

    def label(self) -> np.ndarray:
        """The label map ``(z, y, x)`` uint8: 0 background, 1 liver, 2 tumor (tumor only inside liver)."""
        out = np.zeros(self.tissue.shape, dtype=np.uint8)
        t = self.tissue
        out[(t == Tissue.LIVER) | (t == Tissue.LIVER_VESSEL)] = 1
        out[(t >= Tissue.TUMOR) & (t < Tissue.TUMOR + Tissue.MAX_TUMORS)] = 2
        return out

    def tumors_present(self) -> list[int]:
        """Indices ``k`` of the tumors that kept at least one voxel."""
        ids = np.unique(self.tissue[self.tissue >= Tissue.TUMOR])
        return [int(i) - Tissue.TUMOR for i in ids if i < Tissue.TUMOR + Tissue.MAX_TUMORS]
