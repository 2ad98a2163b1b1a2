"""deepliver.compare on two tiny trained runs: the scores equal an independent count on the written labels,
the labels equal what ``deepliver segment`` writes, and the case-selection rules refuse leaks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.compare import CompareOptions, compare
from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.errors import InputError
from deepliver.train.config import apply_values, default_config
from deepliver.train.run import train

SHAPE = (48, 48, 16)


def _dataset(folder, seeds):
    for seed in seeds:
        p = make_phantom(seed, shape=SHAPE, n_tumors=3)
        export_case(p.image, p.label, folder)
    return folder


def _train(dataset, out, task):
    config = apply_values(default_config("unet2d", task), {
        "unet.channels": (4, 8, 16), "unet.strides": (2, 2), "unet.num_res_units": 0, "data.workers": 0,
        "optim.steps_per_epoch": 3, "optim.batch_size": 4, "optim.epochs": 2, "data.split": (50, 50, 0),
        "data.target_spacing": (1.5, 1.5, None), "data.patch_size": (32, 32), "validation.batch_size": 8})
    train(dataset, out, config)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    train_ds = _dataset(root / "train_ds", range(4))
    test_ds = _dataset(root / "test_ds", (20, 21))
    liver = _train(train_ds, root / "liver_run", "liver")
    tumor = _train(train_ds, root / "tumor_run", "tumor")
    return root, train_ds, test_ds, liver, tumor


@pytest.fixture(scope="module")
def compared(setup):
    root, _, test_ds, liver, tumor = setup
    return compare([tumor, liver], test_ds, root / "report")


def _dice(p, r):
    total = np.count_nonzero(p) + np.count_nonzero(r)
    return 1.0 if total == 0 else 2 * np.count_nonzero(p & r) / total


def test_scores_equal_an_independent_count_on_the_written_labels(setup, compared):
    _, _, test_ds, _, _ = setup
    with open(compared.files["cases.csv"], newline="", encoding="utf-8") as f:
        rows = {(r["model"], r["case"], r["label"]): r for r in csv.DictReader(f)}
    assert [m.name for m in compared.report.models] == ["U-Net 2D liver", "U-Net 2D tumor"]  # liver first
    assert len(compared.report.cases) == 2  # no run saw the new dataset: all its cases are test cases
    for model in compared.report.models:
        for case in compared.report.cases:
            pred = sitk.GetArrayFromImage(sitk.ReadImage(str(compared.predictions[model.name] / f"{case}.nii.gz")))
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(test_ds / "labelsTr" / f"{case}.nii.gz")))
            assert float(rows[(model.name, case, "liver")]["dice"]) == pytest.approx(_dice(pred >= 1, ref >= 1))
            if model.task == "tumor":
                assert float(rows[(model.name, case, "tumor")]["dice"]) == pytest.approx(_dice(pred == 2, ref == 2))
            else:
                assert (model.name, case, "tumor") not in rows
    data = json.loads(compared.files["report.json"].read_text(encoding="utf-8"))
    assert data["models"][0]["details"]["trained on"] == 2
    assert compared.files["report.html"].stat().st_size > 10_000  # figures embedded


def test_runs_table_and_curves_show_the_metric_each_run_chose_its_best_epoch_by(setup, compared):
    """A tumor U-Net picks its best epoch by pooled Dice (``val_dice_global``), a liver U-Net by the mean per
    case: the runs table names that metric with the bundle's value of it, and the training curve plots that
    log column."""
    from deepliver.report.figures import validation_series

    _, _, _, liver, tumor = setup
    for model, run in zip(compared.report.models, (liver, tumor)):
        validation = json.loads((run / "model" / "model.json").read_text())["validation"]
        metric = {"liver": "dice", "tumor": "dice_global"}[model.task]
        assert validation["metric"] == metric and model.log_score == f"val_{metric}"
        assert model.details["validation"] == f"{metric} {validation[metric]:.3f}"
        with open(run / "log.csv", newline="", encoding="utf-8") as f:
            column = [float(row[f"val_{metric}"]) for row in csv.DictReader(f)]
        epochs, values, key = validation_series(model)
        assert key == f"val_{metric}" and values == column and epochs == [1.0, 2.0]
    from deepliver.compare_runs import read_run
    run = read_run(tumor)                          # values far apart, so the table cannot show the other one
    run.config.validation = {**run.config.validation, "dice": 0.9, "dice_global": 0.25}
    assert run.details()["validation"] == "dice_global 0.250"


def test_labels_equal_what_segment_writes(setup, compared, tmp_path):
    from deepliver.inference.segment import SegmentOptions, segment

    _, _, test_ds, liver, tumor = setup
    case = compared.report.cases[0]
    out = tmp_path / "seg.nii.gz"
    segment(test_ds / "imagesTr" / f"{case}.nii.gz", out, liver / "model", tumor / "model",
            SegmentOptions(device="cpu"))
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(compared.predictions["U-Net 2D tumor"] / f"{case}.nii.gz")))
    np.testing.assert_array_equal(ours, sitk.GetArrayFromImage(sitk.ReadImage(str(out))))


def test_case_selection_refuses_leaks_and_uses_splits_json(setup, tmp_path):
    _, train_ds, _, liver, _ = setup
    with pytest.raises(InputError, match="no test case to evaluate"):  # both runs saw all 4 cases
        compare([liver], train_ds, tmp_path / "r1")
    ds = shutil.copytree(train_ds, tmp_path / "ds")
    cases = sorted(p.name[:-len(".json")] for p in (ds / "manifests").glob("*.json"))
    trained = json.loads((liver / "model" / "model.json").read_text())["fingerprint"]["train_cases"]
    (ds / "splits.json").write_text(json.dumps({"train": [], "val": [], "test": [trained[0]]}))
    with pytest.raises(InputError, match=r"this run trained on 1 of the test cases"):
        compare([liver], ds, tmp_path / "r2")
    result = compare([liver], ds, tmp_path / "r3", CompareOptions(cases="all"))
    assert result.report.cases == cases
    assert any("trained on 2 of the evaluated cases" in n for n in result.report.notes)


def test_cli_tumor_run_without_liver_stage_exits_2(setup, tmp_path):
    _, _, test_ds, _, tumor = setup
    proc = subprocess.run([sys.executable, "-m", "deepliver", "compare", str(tumor), "--data", str(test_ds),
                           "-o", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "need a liver stage: pass --liver-model BUNDLE" in lines[0]
    assert not (tmp_path / "r").exists()
