"""CSV rows and a compact console table of ``evaluate_files`` results."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Optional

from deepliver.metrics.evaluate import LABEL_NAMES, METRICS

__all__ = ["csv_rows", "write_csv", "format_table", "TABLE_COLUMNS"]

TABLE_COLUMNS = (("liver", "dice"), ("liver", "hd95"), ("liver", "assd"), ("tumor", "dice"), ("tumor", "hd95"),
                 ("tumor", "lesion_recall"), ("tumor", "lesion_f1"))
"""``(label, metric)`` columns of the console table."""


def csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per case and label: ``case``, ``label``, then every metric of ``METRICS`` (blank if absent)."""
    rows = []
    for case in result["cases"]:
        for label in LABEL_NAMES:
            metrics = case["metrics"][label]
            rows.append({"case": case["case"], "label": label, **{k: metrics.get(k) for k in METRICS["tumor"]}})
    return rows


def write_csv(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``csv_rows(result)`` to ``path`` atomically (null values as empty cells)."""
    from deepliver.atomic import write_text_atomic
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["case", "label", *METRICS["tumor"]], lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(result):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    write_text_atomic(path, buffer.getvalue())


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


def format_table(result: dict[str, Any]) -> str:
    """A fixed-width table: one line per case (``TABLE_COLUMNS``), then mean and median over cases."""
    head = ["case"] + [f"{label[:5]} {metric.replace('lesion_', 'les_')}" for label, metric in TABLE_COLUMNS]
    rows = [[c["case"]] + [_fmt(c["metrics"][l][m]) for l, m in TABLE_COLUMNS] for c in result["cases"]]
    for stat in ("mean", "median"):
        rows.append([stat] + [_fmt(result["summary"][l][m][stat]) for l, m in TABLE_COLUMNS])
    width = max(len(r[0]) for r in rows + [head])
    lines = [f"{head[0]:<{width}} " + " ".join(f"{h:>12}" for h in head[1:])]
    lines += [f"{r[0]:<{width}} " + " ".join(f"{v:>12}" for v in r[1:]) for r in rows]
    return "\n".join(lines)
