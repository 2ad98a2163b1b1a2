"""The structures of the Structures table: one per ``deepliver.labels`` entry, plus custom ones.

A structure is a segment of the working segmentation with a label value. The standard structures come
from ``deepliver.labels`` at run time (this module keeps no label table of its own); a custom structure
takes the next value above every value in use and above every standard value, so it can never be
mistaken for liver or tumor in a saved label map. Label values live in each segment's tags
(``LABEL_VALUE_TAG``), so they survive a scene save and reload.

Saving merges the segments into one label map. ``ExportSegmentsToLabelmapNode`` writes ``1 + i`` for the
``i``-th segment it is given, later segments overwriting earlier ones where they overlap; ``export_order``
and ``remap_exported`` turn that into the structures' own values, with the higher value (tumor over
liver) winning overlaps.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

LABEL_VALUE_TAG = "DeepLiver.LabelValue"
"""Segment tag holding the structure's label value (decimal text)."""

MAX_LABEL_VALUE = 255
"""Saved label maps are uint8."""


@dataclass(frozen=True)
class Structure:
    """One row of the Structures table.

    ``color`` is RGB in 0-1 (as VTK takes it); ``terminology`` is Slicer's terminology entry string
    (empty for custom structures); ``custom`` is True for structures the user added.
    """

    value: int
    name: str
    color: tuple[float, float, float]
    terminology: str = ""
    custom: bool = False

    @property
    def color255(self) -> tuple[int, int, int]:
        """The color as RGB in 0-255, for Qt."""
        return tuple(int(round(c * 255)) for c in self.color)  # type: ignore[return-value]


def display_name(label_name: str) -> str:
    """``liver`` -> ``Liver``: how a label name is shown as a segment name."""
    return label_name[:1].upper() + label_name[1:]


def standard_structures() -> list[Structure]:
    """The structures of ``deepliver.labels`` (background excluded), ascending by value."""
    from deepliver.labels import BACKGROUND, LABELS, slicer_terminology_entry

    return [Structure(label.value, display_name(label.name), tuple(label.color_float),
                      slicer_terminology_entry(label))
            for label in LABELS if label.value != BACKGROUND.value]


def reserved_values() -> set[int]:
    """Every value of ``deepliver.labels``: custom structures never take one of these."""
    from deepliver.labels import label_values

    return set(label_values())


def next_free_value(used: Iterable[int], reserved: Iterable[int] = ()) -> int:
    """One above the largest value in ``used`` and ``reserved`` (never reuses a deleted value)."""
    return max([0, *used, *reserved]) + 1


def custom_color(value: int) -> tuple[float, float, float]:
    """A distinct, stable color for custom value ``value``: hues spaced by the golden angle."""
    hue = (value * 0.618033988749895) % 1.0
    return tuple(colorsys.hsv_to_rgb(hue, 0.55, 0.95))  # type: ignore[return-value]


def custom_structure(name: str, existing: Sequence[Structure], reserved: Iterable[int] = ()) -> Structure:
    """A new custom structure called ``name`` with the next free value.

    Raises ``ValueError`` for an empty name, a name already in ``existing`` (case-insensitive), or when
    no value up to ``MAX_LABEL_VALUE`` is left.
    """
    name = " ".join(name.split())
    if not name:
        raise ValueError("type a name for the new structure first")
    taken = {s.name.lower(): s for s in existing}
    if name.lower() in taken:
        raise ValueError(f"a structure called {taken[name.lower()].name!r} already exists "
                         f"(label value {taken[name.lower()].value}); choose another name")
    value = next_free_value((s.value for s in existing), reserved)
    if value > MAX_LABEL_VALUE:
        raise ValueError(f"no label value left: saved label maps are 8-bit (values up to {MAX_LABEL_VALUE})")
    return Structure(value, name, custom_color(value), "", True)


def parse_label_value(text: Optional[str]) -> Optional[int]:
    """The label value stored in a segment tag, or None when the tag is absent or not 1..255."""
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= MAX_LABEL_VALUE else None


def export_order(structures: Iterable[Structure]) -> list[Structure]:
    """The structures ascending by value: export them in this order so that higher values win overlaps.

    Raises ``ValueError`` when two structures share a value (they would merge in the saved label).
    """
    ordered = sorted(structures, key=lambda s: s.value)
    for a, b in zip(ordered, ordered[1:]):
        if a.value == b.value:
            raise ValueError(f"structures {a.name!r} and {b.name!r} both have label value {a.value}; "
                             "delete one of them before saving")
    return ordered


def remap_exported(array: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Map an exported merged label map (``1 + i`` for the ``i``-th exported segment) to label values.

    ``array`` is any axis order (Slicer gives ``k, j, i`` = ``z, y, x``); ``values[i]`` is the label value
    of the ``i``-th exported segment. Returns uint8 of the same shape. Raises ``ValueError`` when the
    array holds a value with no segment (the export and the segment list disagree).
    """
    lut = np.zeros(len(values) + 1, dtype=np.uint8)
    lut[1:] = np.asarray(values, dtype=np.int64)
    top = int(array.max()) if array.size else 0
    if int(array.min() if array.size else 0) < 0 or top > len(values):
        raise ValueError(f"exported label map holds value {top} but only {len(values)} segment(s) were exported")
    return lut[array.astype(np.intp, copy=False)]


def structures_for_values(values: Iterable[int], existing: Sequence[Structure]) -> list[Structure]:
    """Structures to add so that every value in ``values`` (from a saved label) has a segment.

    Standard values get their standard structure; unknown values get a custom ``Label <value>``.
    Values already in ``existing`` and 0 (background) are skipped.
    """
    have = {s.value for s in existing}
    standard = {s.value: s for s in standard_structures()}
    added = []
    for value in sorted({int(v) for v in values} - have - {0}):
        added.append(standard.get(value) or Structure(value, f"Label {value}", custom_color(value), "", True))
    return added
