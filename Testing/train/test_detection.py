"""Detector training from ``deepliver convert``'s output: the COCO dataset, one Faster R-CNN step, a full
Faster R-CNN run with exact resume and a bundle, and YOLO end to end with zero network attempts."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from deepliver.imaging.volumes import read_label, read_volume
from deepliver.inference.detect import detect_volume
from deepliver.inference.predict import load_model, model_from_module
from deepliver.models.bundle import read_bundle_config
from deepliver.models.fasterrcnn import build_fasterrcnn
from deepliver.train.checkpoint import load_checkpoint
from deepliver.train.config import apply_values, default_config
from deepliver.train.detection import THRESHOLDS, CocoSlices, collate, train_detector


@pytest.fixture(scope="module")
def det_converted(tiny_dataset, tmp_path_factory):
    """``deepliver convert`` of the tiny dataset: 64x64 tumor slices, about one negative per three positives."""
    from deepliver.dataset.convert import ConvertOptions, convert_dataset

    out = tmp_path_factory.mktemp("det_converted") / "out"
    convert_dataset(tiny_dataset, out, ConvertOptions(formats=("yolo", "coco"), size=64, background_ratio=0.34))
    return out


def small_config(model, **extra):
    config = default_config(model, "tumor")
    return apply_values(config, {"device": "cpu", "optim.epochs": 2, "optim.batch_size": 4,
                                 "optim.early_stop_patience": 0, "detector.backbone": "mobilenet_v3_large_fpn",
                                 "detector.min_size": 64, "detector.max_size": 64, "detector.image_size": 64,
                                 "data.positive_fraction": 0.75, "data.workers": 0,
                                 "detector.box_batch_size_per_image": 64, **extra})


def test_coco_slices_give_torchvision_targets_and_negatives(det_converted):
    doc = json.loads((det_converted / "coco_train.json").read_text())
    expected = {img["id"]: [] for img in doc["images"]}
    for ann in doc["annotations"]:
        x, y, w, h = ann["bbox"]
        expected[ann["image_id"]].append([x, y, x + w, y + h])
    data = CocoSlices(det_converted, "train")
    assert len(data) == len(doc["images"])
    assert data.negatives == sum(1 for boxes in expected.values() if not boxes) > 0
    for index, img in enumerate(doc["images"]):
        image, target = data[index]
        pixels = np.asarray(Image.open(det_converted / "images" / "train" / img["file_name"]))
        np.testing.assert_allclose(image[1].numpy(), pixels / 255.0, atol=1e-7)
        np.testing.assert_array_equal(target["boxes"].numpy(), np.array(expected[img["id"]], np.float32).reshape(-1, 4))
        assert target["labels"].tolist() == [1] * len(expected[img["id"]])


def test_flips_move_boxes_with_the_pixels(det_converted):
    plain, flipped = CocoSlices(det_converted, "train"), CocoSlices(det_converted, "train", flip_prob=1.0)
    index = next(i for i, item in enumerate(plain.items) if len(item[2]))
    (a, ta), (b, tb) = plain[index], flipped[index]
    torch.testing.assert_close(b, a.flip(-1).flip(-2), rtol=0, atol=0)
    for (x1, y1, x2, y2), (u1, v1, u2, v2) in zip(ta["boxes"].int().tolist(), tb["boxes"].int().tolist()):
        torch.testing.assert_close(b[:, v1:v2, u1:u2], a[:, y1:y2, x1:x2].flip(-1).flip(-2), rtol=0, atol=0)


def test_one_faster_rcnn_step_on_convert_output_is_finite(det_converted):
    torch.manual_seed(0)
    data = CocoSlices(det_converted, "train")
    positive = next(i for i, item in enumerate(data.items) if len(item[2]))
    negative = next(i for i, item in enumerate(data.items) if not len(item[2]))
    images, targets = collate([data[positive], data[negative]])
    model = build_fasterrcnn({"variant": "mobilenet_v3_large_fpn", "image_size": 64}).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9)
    loss = sum(model(list(images), list(targets)).values())
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(p0, p1) for p0, p1 in zip(before, model.parameters()))


def test_faster_rcnn_run_resumes_exactly_and_writes_a_bundle(tiny_dataset, det_converted, tmp_path):
    """On an existing convert output (``detector.convert_dir``); validation volumes from the dataset."""
    given = {"detector.convert_dir": str(det_converted)}
    full = train_detector(tiny_dataset, tmp_path / "full", small_config("fasterrcnn", **given))
    train_detector(tiny_dataset, tmp_path / "cut", small_config("fasterrcnn", **given, **{"optim.epochs": 1}))
    train_detector(tiny_dataset, tmp_path / "cut", small_config("fasterrcnn", **given), resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    assert len((tmp_path / "cut" / "log.csv").read_text().strip().splitlines()) == 3   # header + 2 epochs

    config = read_bundle_config(full)
    assert (config.architecture, config.task, config.patch_size) == ("fasterrcnn", "tumor", (64, 64))
    assert config.runtimes["onnx"]["supported"] is False
    chosen = config.inference["score_threshold"]                # picked on the validation cases
    assert chosen in THRESHOLDS and config.validation["dice_by_threshold"][f"{chosen:g}"] == config.validation["dice"]
    assert config.validation["dice"] == max(config.validation["dice_by_threshold"].values()) or chosen == 0.5
    assert not (tmp_path / "full" / "detection_data").exists()   # the given convert output was used

    best = load_checkpoint(tmp_path / "full" / "checkpoints" / "best.pt")
    module = build_fasterrcnn(config.arch_args)
    module.load_state_dict(best["model"])
    case = sorted((tiny_dataset / "imagesTr").iterdir())[0]
    image = read_volume(case)
    liver = (read_label(tiny_dataset / "labelsTr" / case.name) > 0)
    import SimpleITK as sitk
    liver = sitk.GetArrayFromImage(liver).astype(np.uint8)
    reloaded, live = load_model(full), model_from_module(module, config)
    reloaded.config.inference["score_threshold"] = live.config.inference["score_threshold"] = 0.0
    out = detect_volume(image, reloaded, roi_mask=liver)
    assert out.any()
    np.testing.assert_array_equal(out, detect_volume(image, live, roi_mask=liver))


def test_yolo_trains_offline_end_to_end(tiny_dataset, tmp_path, network_guard):
    pytest.importorskip("ultralytics", reason="ultralytics (extra 'yolo') is not installed")
    bundle = train_detector(tiny_dataset, tmp_path / "run", small_config("yolo", **{"optim.epochs": 1}))
    assert not network_guard.exists(), network_guard.read_text()
    labels = list((tmp_path / "run" / "detection_data" / "labels" / "train").glob("*.txt"))
    empty = [p for p in labels if not p.read_text().strip()]     # negatives: positive_fraction 0.75 -> 1 in 4
    assert 0 < len(empty) < len(labels) / 2
    config = read_bundle_config(bundle)
    assert config.architecture == "yolo" and config.arch_args["yaml"]["nc"] == 1
    assert config.runtimes["onnx"]["supported"] is False and "dice" in config.validation
    # our yaml + safetensors rebuild computes what ultralytics' own (pickled) best.pt computes
    theirs = torch.load(tmp_path / "run" / "yolo" / "train" / "weights" / "best.pt", weights_only=False)["model"]
    ours = load_model(bundle).predictor.module
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], theirs.float().eval()(x)[0], rtol=0, atol=0)


def test_cli_refuses_a_convert_output_of_another_task(det_converted, tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "deepliver", "train", str(det_converted), "--model", "fasterrcnn",
                           "--task", "liver", "--out", str(tmp_path / "run"), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"deepliver train: error: {det_converted}: this convert output holds tumor boxes, but --task is liver; "
        "convert again with --task liver"]


def test_liver_crop_keeps_convert_slices_and_every_tumor_pixel(tiny_dataset, det_converted, tmp_path):
    """Training slices cut to the liver: the same slice list as convert, the pixels an independent crop gives,
    boxes that map back over every tumor pixel (one box per 8-connected component)."""
    import cc3d
    import SimpleITK as sitk

    from deepliver.dataset.slices import Window, canonical_array, resize_slice, window_slice
    from deepliver.inference.detect import rasterize_boxes, square_to_canonical
    from deepliver.train.detection import DetectionData
    from deepliver.train.detection_crop import crop_to_liver

    data = DetectionData(det_converted, 64, (-100.0, 400.0), "tumor", tiny_dataset)
    cropped = crop_to_liver(data, tmp_path / "crop", 2.0)
    doc = json.loads((cropped.root / "coco_train.json").read_text())
    names = [i["file_name"] for i in json.loads((det_converted / "coco_train.json").read_text())["images"]]
    assert [i["file_name"] for i in doc["images"]] == names
    checked = 0
    for image in doc["images"]:
        case, z = image["file_name"].rsplit("_", 1)[0], int(image["file_name"][-8:-4])
        volume = read_volume(tiny_dataset / "imagesTr" / f"{case}.nii.gz")
        hu = canonical_array(volume)[z]
        label = canonical_array(read_label(tiny_dataset / "labelsTr" / f"{case}.nii.gz"))
        ys, xs = np.nonzero(label.max(axis=0) >= 1)
        sx, sy = sitk.DICOMOrient(volume, "LPS").GetSpacing()[:2]    # the canonical axes' spacing
        gy, gx = int(np.ceil(2.0 / sy - 1e-6)), int(np.ceil(2.0 / sx - 1e-6))
        y0, y1 = max(ys.min() - gy, 0), min(ys.max() + 1 + gy, hu.shape[0])
        x0, x1 = max(xs.min() - gx, 0), min(xs.max() + 1 + gx, hu.shape[1])
        side = max(y1 - y0, x1 - x0)
        y0, x0 = y0 - (side - (y1 - y0)) // 2, x0 - (side - (x1 - x0)) // 2
        plane = np.pad(hu, 64, constant_values=-100)[64 + y0:64 + y0 + side, 64 + x0:64 + x0 + side]
        expected = resize_slice(window_slice(plane, Window(-100.0, 400.0)), 64)
        np.testing.assert_array_equal(np.array(Image.open(cropped.root / "images" / "train" / image["file_name"])),
                                      expected)
        boxes = [a["bbox"] for a in doc["annotations"] if a["image_id"] == image["id"]]
        tumor = label[z] == 2
        assert len(boxes) == int(cc3d.connected_components(tumor.astype(np.uint8), connectivity=8).max())
        if boxes:
            edges = np.array([[x, y, x + w, y + h] for x, y, w, h in boxes], float)
            back = rasterize_boxes({0: square_to_canonical(edges, (y0, x0, side), 64)}, (1,) + tumor.shape)[0]
            assert back[tumor].all()
            checked += 1
    assert checked and sitk.GetArrayFromImage(read_label(tiny_dataset / "labelsTr" / f"{case}.nii.gz")).any()
    yolo = (cropped.root / "labels" / "train" / names[0].replace(".png", ".txt"))
    assert yolo.is_file() and (cropped.root / "data.yaml").read_text().startswith(f'path: "{cropped.root.resolve()}"')
