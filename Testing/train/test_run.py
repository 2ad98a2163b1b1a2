"""End-to-end training on tiny phantoms: bundle, reload, validation number, exact resume, bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepliver import cli
from deepliver.errors import ConfigError, LabelError
from deepliver.imaging.volumes import read_label, read_volume
from deepliver.inference.predict import load_model, predict_volume
from deepliver.metrics.overlap import overlap_metrics
from deepliver.models.bundle import load_state_dict, read_bundle_config
from deepliver.train.cache import list_cases
from deepliver.train.checkpoint import load_checkpoint
from deepliver.train.config import TrainConfig
from deepliver.train.run import train


def test_bundle_reloads_to_identical_outputs_and_logs_the_users_dice(tiny_dataset, tiny_config, tmp_path):
    run = tmp_path / "run"
    bundle = train(tiny_dataset, run, tiny_config(values={"optim.epochs": 2}))
    assert bundle == run / "model"
    saved = json.loads((run / "config.json").read_text())
    assert set(saved) == set(TrainConfig().to_dict()) and saved["optim"]["epochs"] == 2
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]

    best = load_checkpoint(run / "checkpoints" / "best.pt")
    weights = load_state_dict(bundle)
    assert weights.keys() == best["model"].keys()
    assert all(torch.equal(weights[k], best["model"][k]) for k in weights)

    config = read_bundle_config(bundle)
    case = config.fingerprint["val_cases"][0]
    files = {c.case: c for c in list_cases(tiny_dataset)}[case]
    image, label = read_volume(files.image), read_label(files.label)
    first = predict_volume(image, load_model(bundle))
    second = predict_volume(image, load_model(bundle))
    assert first.shape == label.GetSize()[::-1] and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    # the Dice in model.json is what a user gets from the bundle on that case (one validation case here)
    ref = read_label(files.label)
    import SimpleITK as sitk
    dice = overlap_metrics(first.astype(bool), sitk.GetArrayFromImage(ref) >= 1)["dice"]
    assert config.validation["dice"] == pytest.approx(dice, abs=1e-9)
    assert float(rows[config.validation["epoch"] - 1]["val_dice"]) == pytest.approx(dice, abs=1e-6)


def _model_and_optimizer(run):
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    return state["model"], state["optimizer"]["state"]


@pytest.mark.parametrize("schedule", ["plateau", "poly"])
def test_resume_ends_with_the_same_weights(tiny_dataset, tiny_config, tmp_path, schedule):
    """Poly: the first run plans 1 epoch (rate ~0 after it); resumed to 2, the second epoch must run at the
    2-epoch schedule's rate, as the uninterrupted run does."""
    config = tiny_config(values={"optim.epochs": 2, "augment.prob": 1.0, "optim.schedule": schedule})
    train(tiny_dataset, tmp_path / "a", config)
    one = tiny_config(values={"optim.epochs": 1, "augment.prob": 1.0, "optim.schedule": schedule})
    train(tiny_dataset, tmp_path / "b", one)
    train(tiny_dataset, tmp_path / "b", resume=True, overrides={"optim.epochs": 2})
    (wa, oa), (wb, ob) = _model_and_optimizer(tmp_path / "a"), _model_and_optimizer(tmp_path / "b")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(oa[i][k], ob[i][k]) for i in oa for k in oa[i])
    rows = list(csv.DictReader(open(tmp_path / "b" / "log.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    with pytest.raises(ConfigError, match="cannot change optim.lr when resuming"):
        train(tiny_dataset, tmp_path / "b", resume=True, overrides={"optim.lr": 0.5})


def test_a_run_from_before_optim_schedule_resumes_with_plateau(tiny_dataset, tiny_config, tmp_path):
    """Tumor runs now default to poly and lesion paste; a config.json without those keys was a
    ReduceLROnPlateau run without paste."""
    run = tmp_path / "old"
    train(tiny_dataset, run, tiny_config("unet2d", "tumor", {"optim.schedule": "plateau", "augment.lesion_paste": 0}))
    data = json.loads((run / "config.json").read_text())
    del data["optim"]["schedule"], data["augment"]["lesion_paste"]
    (run / "config.json").write_text(json.dumps(data))
    train(tiny_dataset, run, resume=True, overrides={"optim.epochs": 2})
    resumed = json.loads((run / "config.json").read_text())
    assert (resumed["optim"]["schedule"], resumed["augment"]["lesion_paste"]) == ("plateau", 0.0)
    scheduler = load_checkpoint(run / "checkpoints" / "last.pt")["scheduler"]
    assert "patience" in scheduler and "exponent" not in scheduler                  # ReduceLROnPlateau's state


def test_validation_every_n_epochs_and_after_the_last(tiny_dataset, tiny_config, tmp_path):
    """``validation.every 2`` over 5 epochs validates after epochs 2, 4 and 5 only; the best epoch is chosen among
    those; the poly rate still falls every epoch, so the weights equal those of a run validating every epoch."""
    values = {"optim.epochs": 5, "optim.schedule": "poly", "augment.prob": 1.0}
    every = train(tiny_dataset, tmp_path / "every2", tiny_config(values={**values, "validation.every": 2}))
    train(tiny_dataset, tmp_path / "every1", tiny_config(values=values))
    rows = list(csv.DictReader(open(tmp_path / "every2" / "log.csv")))
    full = list(csv.DictReader(open(tmp_path / "every1" / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["epoch"]) for r in rows if r["val_dice"] != ""] == [2, 4, 5]
    assert [r["lr"] for r in rows] == [r["lr"] for r in full]
    for r, f in zip(rows, full):                                # the same model at each validation
        assert r["val_dice"] in ("", f["val_dice"])
    validated = {int(r["epoch"]): float(r["val_dice"]) for r in rows if r["val_dice"] != ""}
    config = read_bundle_config(every)
    assert config.validation["epoch"] == max(validated, key=lambda e: (validated[e], -e))
    assert config.validation["dice"] == pytest.approx(validated[config.validation["epoch"]], abs=1e-6)
    (wa, _), (wb, _) = _model_and_optimizer(tmp_path / "every2"), _model_and_optimizer(tmp_path / "every1")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="validation.every must be a whole number of epochs >= 1"):
            tiny_config(values={"validation.every": bad})


def test_tumor_run_keeps_the_epoch_with_the_best_pooled_dice(tiny_dataset, tiny_config, tmp_path):
    """Tumor task: best.pt and the bundle follow val_dice_global, and that number is the pooled Dice a user
    gets from the bundle on the validation cases (inside the true liver, as validation runs it)."""
    run = tmp_path / "run"
    bundle = train(tiny_dataset, run, tiny_config("unet2d", "tumor", {"optim.epochs": 3, "data.split": (60, 40, 0)}))
    rows = list(csv.DictReader(open(run / "log.csv")))
    pooled = [float(r["val_dice_global"]) for r in rows]
    config = read_bundle_config(bundle)
    assert config.validation["metric"] == "dice_global"
    assert config.validation["epoch"] == 1 + int(np.argmax(pooled))
    assert float(rows[config.validation["epoch"] - 1]["val_dice"]) == pytest.approx(config.validation["dice"], abs=1e-6)
    import SimpleITK as sitk
    files = {c.case: c for c in list_cases(tiny_dataset)}
    model, preds, refs = load_model(bundle), [], []
    for case in config.fingerprint["val_cases"]:
        label = sitk.GetArrayFromImage(read_label(files[case].label))
        preds.append(predict_volume(read_volume(files[case].image), model, roi_mask=label >= 1).ravel() > 0)
        refs.append(label.ravel() == 2)
    assert len(preds) == 2
    expected = overlap_metrics(np.concatenate(preds), np.concatenate(refs))["dice"]
    assert config.validation["dice_global"] == pytest.approx(expected, abs=1e-9)
    assert max(pooled) == pytest.approx(expected, abs=1e-6)


def test_unet3d_tumor_task_trains_inside_the_liver_box(tiny_dataset, tiny_config, tmp_path):
    bundle = train(tiny_dataset, tmp_path / "run", tiny_config("unet3d", "tumor"))
    config = read_bundle_config(bundle)
    assert (config.task, config.spatial_dims, config.in_channels) == ("tumor", 3, 1)
    cache = next((tmp_path / "run" / "cache").iterdir())
    meta = json.loads((cache / "meta.json").read_text())
    image = np.load(cache / "image.npy")
    # the cached tumor-task image is the liver box + margin, smaller than the whole resampled volume
    whole = [round(n * s / t) for n, s, t in zip(meta["original_grid"]["size"], meta["original_grid"]["spacing"],
                                                 (2.0, 2.0, 4.0))]
    assert meta["has_roi"] and np.prod(image.shape) < np.prod(whole)


def test_too_few_cases_and_absent_label_are_refused(tmp_path, tiny_config, dataset_factory):
    one = dataset_factory(tmp_path / "one", [0])
    with pytest.raises(ConfigError, match=r"has 1 case\(s\); .* gives 1 training and 0 validation"):
        train(one, tmp_path / "r1", tiny_config())
    clean = dataset_factory(tmp_path / "clean", [1, 2], n_tumors=0)
    with pytest.raises(LabelError, match=r"no training case has any tumor \(label 2\) voxel"):
        train(clean, tmp_path / "r2", tiny_config(task="tumor", values={"data.split": (50, 50, 0)}))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deepliver", "train", *map(str, args)], capture_output=True,
                          text=True)


def test_cli_refuses_existing_run_and_corrupted_checkpoint(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    r = _cli(tiny_dataset, "--model", "unet2d", "--out", run)
    assert r.returncode == 2
    assert r.stderr == (f"deepliver train: error: {run}: this RUN folder already exists; pass --resume to "
                        "continue it, or choose another --out\n")
    (run / "config.json").write_text(json.dumps({"model": "unet2d"}))
    (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 truncated zip")
    r = _cli(tiny_dataset, "--out", run, "--resume")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "last.pt: cannot read checkpoint" in lines[0] and "corrupted" in lines[0]


def test_cli_device_cuda_without_cuda(tiny_dataset, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    code = cli.main(["train", str(tiny_dataset), "--model", "unet2d", "--out", str(tmp_path / "r"),
                     "--device", "cuda"])
    assert code == 2
    assert "--device cuda was asked for, but torch sees no CUDA GPU" in capsys.readouterr().err


def test_lesion_paste_reaches_the_training_samples_and_is_recorded(tiny_dataset, tiny_config, tmp_path):
    """``augment.lesion_paste`` changes what a tumor run trains on (same seed, other weights), is recorded in
    config.json, and the run stays reproducible."""
    values = {"optim.epochs": 1, "optim.schedule": "poly"}
    plain = tiny_config("unet2d", "tumor", values)
    pasted = tiny_config("unet2d", "tumor", {**values, "augment.lesion_paste": 1.0})
    train(tiny_dataset, tmp_path / "plain", plain)
    train(tiny_dataset, tmp_path / "paste", pasted)
    train(tiny_dataset, tmp_path / "again", pasted)
    assert json.loads((tmp_path / "paste" / "config.json").read_text())["augment"]["lesion_paste"] == 1.0
    (a, _), (b, _), (c, _) = (_model_and_optimizer(tmp_path / n) for n in ("plain", "paste", "again"))
    assert not all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(b[k], c[k]) for k in b)
