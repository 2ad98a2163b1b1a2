"""The label table: the one place that says what each label value means.

0 background, 1 liver, 2 tumor (Medical Segmentation Decathlon Task03 / LiTS). Each label carries a display
color and SNOMED CT codes (category, type, optional anatomic region) in the DICOM triplet form
``(CodeValue, CodingSchemeDesignator, CodeMeaning)`` used by DICOM SEG and by Slicer's terminology.
Every other part (the Slicer module, DICOM SEG writing, reports) reads this table; none keeps a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from deepliver.errors import LabelError

__all__ = [
    "Code", "Label", "LABELS", "BACKGROUND", "LIVER", "TUMOR", "label_by_name", "label_by_value",
    "check_label_values", "label_values", "slicer_terminology_entry",
]


@dataclass(frozen=True)
class Code:
    """A coded concept: value, coding scheme designator (``SCT`` = SNOMED CT) and meaning."""

    value: str
    scheme: str
    meaning: str

    def as_tuple(self) -> tuple[str, str, str]:
        return (self.value, self.scheme, self.meaning)


@dataclass(frozen=True)
class Label:
    """One entry of the label table. ``color`` is RGB in 0-255."""

    value: int
    name: str
    color: tuple[int, int, int]
    category: Optional[Code]
    type: Optional[Code]
    region: Optional[Code] = None

    @property
    def color_float(self) -> tuple[float, float, float]:
        """The color as RGB in 0-1, as VTK and Slicer take it."""
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]


_ANATOMICAL_STRUCTURE = Code("123037004", "SCT", "Anatomical Structure")
_ALTERED_STRUCTURE = Code("49755003", "SCT", "Morphologically Altered Structure")
_LIVER = Code("10200004", "SCT", "Liver")

BACKGROUND = Label(0, "background", (0, 0, 0), None, None)
LIVER = Label(1, "liver", (221, 130, 101), _ANATOMICAL_STRUCTURE, _LIVER)
TUMOR = Label(2, "tumor", (144, 238, 144), _ALTERED_STRUCTURE, Code("108369006", "SCT", "Neoplasm"), _LIVER)

LABELS: tuple[Label, ...] = (BACKGROUND, LIVER, TUMOR)
"""The whole table, ordered by value."""


def label_values() -> tuple[int, ...]:
    """The allowed label values, ascending."""
    return tuple(label.value for label in LABELS)


def label_by_name(name: str) -> Label:
    """The label called ``name`` (case-insensitive); ``KeyError`` naming the known labels otherwise."""
    for label in LABELS:
        if label.name == name.lower():
            return label
    raise KeyError(f"unknown label {name!r}; known labels: {', '.join(l.name for l in LABELS)}")


def label_by_value(value: int) -> Label:
    """The label with ``value``; ``KeyError`` otherwise."""
    for label in LABELS:
        if label.value == int(value):
            return label
    raise KeyError(f"unknown label value {value}; known values: {label_values()}")


def check_label_values(array: np.ndarray, path: str | None = None) -> None:
    """Raise ``LabelError`` naming ``path`` when ``array`` holds a value outside the label table.

    Works for any axis order. Non-integer values (NaN, 0.5) count as outside the table.
    """
    allowed = np.asarray(label_values())
    if array.dtype.kind in "ui" and array.size:  # fast path (np.unique sorts: ~0.7 s on a CT label)
        lo, hi = int(array.min()), int(array.max())
        if hi - lo < len(allowed) and set(range(lo, hi + 1)) <= set(allowed.tolist()):
            return
    values = np.unique(array)
    bad = [v for v in values.tolist() if not (float(v).is_integer() and int(v) in allowed)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:8]) + (" ..." if len(bad) > 8 else "")
        names = ", ".join(f"{l.value} {l.name}" for l in LABELS)
        raise LabelError(f"label values outside the table ({names}): {shown}", path)


def slicer_terminology_entry(label: Label) -> str:
    """The terminology string Slicer's ``vtkSegment`` tag ``TerminologyEntry`` takes for ``label``.

    Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier`` with each
    code as ``scheme^value^meaning``.
    """
    def fmt(code: Optional[Code]) -> str:
        return f"{code.scheme}^{code.value}^{code.meaning}" if code else "^^"

    return "~".join([
        "Segmentation category and type - 3D Slicer General Anatomy list",
        fmt(label.category), fmt(label.type), "^^",
        "Anatomic codes - DICOM master list", fmt(label.region), "^^",
    ])
