"""Rows of the Data table, from the series ``deepliver.imaging.list_series`` finds in a folder.

``series_rows`` turns each series (a ``SeriesInfo``: patient key, study date, description, modality,
number of slices ...) into display text; the widget only copies the text into its table, in the order
``list_series`` gives (patient, date, study, description).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

COLUMNS = ("Patient", "Date", "Description", "Modality", "Slices", "Size")
"""Column titles (the widget passes them through its translation function)."""


def format_date(value: Any) -> str:
    """``20240131`` -> ``2024-01-31``; other text unchanged; empty for None."""
    text = "" if value is None else str(value).strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def format_size(size: Any) -> str:
    """``(512, 512, 200)`` -> ``512 x 512 x 200``; empty when unknown."""
    try:
        return " x ".join(str(int(n)) for n in size)
    except (TypeError, ValueError):
        return ""


def folder_is_set(path: Any) -> bool:
    """False for an unset folder parameter (None, empty, or ``Path()`` which reads as ``.``)."""
    return path is not None and str(path).strip() not in ("", ".")


def series_rows(series: Sequence[Any], tr: Callable[[str], str] = str) -> list[tuple[str, ...]]:
    """One tuple of display strings per series, in ``COLUMNS`` order (``series`` order kept).

    ``tr`` translates the placeholder for a missing description.
    """
    rows = []
    for s in series:
        description = str(getattr(s, "description", "") or "") or tr("(no description)")
        rows.append((str(getattr(s, "patient_key", "") or ""), format_date(getattr(s, "study_date", None)),
                     description, str(getattr(s, "modality", "") or ""),
                     str(getattr(s, "num_slices", "") or ""), format_size(getattr(s, "size", None))))
    return rows
