"""Does the 2D U-Net learn? Validation Dice per epoch and wall time on a phantom cohort, CPU.

Builds a phantom dataset (``make_phantom`` + ``export_case``), trains the 2D U-Net liver model with
``deepliver.train.run.train`` and prints its validation Dice per epoch (the Dice ``predict_volume`` gives
on whole validation volumes), then trains the tumor model (inside the true liver's box + margin) and
prints its best Dice. Baseline, same run, same validation cases: an HU band learned from the training
labels (5th-95th percentile of liver HU) + the largest 3D component (cc3d), no learning.

Targets (issue 5): liver Dice >= 0.95 within 10 minutes; tumor Dice >= 0.7.

    python benchmarks/learn.py            # 24 phantoms 160x160x64, up to 10 min for the liver model
    python benchmarks/learn.py --quick    # 8 phantoms 96x96x32, 2 minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.metrics.overlap import overlap_metrics
from deepliver.models.bundle import read_bundle_config
from deepliver.train.cache import list_cases
from deepliver.train.config import apply_values, default_config
from deepliver.train.run import train


def make_dataset(folder: Path, cases: int, shape) -> Path:
    for seed in range(cases):
        p = make_phantom(100 + seed, shape=shape, n_tumors=None if seed % 4 else 3)
        export_case(p.image, p.label, folder)
    return folder


def config_for(task: str, epochs: int, workers: int, quick: bool):
    values = {"optim.epochs": epochs, "optim.steps_per_epoch": 20 if quick else 40, "optim.batch_size": 16,
              "data.workers": workers, "data.target_spacing": (1.0, 1.0, None),
              "data.patch_size": (96, 96) if task == "liver" else (64, 64), "optim.early_stop_patience": 0,
              "data.split": (75, 25, 0), "data.positive_fraction": 0.6 if task == "liver" else 0.8}
    return apply_values(default_config("unet2d", task), values)


def baseline_dice(dataset: Path, bundle: Path) -> float:
    """HU band from the training labels + largest component, on the bundle's validation cases."""
    fp = read_bundle_config(bundle).fingerprint
    files = {c.case: c for c in list_cases(dataset)}
    hu = np.concatenate([sitk.GetArrayFromImage(sitk.ReadImage(str(files[c].image)))[
        sitk.GetArrayFromImage(sitk.ReadImage(str(files[c].label))) >= 1] for c in fp["train_cases"]])
    lo, hi = np.percentile(hu, [5, 95])
    scores = []
    for case in fp["val_cases"]:
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(files[case].image)))
        ref = sitk.GetArrayFromImage(sitk.ReadImage(str(files[case].label))) >= 1
        band = ((image >= lo) & (image <= hi)).astype(np.uint8)
        pred = cc3d.largest_k(band, k=1, connectivity=26) > 0
        scores.append(overlap_metrics(pred, ref)["dice"])
    return float(np.mean(scores))


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 small phantoms, few epochs")
    parser.add_argument("--cases", type=int, help="phantom cases (default 24, quick 8)")
    parser.add_argument("--epochs", type=int, help="liver epochs (default 30, quick 4)")
    parser.add_argument("--tumor-epochs", type=int, help="tumor epochs (default 20, quick 3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="keep the dataset and runs here")
    args = parser.parse_args()
    cases = args.cases or (8 if args.quick else 24)
    shape = (96, 96, 32) if args.quick else (160, 160, 64)
    root = args.out or Path(tempfile.mkdtemp(prefix="deepliver-learn-"))
    t0 = time.perf_counter()
    dataset = make_dataset(root / "dataset", cases, shape)
    print(f"dataset: {cases} phantoms {'x'.join(map(str, shape))} in {time.perf_counter() - t0:.1f} s\n")

    results = {}
    for task, epochs in (("liver", args.epochs or (4 if args.quick else 30)),
                         ("tumor", args.tumor_epochs or (3 if args.quick else 20))):
        t0 = time.perf_counter()
        bundle = train(dataset, root / f"run-{task}", config_for(task, epochs, args.workers, args.quick))
        results[task] = (bundle, log_rows(root / f"run-{task}"), time.perf_counter() - t0)

    bundle, rows, wall = results["liver"]
    print("| epoch | train loss | liver val Dice | elapsed (s) |\n|---:|---:|---:|---:|")
    elapsed = 0.0
    for r in rows:
        elapsed += float(r["seconds"])
        print(f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_dice']):.4f} | {elapsed:.0f} |")
    base = baseline_dice(dataset, bundle)
    best = read_bundle_config(bundle).validation["dice"]
    print(f"\n| model | val Dice | target | wall (s) | vs baseline |\n|---|---:|---:|---:|---:|")
    print(f"| HU band + largest component (baseline) | {base:.4f} | - | - | 1.00x |")
    print(f"| 2D U-Net liver (best epoch) | {best:.4f} | >= 0.95 in 600 s | {wall:.0f} | {best / base:.2f}x |")
    tbundle, trows, twall = results["tumor"]
    tbest = read_bundle_config(tbundle).validation["dice"]
    print(f"| 2D U-Net tumor (best epoch, true liver ROI) | {tbest:.4f} | >= 0.7 | {twall:.0f} | - |")
    print("\ntumor Dice per epoch: " + ", ".join(f"{float(r['val_dice']):.3f}" for r in trows))
    print(json.dumps({"liver_dice": best, "tumor_dice": tbest, "baseline_dice": base, "liver_wall_s": wall}))


if __name__ == "__main__":
    main()
