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


def test_cli_write_config_dumps_defaults_with_flags(tmp_path):
    out = tmp_path / "defaults.yaml"
    r = subprocess.run([sys.executable, "-m", "deepliver", "train", "--model", "unet3d", "--epochs", "7",
                        "--write-config", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    config = read_config(out)
    assert config.model == "unet3d" and config.optim.epochs == 7
    assert config == apply_values(default_config("unet3d"), {"optim.epochs": 7})
