"""The report as one self-contained HTML page: inline CSS, figures as base64 PNG ``data:`` URIs, no
script, no external stylesheet, font or image, so it opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
from html import escape

from deepliver.metrics import DEFINITIONS
from deepliver.report.model import SEED_SOURCE, Report
from deepliver.report.tables import runs_cells, seed_cells, table_cells

__all__ = ["html_table", "html_report"]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 70em; color: #222; line-height: 1.4; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.seed { background: #fff8e6; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 1em 0; }
figcaption { font-size: 0.9em; color: #444; }
img { max-width: 100%; }
"""


def html_table(header: list[str], rows: list[list[str]], css_class: str = "") -> str:
    """An HTML table; every cell escaped, cells after the first right-aligned."""
    cls = f' class="{escape(css_class)}"' if css_class else ""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" if i == 0 else f'<td class="num">{escape(c)}</td>'
                                    for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    return f"<table{cls}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _figure(caption: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def html_report(report: Report, figures: dict[str, tuple[str, bytes]]) -> str:
    """The page: header facts, the architecture table, the seed's numbers, the models, the figures
    (``{stem: (caption, png)}``) and the metric definitions."""
    from deepliver import __version__

    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(report.title)}</h1>",
        f"<p>Dataset <code>{escape(report.dataset)}</code>, {len(report.cases)} case(s): "
        f"{escape(', '.join(report.cases))}. {escape(report.case_selection)}</p>",
        f'<p class="note">Written {escape(report.created)} by deepliver {escape(__version__)}.</p>',
        f"<ul>{notes}</ul>" if notes else "",
        "<h2>Architecture table</h2>",
        '<p class="note">Mean ± sample sd over the cases (nulls skipped, counted as n/a); lesion rows pooled over '
        "the cases. Tumor = label 2, liver = labels &ge; 1 (tumor included), as LiTS scores them.</p>",
        html_table(*table_cells(report), css_class="main"),
        "<h2>The seed project's published numbers (not comparable)</h2>",
        f'<p class="note">{escape(SEED_SOURCE)}.</p>',
        html_table(*seed_cells(), css_class="seed"),
        "<h2>Models</h2>", html_table(*runs_cells(report), css_class="runs"),
    ]
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_figure(caption, png) for caption, png in figures.values()]
    parts.append("<h2>Definitions</h2><dl>")
    parts += [f"<dt><b>{escape(k)}</b></dt><dd>{escape(v)}</dd>" for k, v in DEFINITIONS.items()]
    parts.append("</dl></body></html>\n")
    return "\n".join(p for p in parts if p)
