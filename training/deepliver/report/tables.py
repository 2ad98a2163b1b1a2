"""The report's tables as data, Markdown and CSV.

``report.csv`` has one row per model x label x metric (every metric of ``deepliver.metrics.METRICS``, not
only the table's): ``model, architecture, task, label, metric, unit, n, n_null, mean, std, median, pooled``
(fractions 0-1 for ratios, mm for distances; ``pooled`` only for lesion scores). ``cases.csv`` has one row
per model x case x label with every metric. Empty cells are nulls (undefined, see the definitions).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Optional

from deepliver.metrics import DEFINITIONS, METRICS
from deepliver.report.model import (SEED_PUBLISHED, SEED_SOURCE, TABLE_ROWS, ModelResult, Report, format_value,
                                    row_value, unit_of)

__all__ = ["SUMMARY_FIELDS", "summary_rows", "case_rows", "to_csv", "table_cells", "seed_cells", "runs_cells",
           "markdown_table", "markdown_report"]

SUMMARY_FIELDS = ("model", "architecture", "task", "label", "metric", "unit", "n", "n_null", "mean", "std",
                  "median", "pooled")


def summary_rows(report: Report) -> list[dict[str, Any]]:
    """The rows of ``report.csv`` (see the module docstring)."""
    rows = []
    for model in report.models:
        for label in model.labels:
            entry = model.summary[label]
            pooled = entry.get("pooled", {})
            for metric in METRICS[label]:
                stats = entry[metric]
                rows.append({"model": model.name, "architecture": model.architecture, "task": model.task,
                             "label": label, "metric": metric, "unit": unit_of(metric), "n": stats["n"],
                             "n_null": stats["n_null"], "mean": stats["mean"], "std": stats["std"],
                             "median": stats["median"], "pooled": pooled.get(metric)})
    return rows


def case_rows(report: Report) -> tuple[list[str], list[dict[str, Any]]]:
    """``(fields, rows)`` of ``cases.csv``: model, case, label, then every metric."""
    metrics = list(METRICS["tumor"])
    rows = []
    for model in report.models:
        for case in model.cases:
            for label in model.labels:
                values = case["metrics"][label]
                rows.append({"model": model.name, "case": case["case"], "label": label,
                             **{m: values.get(m) for m in metrics}})
    return ["model", "case", "label", *metrics], rows


def to_csv(fields, rows: list[dict[str, Any]]) -> str:
    """CSV text (``\\n`` line ends, None as an empty cell)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in fields})
    return buffer.getvalue()


def _cell(model: ModelResult, row) -> str:
    value = row_value(model, row)
    if value is None:
        return ""
    text = format_value(row.metric, value["value"])
    if value["std"] is not None:
        text += f" ± {format_value(row.metric, value['std'])}"
    if value["n_null"]:
        text += f" ({value['n_null']} n/a)"
    return text


def table_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the architecture table: a row per ``TABLE_ROWS`` entry that any model has,
    a column per model; cells ``mean ± sd`` (or the pooled value), ``(k n/a)`` when k cases had no value."""
    header = ["metric"] + [m.name for m in report.models]
    rows = []
    for row in TABLE_ROWS:
        cells = [_cell(m, row) for m in report.models]
        if any(cells):
            rows.append([row.title] + cells)
    return header, rows


def seed_cells() -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of the seed project's published table (``SEED_PUBLISHED``)."""
    models = list(SEED_PUBLISHED)
    metrics = list(next(iter(SEED_PUBLISHED.values())))
    rows = [[f"tumor {m}" + (" (as published)" if m == "hd" else " (%)")]
            + ["-" if SEED_PUBLISHED[k][m] is None else f"{SEED_PUBLISHED[k][m]:g}" for k in models]
            for m in metrics]
    return ["metric"] + models, rows


def runs_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)``: one row per model with its architecture, task, scored labels and details."""
    keys: list[str] = []
    for model in report.models:
        keys += [k for k in model.details if k not in keys]
    header = ["model", "architecture", "task", "scored on"] + keys
    rows = [[m.name, m.architecture, m.task, ", ".join(m.labels)] + [_text(m.details.get(k)) for k in keys]
            for m in report.models]
    return header, rows


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub Markdown table (``|`` in cells escaped)."""
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(report: Report, figures: Optional[dict[str, str]] = None) -> str:
    """The whole report as Markdown; ``figures`` maps a caption to a relative PNG path."""
    from deepliver import __version__

    parts = [f"# {report.title}", "",
             f"Dataset `{report.dataset}`, {len(report.cases)} case(s): {', '.join(report.cases)}. "
             f"{report.case_selection}".strip(), "",
             f"Written {report.created} by deepliver {__version__}.", ""]
    if report.notes:
        parts += [f"- {n}" for n in report.notes] + [""]
    parts += ["## Architecture table", "",
              "Mean ± sample sd over the cases (nulls skipped, counted as n/a); lesion rows pooled over the cases. "
              "Tumor = label 2, liver = labels >= 1 (tumor included), as LiTS scores them.", "",
              markdown_table(*table_cells(report)), "",
              "## The seed project's published numbers (not comparable)", "", SEED_SOURCE + ".", "",
              markdown_table(*seed_cells()), "", "## Models", "", markdown_table(*runs_cells(report)), ""]
    if figures:
        parts += ["## Figures", ""]
        for caption, path in figures.items():
            parts += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    parts += ["## Definitions", ""] + [f"- **{k}**: {v}" for k, v in DEFINITIONS.items()] + [""]
    return "\n".join(parts)
