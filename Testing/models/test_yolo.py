"""YOLO through ultralytics: rebuild from yaml + safetensors, detection post-processing, the offline font.

A ``sitecustomize`` on the child's PYTHONPATH records and refuses every non-loopback connection and DNS
lookup (the ``network_guard`` fixture of Testing/conftest.py), so a network attempt shows in its log
whatever ultralytics does with the error. Training itself is tested there, end to end.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepliver.errors import ConfigError
from deepliver.inference.detect import detect_slices
from deepliver.inference.predict import load_model, model_from_module
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle
from deepliver.models.yolo import YoloTrainOptions, build_yolo, offline_env, offline_settings_dir, yolo_detect



@pytest.fixture(scope="module")
def yaml_dict():
    pytest.importorskip("ultralytics", reason="ultralytics (extra 'yolo') is not installed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_OFFLINE", "1")
        from ultralytics.nn.tasks import yaml_model_load

        return {**yaml_model_load("yolov8n.yaml"), "nc": 1}


def random_yolo(yaml_dict):
    torch.manual_seed(0)
    return build_yolo(yaml_dict).eval()


def test_without_the_local_font_ultralytics_goes_online(tmp_path, monkeypatch, network_guard):
    """Ultralytics' dataset check (``check_font``) in the training child's environment, minus the copied
    font, tries a download from GitHub (refused here). Training with the font makes no attempt at all:
    Testing/train/test_detection.py runs it under the same guard."""
    pytest.importorskip("ultralytics", reason="ultralytics (extra 'yolo') is not installed")
    log = network_guard
    env = offline_env(offline_settings_dir(tmp_path / "settings", install_font=False))
    code = "from ultralytics.utils.checks import check_font\ntry:\n    check_font('Arial.ttf')\nexcept Exception:\n    pass\n"
    subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=120)
    assert "github" in log.read_text()


def test_bundle_reloads_to_identical_detections(yaml_dict, tmp_path):
    model = random_yolo(yaml_dict)
    config = ModelConfig(architecture="yolo", task="tumor", spatial_dims=2, arch_args={"yaml": yaml_dict},
                         patch_size=(64, 64), intensity=Intensity(), inference={"score_threshold": 0.0})
    bundle = save_bundle(tmp_path / "model", config, model.state_dict())
    assert json.loads((bundle / "model.json").read_text())["arch_args"]["yaml"]["nc"] == 1
    slices = [np.random.default_rng(i).integers(0, 255, (64, 64), dtype=np.uint8) for i in range(2)]
    before = detect_slices(model_from_module(model, config), slices)
    after = detect_slices(load_model(bundle), slices)
    assert sum(len(b) for b, _ in before) > 0
    for (b0, s0), (b1, s1) in zip(before, after):
        np.testing.assert_array_equal(b0, b1)
        np.testing.assert_array_equal(s0, s1)


def test_detect_applies_threshold_and_nms(yaml_dict):
    from torchvision.ops import box_iou

    model = random_yolo(yaml_dict)
    (boxes, scores), = yolo_detect(model, torch.rand(1, 3, 64, 64), score_threshold=0.0, iou_threshold=0.3)
    assert len(boxes) and (scores[:-1] >= scores[1:]).all()
    iou = box_iou(boxes, boxes).fill_diagonal_(0)
    assert float(iou.max()) <= 0.3 + 1e-6


def test_inference_import_is_offline_and_keeps_stdout_clean(yaml_dict, tmp_path, monkeypatch, network_guard):
    """Rebuilding a YOLO network in a fresh process (no ultralytics settings yet) makes no network attempt
    and prints nothing on stdout (where ``--progress json`` lines go)."""
    log = network_guard
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("YOLO_CONFIG_DIR", raising=False)
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    (tmp_path / "yaml.json").write_text(json.dumps(yaml_dict))
    code = ("import json, sys, torch\nfrom deepliver.models.yolo import build_yolo, yolo_detect\n"
            f"m = build_yolo(json.load(open({str(tmp_path / 'yaml.json')!r}))).eval()\n"
            "yolo_detect(m, torch.rand(1, 3, 64, 64), 0.5)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "" and (tmp_path / "config" / "Ultralytics" / "settings.json").is_file()
    assert not log.exists(), log.read_text()


def test_options_refuse_auto_optimizer_and_odd_sizes():
    with pytest.raises(ConfigError, match="not 'auto': it ignores the learning rate"):
        YoloTrainOptions(optimizer="auto")
    with pytest.raises(ConfigError, match="multiple of 32"):
        YoloTrainOptions(image_size=100)


def test_missing_ultralytics_is_one_line_with_the_install_command():
    code = ("import sys; sys.modules['ultralytics'] = None\n"
            "from deepliver.models.yolo import require_ultralytics\n"
            "try:\n    require_ultralytics()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines() == ["ConfigError YOLO needs the optional package ultralytics (AGPL-3.0); "
                                        "install it with: pip install 'slicer-deepliver[yolo]'  "
                                        "(or: pip install 'ultralytics>=8.3')"]
