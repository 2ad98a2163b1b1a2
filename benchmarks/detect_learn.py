"""Do the tumor detectors learn? Faster R-CNN and YOLO on a phantom cohort, CPU, a fixed epoch budget each.

Phantoms (``make_phantom``) -> dataset folder (``export_case``) -> ``convert_dataset`` (tumor boxes, square
slices of ``--size`` pixels, train/val split 75/25) -> ``deepliver.train.run.train`` of each variant (its
defaults from ``deepliver.train.config`` plus the variant's values) -> on held-out phantoms (other seeds,
never exported) ``detect_volume`` with the true liver as ROI -> tumor Dice pooled over the cases,
lesion-wise recall and precision (``deepliver.metrics.lesions``: IoU > 0.5 per lesion), and box recall at
IoU 0.5 on the tumor slices (slices with lesions where each true box is hit by a kept box).

Baseline in the same run: the *oracle* detector, the true tumor boxes of every slice rasterized inside the
liver the same way (``rasterize_boxes``): the ceiling of any box detector on these cases (box vs round
lesion); the ratio column is Dice / oracle Dice.

Variants (``VARIANTS``): ``frcnn`` (the config defaults: resnet50_fpn_v2, too slow for a CPU budget),
``frcnn_s8`` (mobilenet_v3_large_fpn_s8), ``frcnn_mnv3`` (torchvision's mobilenet FPN, strides 32/32),
``yolo``; ``*_whole`` train on whole slices instead of the liver crop. ``--set`` applies config values to
every variant, ``--tag`` names the runs; ``--out`` keeps the data (reused by later calls).

    python benchmarks/detect_learn.py --quick                  # 6+2 phantoms, 128 px, 1 epoch each: smoke run
    python benchmarks/detect_learn.py                          # 12+3 phantoms, 256 px, frcnn_s8 + yolo
    python benchmarks/detect_learn.py --variants yolo yolo_whole --set optim.epochs=20 --out /tmp/dl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from deepliver.dataset.convert import ConvertOptions, convert_dataset
from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.dataset.slices import canonical_orientation
from deepliver.imaging.geometry import Geometry
from deepliver.inference.detect import detect_volume, rasterize_boxes, to_image_order
from deepliver.inference.predict import load_model
from deepliver.metrics.lesions import lesion_metrics
from deepliver.train.config import apply_values, default_config
from deepliver.train.run import train

VARIANTS: dict[str, tuple[str, dict]] = {
    # name: (model, config values on top of the model's defaults)
    "frcnn": ("fasterrcnn", {}),
    "frcnn_whole": ("fasterrcnn", {"detector.crop": "none"}),
    "frcnn_mnv3": ("fasterrcnn", {"detector.backbone": "mobilenet_v3_large_fpn"}),
    "frcnn_r50": ("fasterrcnn", {"detector.backbone": "resnet50_fpn_v2"}),
    "frcnn_s8": ("fasterrcnn", {"detector.backbone": "mobilenet_v3_large_fpn_s8"}),
    "yolo": ("yolo", {}),
    "yolo_whole": ("yolo", {"detector.crop": "none"}),
}

EPOCHS = {"fasterrcnn": 5, "yolo": 20}
"""Default epochs (``--set optim.epochs=N`` overrides): about 10-20 minutes each at 256 px on a loaded 2-core box."""


def make_cases(first_seed: int, count: int, shape) -> list:
    """Phantoms with 1-4 tumors each (the cohort's 0-tumor cases give the detector nothing to learn)."""
    return [make_phantom(first_seed + k, shape=shape, n_tumors=1 + k % 4) for k in range(count)]


def build_data(root: Path, cases: int, shape, size: int, seed: int) -> Path:
    dataset = root / "dataset"
    for p in make_cases(1000 + seed * 100, cases, shape):
        export_case(p.image, p.label, dataset)
    convert_dataset(dataset, root / "convert", ConvertOptions(formats=("yolo", "coco"), task="tumor", size=size,
                                                              split=(75.0, 25.0, 0.0), seed=seed,
                                                              background_ratio=1.0))
    return dataset


def oracle_mask(label: np.ndarray, geometry: Geometry) -> np.ndarray:
    """True tumor boxes per canonical slice (each 2D component's box), rasterized inside the liver."""
    orientation = canonical_orientation(geometry)
    canon = orientation.apply(label)
    boxes = {}
    for z in range(canon.shape[0]):
        comps = cc3d.connected_components((canon[z] == 2).astype(np.uint8), connectivity=8)
        found = []
        for k in range(1, int(comps.max()) + 1):
            ys, xs = np.nonzero(comps == k)
            found.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        if found:
            boxes[z] = np.asarray(found, dtype=np.float64)
    mask = rasterize_boxes(boxes, canon.shape) & (canon >= 1)
    return to_image_order(mask.astype(np.uint8), orientation)


def slice_box_recall(pred: np.ndarray, label: np.ndarray) -> tuple[int, int]:
    """(hit, total) 2D tumor components whose bounding box overlaps the predicted mask's box with IoU > 0.5
    on the same slice (any axis order: slices along the first array axis)."""
    hit = total = 0
    for z in range(label.shape[0]):
        truth = cc3d.connected_components((label[z] == 2).astype(np.uint8), connectivity=8)
        if not truth.max():
            continue
        preds = cc3d.connected_components(pred[z].astype(np.uint8), connectivity=8)
        pboxes = [_box(preds == k) for k in range(1, int(preds.max()) + 1)]
        for k in range(1, int(truth.max()) + 1):
            total += 1
            tb = _box(truth == k)
            hit += any(_iou(tb, pb) > 0.5 for pb in pboxes)
    return hit, total


def _box(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def _iou(a, b) -> float:
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def score(preds: list[np.ndarray], tests: list) -> dict:
    """Pooled tumor Dice, lesion recall/precision (summed counts), slice box recall over the test cases."""
    num = den = refs = found = npred = ntrue = hit = total = 0
    for pred, p in zip(preds, tests):
        label = sitk.GetArrayFromImage(p.label)
        truth, pred = label == 2, pred > 0
        num += 2 * int(np.count_nonzero(pred & truth))
        den += int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
        lm = lesion_metrics(pred, truth, p.info["spacing"][::-1])
        refs, npred, found = refs + lm["lesions_ref"], npred + lm["lesions_pred"], found + lm["lesions_matched"]
        ntrue += lm["lesions_matched"]
        h, t = slice_box_recall(pred, label)
        hit, total = hit + h, total + t
    return {"dice": num / den if den else 1.0, "lesion_recall": found / refs if refs else None,
            "lesion_precision": ntrue / npred if npred else None, "box_recall": hit / total if total else None}


def run_variant(name: str, dataset: Path, root: Path, extra: dict, tests: list, size: int, seed: int,
                tag: str = "") -> dict:
    model, values = VARIANTS[name]
    config = default_config(model, "tumor")
    values = {"detector.convert_dir": str(root / "convert"), "detector.image_size": size, "detector.min_size": size,
              "detector.max_size": size, "data.split": (75.0, 25.0, 0.0), "data.workers": 0, "seed": seed,
              "device": "cpu", "optim.epochs": EPOCHS[model], **values, **extra}
    apply_values(config, values)
    out = root / f"run-{name}{tag}"
    t0 = time.perf_counter()
    bundle = train(dataset, out, config)
    wall = time.perf_counter() - t0
    loaded = load_model(bundle, "cpu")
    t1 = time.perf_counter()
    preds = [detect_volume(p.image, loaded, roi_mask=(sitk.GetArrayFromImage(p.label) >= 1).astype(np.uint8))
             for p in tests]
    infer = (time.perf_counter() - t1) / len(tests)
    result = score(preds, tests)
    result.update(variant=name + tag, model=model, epochs=config.optim.epochs, train_s=wall, infer_s=infer,
                  threshold=loaded.config.inference.get("score_threshold"),
                  val_dice=(loaded.config.validation or {}).get("dice"), log=_log(out))
    return result


def _log(out: Path) -> list:
    path = out / "log.csv"
    if path.is_file():
        with open(path, newline="") as f:
            return [round(float(r.get("val_dice_best_threshold") or 0), 3) for r in csv.DictReader(f)]
    results = out / "yolo" / "train" / "results.csv"
    if results.is_file():
        with open(results, newline="") as f:
            return [round(float(r.get("metrics/mAP50(B)", 0)), 3) for r in csv.DictReader(f)]
    return []


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 training + 2 test phantoms, 128 px slices")
    parser.add_argument("--cases", type=int, help="training + validation phantoms (default 12, quick 6)")
    parser.add_argument("--test-cases", type=int, help="held-out phantoms (default 3, quick 2)")
    parser.add_argument("--size", type=int, help="slice size in pixels (default 256, quick 128)")
    parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 48), help="phantom grid x y z")
    parser.add_argument("--variants", nargs="+", default=None, choices=sorted(VARIANTS),
                        help="default: frcnn_s8 yolo")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config values for every variant (JSON values), e.g. optim.epochs=6")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="", help="suffix of the run folders and row names")
    parser.add_argument("--out", type=Path, help="keep the data and runs here (reused when present)")
    args = parser.parse_args()
    cases = args.cases or (6 if args.quick else 12)
    tests_n = args.test_cases or (2 if args.quick else 3)
    size = args.size or (128 if args.quick else 256)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if args.quick:
        extra = {"optim.epochs": 1, **extra}
    root = args.out or Path(tempfile.mkdtemp(prefix="deepliver-detect-learn-"))
    t0 = time.perf_counter()
    dataset = root / "dataset"
    if not (root / "convert" / "splits.json").is_file():
        build_data(root, cases, tuple(args.shape), size, args.seed)
    tests = make_cases(5000 + args.seed * 100, tests_n, tuple(args.shape))
    print(f"data: {cases} phantoms {'x'.join(map(str, args.shape))} -> {size} px slices, {tests_n} held out, "
          f"{time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f}\n")
    oracle = score([oracle_mask(sitk.GetArrayFromImage(p.label), Geometry.from_image(p.image)) for p in tests],
                   tests)
    rows = [run_variant(v, dataset, root, extra, tests, size, args.seed, args.tag)
            for v in (args.variants or ["frcnn_s8", "yolo"])]
    print("| detector | epochs | train (s) | infer (s/case) | threshold | val Dice | test Dice | lesion recall "
          "| lesion precision | box recall | vs oracle |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| oracle boxes (baseline) | - | - | - | - | - | {_fmt(oracle['dice'])} | {_fmt(oracle['lesion_recall'])} "
          f"| {_fmt(oracle['lesion_precision'])} | {_fmt(oracle['box_recall'])} | 1.00x |")
    for r in rows:
        print(f"| {r['variant']} | {r['epochs']} | {r['train_s']:.0f} | {r['infer_s']:.1f} | {r['threshold']} | "
              f"{_fmt(r['val_dice'])} | {_fmt(r['dice'])} | {_fmt(r['lesion_recall'])} | {_fmt(r['lesion_precision'])} "
              f"| {_fmt(r['box_recall'])} | {r['dice'] / oracle['dice']:.2f}x |")
    print("\nper-epoch validation (Faster R-CNN: Dice at the best threshold; YOLO: ultralytics mAP50):")
    for r in rows:
        print(f"- {r['variant']}: {', '.join(map(str, r['log']))}")
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(json.dumps({r["variant"]: {k: r[k] for k in ("dice", "lesion_recall", "box_recall", "train_s")}
                      for r in rows}))


if __name__ == "__main__":
    main()
