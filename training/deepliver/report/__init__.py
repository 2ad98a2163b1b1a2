"""Comparison reports: the architecture table as Markdown, CSV and a self-contained HTML page, with
matplotlib figures (no torch).

``write_report(report, out)`` writes, atomically, into the folder ``out``::

    report.md          the tables and the figures (figures/*.png), for reading on GitHub or in an editor
    report.html        the same, self-contained: inline CSS, figures as base64 PNG, nothing external
    report.csv         one row per model x label x metric: n, n_null, mean, std, median, pooled (tables.py)
    cases.csv          one row per model x case x label with every metric
    report.json        everything above as data (models with their per-case metrics and summaries, the seed
                       project's published numbers, the metric definitions)
    figures/*.png      overlays of each model's best and worst case, per-case box plots, training curves

Build a ``Report`` from ``ModelResult`` columns (``deepliver.compare`` does it from training runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from deepliver.report.figures import render_figures
from deepliver.report.html import html_report
from deepliver.report.model import (SEED_PUBLISHED, SEED_SOURCE, TABLE_ROWS, ModelResult, Overlay, Report, TableRow,
                                    format_value, row_value)
from deepliver.report.tables import SUMMARY_FIELDS, case_rows, markdown_report, summary_rows, table_cells, to_csv

__all__ = ["ModelResult", "Overlay", "Report", "TableRow", "TABLE_ROWS", "SEED_PUBLISHED", "SEED_SOURCE",
           "format_value", "row_value", "table_cells", "summary_rows", "report_data", "write_report",
           "REPORT_FILES"]

REPORT_FILES = ("report.md", "report.html", "report.csv", "cases.csv", "report.json")


def report_data(report: Report) -> dict[str, Any]:
    """``report.json``'s content."""
    from deepliver import __version__
    from deepliver.metrics import DEFINITIONS

    models = [{"name": m.name, "architecture": m.architecture, "task": m.task, "labels": list(m.labels),
               "details": m.details, "summary": {label: m.summary[label] for label in m.labels},
               "cases": [{"case": c["case"], "metrics": {label: c["metrics"][label] for label in m.labels}}
                         for c in m.cases]} for m in report.models]
    return {"title": report.title, "dataset": report.dataset, "cases": list(report.cases),
            "case_selection": report.case_selection, "notes": list(report.notes), "created": report.created,
            "models": models, "seed_published": {"source": SEED_SOURCE, "values": SEED_PUBLISHED},
            "definitions": DEFINITIONS, "deepliver": {"version": __version__}}


def write_report(report: Report, out: str | os.PathLike) -> dict[str, Path]:
    """Write the report files (module docstring) into the folder ``out`` (created when missing); returns
    ``{file name: path}`` (figures as ``figures/<stem>.png``)."""
    from deepliver.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    figures = render_figures(report)
    links = {}
    for stem, (caption, png) in figures.items():
        path = out / "figures" / f"{stem}.png"
        write_bytes_atomic(path, png)
        written[f"figures/{stem}.png"] = path
        links[caption] = f"figures/{stem}.png"
    texts = {"report.md": markdown_report(report, links), "report.html": html_report(report, figures),
             "report.csv": to_csv(SUMMARY_FIELDS, summary_rows(report)), "cases.csv": to_csv(*case_rows(report))}
    for name, text in texts.items():
        write_text_atomic(out / name, text)
        written[name] = out / name
    write_json_atomic(out / "report.json", report_data(report))
    written["report.json"] = out / "report.json"
    return written
