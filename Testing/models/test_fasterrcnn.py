"""Faster R-CNN: construction without downloads, the slice size as min/max size, bundle round trip."""

import numpy as np
import pytest
import torch

from deepliver.errors import ConfigError
from deepliver.inference.detect import detect_slices
from deepliver.inference.predict import load_model, model_from_module
from deepliver.models.bundle import Intensity, ModelConfig, save_bundle
from deepliver.models.fasterrcnn import VARIANTS, FasterRCNNArgs, build_fasterrcnn, slice_tensor


@pytest.mark.parametrize("variant", VARIANTS)
def test_builds_offline_at_the_slice_size(variant):
    model = build_fasterrcnn({"variant": variant, "image_size": 96})
    assert model.transform.min_size == (96,) and model.transform.max_size == 96
    assert model.roi_heads.box_predictor.cls_score.out_features == 2
    expected = (4, 6, 12, 24, 48)     # 16-256 px at 512 scaled to 96 px: 3 (raised to the 4 px minimum) .. 48
    sizes = model.rpn.anchor_generator.sizes
    levels = {"resnet50_fpn_v2": 5, "mobilenet_v3_large_fpn": 3, "mobilenet_v3_large_fpn_s8": 4}[variant]
    assert sizes == (tuple((a,) for a in expected) if variant == "resnet50_fpn_v2" else (expected,) * levels)
    model.eval()
    with torch.no_grad():   # a 96 slice reaches the backbone at 96, not upscaled to torchvision's 800
        images, _ = model.transform([torch.rand(3, 96, 96)])
        maps = [tuple(f.shape[-2:]) for f in model.backbone(images.tensors).values()]
    assert tuple(images.tensors.shape[-2:]) == (96, 96)
    strides = {"resnet50_fpn_v2": (4, 8, 16, 32, 64), "mobilenet_v3_large_fpn": (32, 32, 64),
               "mobilenet_v3_large_fpn_s8": (8, 16, 32, 64)}[variant]   # the s8 variant's point: stride 8
    assert maps == [(-(-96 // s),) * 2 for s in strides]


def test_arguments_round_trip_through_model_json_with_explicit_anchors():
    args = FasterRCNNArgs(variant="mobilenet_v3_large_fpn", image_size=512)
    data = args.to_dict()
    assert data["anchor_sizes"] == [16, 32, 64, 128, 256]
    assert FasterRCNNArgs.from_dict(data).anchors == args.anchors
    with pytest.raises(ConfigError, match="anchor_sizes needs 5 positive sizes"):
        FasterRCNNArgs(anchor_sizes=(8, 16))


def test_unknown_variant_and_argument_are_refused():
    with pytest.raises(ConfigError, match="unknown Faster R-CNN variant 'resnet18'; choose from resnet50_fpn_v2"):
        FasterRCNNArgs(variant="resnet18")
    with pytest.raises(ConfigError, match=r"unknown Faster R-CNN argument\(s\) min_size"):
        FasterRCNNArgs.from_dict({"min_size": 64})


def test_slice_tensor_is_three_equal_channels_in_unit_range():
    pixels = np.arange(64 * 48, dtype=np.uint32).reshape(48, 64).astype(np.uint8)
    t = slice_tensor(pixels)
    assert t.shape == (3, 48, 64) and t.dtype == torch.float32
    for c in range(3):
        np.testing.assert_allclose(t[c].numpy(), pixels / 255.0, rtol=0, atol=1e-7)


def test_bundle_reloads_to_identical_boxes(tmp_path):
    torch.manual_seed(1)
    args = {"variant": "mobilenet_v3_large_fpn", "image_size": 64, "box_score_thresh": 0.0}
    model = build_fasterrcnn(args).eval()
    config = ModelConfig(architecture="fasterrcnn", task="tumor", spatial_dims=2, arch_args=args,
                         patch_size=(64, 64), intensity=Intensity(), inference={"score_threshold": 0.0})
    bundle = save_bundle(tmp_path / "model", config, model.state_dict())
    slices = [np.random.default_rng(i).integers(0, 255, (64, 64), dtype=np.uint8) for i in range(3)]
    before = detect_slices(model_from_module(model, config), slices)
    after = detect_slices(load_model(bundle), slices)
    assert sum(len(b) for b, _ in before) > 0
    for (b0, s0), (b1, s1) in zip(before, after):
        np.testing.assert_array_equal(b0, b1)
        np.testing.assert_array_equal(s0, s1)
