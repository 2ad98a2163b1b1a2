"""evaluate_pair / evaluate_files / the evaluate verb: geometry refusal, folders, JSON and CSV read back."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.errors import GeometryError
from deepliver.metrics import evaluate_files, evaluate_pair, overlap_metrics


def _image(array, spacing):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    return image


def test_evaluate_pair_scores_liver_as_all_labels(label_pair):
    pred, ref, spacing = label_pair
    m = evaluate_pair(_image(pred, spacing), _image(ref, spacing))
    assert m["liver"]["dice"] == pytest.approx(overlap_metrics(pred >= 1, ref >= 1)["dice"])
    assert m["tumor"]["dice"] == pytest.approx(overlap_metrics(pred == 2, ref == 2)["dice"])
    voxel_ml = np.prod(spacing) / 1000
    assert m["tumor"]["volume_ref_ml"] == pytest.approx((ref == 2).sum() * voxel_ml)
    assert m["tumor"]["lesions_pred"] == 2 and m["tumor"]["lesions_ref"] == 1


def test_evaluate_pair_refuses_different_geometry(label_pair):
    pred, ref, spacing = label_pair
    with pytest.raises(GeometryError, match=r"prediction p\.nii\.gz and reference r\.nii\.gz .*spacing"):
        evaluate_pair(_image(pred, (1.0, 1.0, 1.0)), _image(ref, spacing), "p.nii.gz", "r.nii.gz")


def test_evaluate_folders_matches_by_name_and_lists_missing(tmp_path, label_pair, write_label):
    pred, ref, spacing = label_pair
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    write_label(pred, tmp_path / "p" / "a.nrrd", spacing)
    write_label(ref, tmp_path / "r" / "a.nii.gz", spacing)
    write_label(ref, tmp_path / "p" / "b.nii.gz", spacing)  # perfect prediction
    write_label(ref, tmp_path / "r" / "b.nii.gz", spacing)
    write_label(ref, tmp_path / "r" / "c.nii.gz", spacing)  # no prediction
    (tmp_path / "p" / "a.json").write_text("{}")  # a sidecar: ignored
    result = evaluate_files(tmp_path / "p", tmp_path / "r")
    assert [c["case"] for c in result["cases"]] == ["a", "b"]
    assert len(result["problems"]) == 1 and "c.nii.gz: no prediction" in result["problems"][0]
    dices = [c["metrics"]["liver"]["dice"] for c in result["cases"]]
    assert dices[1] == 1.0
    s = result["summary"]["liver"]["dice"]
    assert s["mean"] == pytest.approx(statistics.fmean(dices)) and s["n"] == 2 and s["n_null"] == 0
    assert s["std"] == pytest.approx(statistics.stdev(dices))
    hd = result["summary"]["tumor"]["hd"]
    assert hd["n"] + hd["n_null"] == 2
    pooled = result["summary"]["tumor"]["pooled"]
    lesions = [c["metrics"]["tumor"] for c in result["cases"]]
    n_pred = sum(m["lesions_pred"] for m in lesions)
    assert pooled["lesion_precision"] == pytest.approx(sum(m["lesions_matched"] for m in lesions) / n_pred)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", *map(str, args)], capture_output=True, text=True)


def test_cli_evaluate_json_csv_and_geometry_mismatch(tmp_path, label_pair, write_label):
    pred, ref, spacing = label_pair
    p = write_label(pred, tmp_path / "pred.nii.gz", spacing)
    r = write_label(ref, tmp_path / "ref.nii.gz", spacing)
    run = _cli("evaluate", "--pred", p, "--ref", r, "--json", tmp_path / "m.json", "--csv", tmp_path / "m.csv",
               "--progress", "none")
    assert run.returncode == 0, run.stderr
    assert "liver dice" in run.stdout and "ref" in run.stdout
    data = json.loads((tmp_path / "m.json").read_text())
    direct = evaluate_pair(sitk.ReadImage(str(p)), sitk.ReadImage(str(r)))
    assert data["cases"][0]["metrics"]["liver"]["hd95"] == pytest.approx(direct["liver"]["hd95"])
    assert "hd95" in data["definitions"] and data["problems"] == []
    with open(tmp_path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(row["case"], row["label"]) for row in rows] == [("ref", "liver"), ("ref", "tumor")]
    assert float(rows[1]["dice"]) == pytest.approx(direct["tumor"]["dice"])

    other = write_label(ref, tmp_path / "moved.nii.gz", spacing, origin=(5.0, 0.0, 0.0))
    bad = _cli("evaluate", "--pred", p, "--ref", other)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "pred.nii.gz" in lines[0] and "moved.nii.gz" in lines[0] and "origin" in lines[0]
    missing = _cli("evaluate", "--pred", tmp_path / "none.nii.gz", "--ref", r)
    assert missing.returncode == 2 and "none.nii.gz" in missing.stderr
