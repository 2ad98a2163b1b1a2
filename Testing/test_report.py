"""deepliver.report: synthetic per-case metrics in, files out; each file read back independently
(csv module, html.parser, PNG decoding) and checked against numbers computed here."""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import statistics
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from deepliver.metrics import METRICS, SIZE_BINS
from deepliver.report import ModelResult, Overlay, Report, write_report

CASES = ["case_a", "case_b", "case_c", "case_d"]


def _metrics(rng, label, empty=False):
    out = {}
    for key in METRICS[label]:
        if key in ("hd", "hd95", "assd"):
            out[key] = None if empty else float(rng.uniform(0.5, 30))
        elif key.startswith("volume"):
            out[key] = float(rng.uniform(1, 100))
        elif key.startswith("lesions_"):
            continue
        else:
            out[key] = float(rng.uniform(0.2, 1.0))
    if label == "tumor":  # consistent lesion counts: matched <= ref, matched <= pred
        ref, pred = int(rng.integers(1, 5)), int(rng.integers(0, 5))
        matched = int(rng.integers(0, min(ref, pred) + 1))
        out.update({"lesions_ref": ref, "lesions_pred": pred, "lesions_matched": matched})
        for name, _, _ in SIZE_BINS:
            out.update({f"lesions_ref_{name}": ref, f"lesions_ref_found_{name}": matched,
                        f"lesions_pred_{name}": pred, f"lesions_pred_true_{name}": matched})
    return out


def _model(rng, name, architecture, task, with_extras=False):
    labels = ("liver",) if task == "liver" else ("liver", "tumor")
    cases = [{"case": c, "metrics": {label: _metrics(rng, label, empty=(i == 1 and label == "tumor"))
                                     for label in ("liver", "tumor")}} for i, c in enumerate(CASES)]
    model = ModelResult(name, architecture, task, cases, labels=labels, details={"run": f"runs/{name}"})
    if with_extras:
        image = rng.normal(40, 30, (32, 40))
        ref = np.zeros((32, 40), bool)
        ref[8:20, 10:30] = True
        pred = np.roll(ref, 2, axis=1)
        model.overlays = [Overlay("case_a", task, "best", 0.9, 3, image, ref, pred, (0.8, 0.8)),
                          Overlay("case_c", task, "worst", 0.2, 5, image, ref, ~ref, (0.8, 0.8))]
        model.log = [{"epoch": e, "train_loss": 1.0 / e, "val_dice": 0.5 + e / 20} for e in range(1, 5)]
    return model


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    rng = np.random.default_rng(7)
    models = [_model(rng, "U-Net 2D liver", "unet2d", "liver"),
              _model(rng, "U-Net 2D tumor", "unet2d", "tumor", with_extras=True),
              _model(rng, "Faster R-CNN | tumor", "fasterrcnn", "tumor")]
    report = Report("Architecture comparison", "/data/set", CASES, models, "All cases.", ["a note <b>"])
    out = tmp_path_factory.mktemp("report")
    return report, write_report(report, out), out


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _mean(values):
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def test_summary_csv_has_every_metric_and_the_right_means(written):
    report, files, _ = written
    rows = _read_csv(files["report.csv"])
    expected = sum(len(METRICS[label]) for m in report.models for label in m.labels)
    assert len(rows) == expected
    index = {(r["model"], r["label"], r["metric"]): r for r in rows}
    for model in report.models:
        for label in model.labels:
            for metric in ("dice", "hd95", "volume_ref_ml"):
                values = [c["metrics"][label][metric] for c in model.cases]
                row = index[(model.name, label, metric)]
                mean = _mean(values)
                assert float(row["mean"]) == pytest.approx(mean, rel=1e-12)
                assert int(row["n_null"]) == sum(v is None for v in values)
                kept = [v for v in values if v is not None]
                assert float(row["std"]) == pytest.approx(statistics.stdev(kept), rel=1e-12)
    tumor = [m for m in report.models if m.task == "tumor"][0]
    ref = sum(c["metrics"]["tumor"]["lesions_ref"] for c in tumor.cases)
    matched = sum(c["metrics"]["tumor"]["lesions_matched"] for c in tumor.cases)
    row = index[(tumor.name, "tumor", "lesion_recall")]
    assert float(row["pooled"]) == pytest.approx(matched / ref)
    assert ("U-Net 2D liver", "tumor", "dice") not in index  # a liver model is not scored on tumor


def test_cases_csv_round_trips_the_per_case_values(written):
    report, files, _ = written
    rows = _read_csv(files["cases.csv"])
    assert len(rows) == sum(len(m.cases) * len(m.labels) for m in report.models)
    model = report.models[1]
    row = next(r for r in rows if r["model"] == model.name and r["case"] == "case_b" and r["label"] == "tumor")
    assert row["hd"] == ""  # null stays empty
    assert float(row["dice"]) == model.cases[1]["metrics"]["tumor"]["dice"]


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.images, self.tables, self._cell, self._row = [], [], [], None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = []
            self.tables[-1].append(self._row)
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_html_is_self_contained_and_holds_the_table(written):
    report, files, _ = written
    text = files["report.html"].read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object")
        for key in ("src", "href"):
            if key in attrs:
                assert attrs[key].startswith("data:image/png;base64,"), (tag, attrs[key][:40])
    assert "url(" not in text and "@import" not in text and "http://" not in text and "https://" not in text
    assert len(page.images) == 3  # one overlay figure, the box plots, the training curves
    for src in page.images:
        png = base64.b64decode(src.split(",", 1)[1])
        with Image.open(io.BytesIO(png)) as img:
            assert img.format == "PNG" and img.width > 100 and img.height > 100
    main = page.tables[0]
    header = main[0]
    assert header == ["metric"] + [m.name for m in report.models]
    rows = {r[0]: r[1:] for r in main[1:]}
    column = header.index("U-Net 2D tumor") - 1
    model = report.models[1]
    mean = _mean([c["metrics"]["tumor"]["dice"] for c in model.cases])
    assert rows["tumor dice (%)"][column].startswith(f"{100 * mean:.1f} ± ")
    hd_nulls = sum(c["metrics"]["tumor"]["hd"] is None for c in model.cases)
    assert rows["tumor hd (mm)"][column].endswith(f"({hd_nulls} n/a)")
    assert rows["tumor dice (%)"][0] == ""  # the liver model has no tumor value
    seed = page.tables[1]
    assert seed[0] == ["metric", "U-Net", "Faster R-CNN", "YOLOv3"]
    assert ["tumor dice (%)", "40.2", "41.1", "1.9"] in seed
    assert "not comparable" in text.lower()
    assert "a note &lt;b&gt;" in text  # escaped


def test_markdown_and_json(written):
    report, files, out = written
    md = files["report.md"].read_text(encoding="utf-8")
    assert "| Faster R-CNN \\| tumor |" in md  # a '|' in a name is escaped
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file()
    data = json.loads(files["report.json"].read_text(encoding="utf-8"))
    liver = data["models"][0]
    assert liver["labels"] == ["liver"] and "tumor" not in liver["summary"]
    assert data["seed_published"]["values"]["YOLOv3"]["dice"] == 1.9
    dice = [c["metrics"]["liver"]["dice"] for c in report.models[0].cases]
    assert liver["summary"]["liver"]["dice"]["mean"] == pytest.approx(statistics.fmean(dice))
