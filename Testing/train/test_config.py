"""Training configs: defaults per model, JSON/YAML round trip, unknown keys with a suggestion."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepliver.errors import ConfigError
from deepliver.train.config import (MODEL_DEFAULTS, TrainConfig, apply_values, config_from_dict, default_config,
                                    read_config, write_config)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip_keeps_every_value(tmp_path, suffix):
    config = apply_values(default_config("unet3d", "tumor"),
                          {"optim.lr": 0.02, "data.target_spacing": (1.0, None, 3.0), "augment.enabled": False})
    path = tmp_path / f"config{suffix}"
    write_config(config, path)
    back = read_config(path)
    assert back == config
    assert back.data.target_spacing == (1.0, None, 3.0)


def test_model_defaults_apply_and_file_values_win(tmp_path):
    assert default_config("unet3d").data.patch_size == MODEL_DEFAULTS["unet3d"]["data.patch_size"]
    assert default_config("unet2d").data.patch_size == TrainConfig().data.patch_size
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"model": "unet3d", "data": {"patch_size": [32, 32, 16]}}))
    config = read_config(path)
    assert config.model == "unet3d" and config.data.patch_size == (32, 32, 16)
    assert config.optim.batch_size == MODEL_DEFAULTS["unet3d"]["optim.batch_size"]


def test_unknown_key_names_it_and_suggests_the_nearest(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError) as e:
        read_config(path)
    assert str(e.value) == f"{path}: unknown config key 'optim.lrr'; did you mean 'optim.lr'?"
    with pytest.raises(ConfigError, match="did you mean 'data.patch_size'"):
        config_from_dict({"patch_size": [64, 64]})


def test_wrong_types_and_values_are_refused():
    with pytest.raises(ConfigError, match="'optim.epochs' must be a number"):
        config_from_dict({"optim": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="data.patch_size needs 3 values for unet3d"):
        config_from_dict({"model": "unet3d", "data": {"patch_size": [64, 64]}})
    with pytest.raises(ConfigError, match="sum to 100"):
        config_from_dict({"data": {"split": [50, 20, 10]}})
    with pytest.raises(ConfigError, match=r"data.crop_margin_mm must be a finite number >= 0 \(mm\), got -2.0"):
        config_from_dict({"data": {"crop_margin_mm": -2.0}})
    with pytest.raises(ConfigError, match="data.positive_sampling must be one of voxel, component, got 'lesion'"):
        config_from_dict({"data": {"positive_sampling": "lesion"}})
    with pytest.raises(ConfigError, match=r"augment.lesion_paste must be a probability in \[0, 1\], got 1.5"):
        config_from_dict({"task": "tumor", "augment": {"lesion_paste": 1.5}})
    with pytest.raises(ConfigError, match="augment.lesion_paste applies to the tumor task of unet2d, not the liver"):
        config_from_dict({"augment": {"lesion_paste": 0.5}})
    with pytest.raises(ConfigError, match="not the tumor task of unet3d"):
        config_from_dict({"model": "unet3d", "task": "tumor", "data": {"patch_size": [32, 32, 32]},
                          "augment": {"lesion_paste": 0.5}})
    with pytest.raises(ConfigError, match="not the tumor task of fasterrcnn"):
        config_from_dict({"model": "fasterrcnn", "task": "tumor", "augment": {"lesion_paste": 0.5}})
    assert config_from_dict({"task": "tumor", "augment": {"lesion_paste": 0.5}}).augment.lesion_paste == 0.5


def test_cli_write_config_dumps_defaults_with_flags(tmp_path):
    out = tmp_path / "defaults.yaml"
    r = subprocess.run([sys.executable, "-m", "deepliver", "train", "--model", "unet3d", "--epochs", "7",
                        "--write-config", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = read_config(out)
    assert config.model == "unet3d" and config.optim.epochs == 7
    assert config == apply_values(default_config("unet3d"), {"optim.epochs": 7})


def test_tumor_task_defaults_and_the_poly_schedule_rates():
    import torch

    from deepliver.train.callbacks import make_scheduler

    tumor, liver = default_config("unet2d", "tumor"), default_config("unet2d", "liver")
    assert (tumor.optim.schedule, tumor.optim.early_stop_patience, tumor.data.window) == ("poly", 0, (-20.0, 200.0))
    assert (liver.optim.schedule, liver.data.window) == ("plateau", TrainConfig().data.window)
    assert (tumor.validation.metric, liver.validation.metric) == ("dice_global", "dice")
    with pytest.raises(ConfigError, match="validation.metric must be dice or dice_global, got 'iou'"):
        config_from_dict({"validation": {"metric": "iou"}})
    detector = default_config("fasterrcnn", "tumor")                 # the U-Nets' task defaults only
    assert (detector.optim.schedule, detector.data.window) == ("plateau", TrainConfig().data.window)
    # lesion paste: the 2D tumor U-Net only (the others would refuse it)
    pastes = {(m, t): default_config(m, t).augment.lesion_paste for m in ("unet2d", "unet3d", "fasterrcnn", "yolo")
              for t in ("liver", "tumor")}
    assert pastes.pop(("unet2d", "tumor")) == 0.5 and set(pastes.values()) == {0.0}
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=0.02)
    scheduler = make_scheduler(optimizer, apply_values(tumor, {"optim.epochs": 7}).optim)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step(0.0)                                  # the metric is ignored
    assert rates == pytest.approx([0.02 * (1 - e / 7) ** 0.9 for e in range(7)], rel=1e-12)
    with pytest.raises(ConfigError, match="optim.schedule must be plateau or poly, got 'cosine'"):
        config_from_dict({"optim": {"schedule": "cosine"}})
