"""The main job end to end: ``python -m deepliver demo --quick`` in a subprocess (offline, CPU).

Asserts the report exists and is self-contained, and that the liver Dice on the held-out phantoms (other
spacing and orientation than the training ones, read as DICOM by ``deepliver segment``) is at least 0.9,
read from ``summary.json`` and checked against ``evaluation.json``'s per-case values and against an
independent count on one written label. Takes about 3 minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk


@pytest.mark.slow
def test_quick_demo_reaches_liver_dice_0_9(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, YOLO_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "deepliver", "--progress", "none", "demo", "--quick", "--out",
                           str(out)], capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = out / "report.html"
    assert report.is_file()
    html = report.read_text(encoding="utf-8")
    assert "<script" not in html and "https://" not in html and "data:image/png;base64," in html

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["report"] == str(report)
    liver_dice = summary["segment"]["liver_dice_mean"]
    assert liver_dice >= 0.9, summary["segment"]

    evaluation = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    per_case = [c["metrics"]["liver"]["dice"] for c in evaluation["cases"]]
    assert len(per_case) == len(summary["test_cases"]) >= 2
    assert liver_dice == pytest.approx(float(np.mean(per_case)))
    case = evaluation["cases"][0]
    pred = sitk.GetArrayFromImage(sitk.ReadImage(case["pred"])) >= 1
    ref = sitk.GetArrayFromImage(sitk.ReadImage(case["ref"])) >= 1
    dice = 2 * np.count_nonzero(pred & ref) / (np.count_nonzero(pred) + np.count_nonzero(ref))
    assert case["metrics"]["liver"]["dice"] == pytest.approx(dice)

    names = set(summary["models"])
    assert {"U-Net 2D liver", "U-Net 2D tumor", "U-Net 3D tumor", "Faster R-CNN tumor"} <= names
    assert ("YOLO tumor" in names) != ("yolo" in summary["skipped"])  # trained, or said why not
    assert "report:" in proc.stderr and "liver Dice" in proc.stderr
