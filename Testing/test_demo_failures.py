"""A comparison model whose training diverges is left out of the demo, named in the notes; the demo goes on;
and the same seed gives the same case ids and the same trained models.

A micro profile (tiny phantoms, a few steps) replaces the quick one; Faster R-CNN gets a learning rate that
makes its loss non-finite on the first steps (a real divergence, no mock)."""

from __future__ import annotations

import json

import pytest

from deepliver import demo as demo_module
from deepliver.demo_profiles import PROFILES, DemoProfile, RunSpec


def _unet(task):
    return RunSpec(f"{task}_unet2d", "unet2d", task, {
        "unet.channels": (4, 8), "unet.strides": (2,), "unet.num_res_units": 0, "data.target_spacing": (6.0, 6.0, None),
        "data.patch_size": (32, 32), "optim.steps_per_epoch": 2, "optim.epochs": 1, "optim.batch_size": 4,
        "optim.early_stop_patience": 0, "validation.batch_size": 16})


@pytest.mark.slow
def test_a_diverging_detector_is_reported_and_the_demo_goes_on(tmp_path, monkeypatch):
    broken = RunSpec("tumor_fasterrcnn", "fasterrcnn", "tumor", {
        "optim.epochs": 1, "optim.early_stop_patience": 0, "optim.lr": 1e12, "optim.grad_clip": 0.0,
        "detector.backbone": "mobilenet_v3_large_fpn", "optim.batch_size": 8,
        "detector.box_batch_size_per_image": 32})
    micro = DemoProfile("quick", train_cases=4, test_cases=1, train_shape=(64, 64, 16),
                        train_spacing=(6.0, 6.0, 10.0), slice_size=64, minutes=1,
                        runs=(_unet("liver"), _unet("tumor"), broken))
    monkeypatch.setitem(PROFILES, "quick", micro)
    messages = []
    result = demo_module.demo(demo_module.DemoOptions(out=tmp_path / "demo", quick=True, yolo=False),
                              notify=messages.append)
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text(encoding="utf-8"))
    assert summary["skipped"]["tumor_fasterrcnn"].startswith("training failed: the Faster R-CNN loss became")
    assert len(summary["models"]) == 2 and not any("R-CNN" in name for name in summary["models"])
    assert "tumor_fasterrcnn skipped: training failed" in result.report.read_text(encoding="utf-8")
    assert any("tumor_fasterrcnn: training failed" in m for m in messages)

    again = demo_module.demo(demo_module.DemoOptions(out=tmp_path / "again", quick=True, yolo=False))
    ids = [sorted(p.name for p in (root / "dataset" / "imagesTr").iterdir()) for root in (result.out, again.out)]
    assert ids[0] == ids[1] and len(ids[0]) == 4
    for run in ("liver_unet2d", "tumor_unet2d"):
        weights = [(root / "runs" / run / "model" / "weights.safetensors").read_bytes()
                   for root in (result.out, again.out)]
        assert weights[0] == weights[1], run


def test_the_report_notes_give_each_trained_models_budget_and_why_tumor_scores_are_low():
    """The demo's report says how long each model trained (from the profile), leaves out the skipped ones,
    and explains a tumor Dice of 0 instead of leaving it to look like a broken tool."""
    profile = PROFILES["default"]
    notes = demo_module._notes(profile, [], {"yolo": "ultralytics is not installed"})
    (budgets,) = [n for n in notes if n.startswith("Training budgets: ")]
    for spec in profile.runs:
        if spec.model == "yolo":
            assert "YOLO" not in budgets
            continue
        v = spec.values
        expected = f"{spec.task}: {v['optim.epochs']} epochs"
        if v.get("optim.steps_per_epoch"):
            expected += f" x {v['optim.steps_per_epoch']} steps of {v['optim.batch_size']}"
        assert expected in budgets, (spec.name, budgets)
    assert budgets.split(". ")[0].count(" epochs") == len(profile.runs) - 1          # one per model trained
    assert "scores Dice 0" in budgets and f"on {profile.train_cases} phantoms" in budgets
    x, y, z = profile.train_spacing
    assert f"on {x:g} x {y:g} x {z:g} mm voxels the median lesion" in budgets      # why: the training grid
