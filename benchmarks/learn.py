"""Does the 2D U-Net learn? Validation Dice per epoch and wall time on a phantom cohort, CPU.

Builds a phantom dataset (``make_phantom`` + ``export_case``): real-size anatomy (scale 1: liver 1-2 L,
tumours 5-40 mm). The liver cohort is on a coarse grid, because a CPU cannot train on 512^2 slices in 10
minutes: 24 phantoms of 160 x 160 x 48 voxels at 2.4 x 2.4 x 5 mm (a 512^2 0.75 mm CT downsampled 3.2x;
384 mm field of view), every fourth with 3 tumours and the rest with 0-6; direction matrices are drawn as H2's
generator does (identity, flipped, oblique). It trains the 2D U-Net liver model with
``deepliver.train.run.train`` (the defaults of ``deepliver.train.config`` except the sizes below) and prints
its validation Dice per epoch (``predict_volume`` on whole validation volumes, original grid).

Then it trains the tumour model (the tumour task's defaults, its 1.5 mm grid included) inside the true
liver's box + margin, on 64 phantoms (the same seeds as the liver's first 24, then 40 more: with 24, the model
overfits its 18 training cases) on a finer grid, 320 x 320 x 96 voxels at 1.2 x 1.2 x 2.5 mm, closer to a
liver CT's (0.6-0.9 mm pixels, 1-5 mm slices). On the liver's coarse grid the median lesion (14 mm) is 6
pixels and 3 slices wide, and that grid, not the training time, capped the tumour Dice: 0.33 after 80
epochs, 0.37 after 240, 0.36 with three times the phantoms; the same recipe on this grid gives 0.52 after
80 epochs and 0.58 after 240 (``--tumor-grid coarse`` runs the old cohort). The tumour model is validated
every 5th epoch here (a validation costs 4-5 s on this grid, the epoch 3 s). It reports the Dice: per case as
training logs it, pooled over the validation cases, and pooled over lesions > 10 mm only (smaller ones and a
2-voxel rim around them are left out of both masks); and by lesion contrast and size (``lesion_table``), which
says where the model loses: with 384 phantoms and 300 epochs (``--tumor-cases 384 --tumor-epochs 300
--tumor-every 10``, 27 min of training, before lesion paste was the tumour default) it scores 0.65 pooled
(0.68 after 600 epochs; 0.69 with lesion paste, 0.71 after ``segment``'s post-processing; with 768 phantoms,
``--tumor-cases 768 --tumor-epochs 600 --tumor-every 40``, 0.75 on 495 held-out lesions), 0.88 on lesions over
20 mm with 30 HU or more of contrast, 0.18 on those under 15 HU (the phantom's spleen-like and faint hypodense
lesions, a fifth of the tumour voxels), and about 0.07 on lesions under 10 mm whatever their contrast. Beside each
cell it prints a threshold oracle's Dice (``lesion_rows``): told where each lesion is and the median HU inside
it and of the liver around it, mark the liver voxels near it whose HU, smoothed by a 1.5 mm Gaussian, is on the
lesion's side of the midpoint. On 384 phantoms' 230 held-out lesions it scores 0.82 pooled and 0.73 on the
faint lesions over 20 mm, where the U-Net scores 0.20 after 600 epochs (0.32 with lesion paste): those lesions
are visible in the images; the model does not learn them from 288 training phantoms. From 576 (768 phantoms) it
scores 0.60 on them.

Baselines, same run, same validation cases, no learning: liver, an HU band learned from the training labels
(5th-95th percentile of liver HU) + the largest 3D component; tumour, liver voxels whose smoothed HU is more
than 20 HU from the case's liver median.

Targets (issue 5): liver Dice >= 0.95 within 10 minutes; tumour Dice >= 0.7.

    python benchmarks/learn.py            # liver: 24 phantoms, 60 x 20 steps; tumour: 64 phantoms, 80 x 20 steps (about 12 min on a quiet 2-core machine)
    python benchmarks/learn.py --quick    # 8 phantoms 128x128x32 at 3 mm for both, about 3 minutes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import NamedTuple, Optional

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.inference.predict import load_model, predict_volume
from deepliver.metrics.overlap import overlap_metrics
from deepliver.models.bundle import read_bundle_config
from deepliver.train.cache import list_cases
from deepliver.train.config import apply_values, default_config
from deepliver.train.run import train

FULL = {"cases": 24, "shape": (160, 160, 48), "spacing": (2.4, 2.4, 5.0), "epochs": 60, "steps": 20,
        "tumor_cases": 64, "tumor_epochs": 80, "liver_patch": 128, "tumor_patch": 128,
        "tumor_shape": (320, 320, 96), "tumor_spacing": (1.2, 1.2, 2.5), "tumor_every": 5,
        "tumor_target": None}
QUICK = {"cases": 8, "shape": (128, 128, 32), "spacing": (3.0, 3.0, 5.0), "epochs": 6, "steps": 15,
         "tumor_cases": 8, "tumor_epochs": 4, "liver_patch": 128, "tumor_patch": 64,
         "tumor_shape": (128, 128, 32), "tumor_spacing": (3.0, 3.0, 5.0), "tumor_every": 1,
         "tumor_target": (3.0, 3.0, None)}
COARSE_TUMOR = {"tumor_shape": FULL["shape"], "tumor_spacing": FULL["spacing"], "tumor_patch": 96, "tumor_every": 1,
                "tumor_target": (2.4, 2.4, None)}
"""``--tumor-grid coarse``: the tumour cohort on the liver's grid, trained on that grid (the old benchmark)."""


def make_dataset(folder: Path, cases: int, shape, spacing) -> Path:
    """Phantoms ``100 ...`` exported into ``folder`` with a key fixed by the folder's name, so that every run
    has the same case ids, hence the same training/validation split (a random key drew another split each
    run, and the tumour Dice of one setting ranged from 0.25 to 0.64 between splits)."""
    import hashlib

    from deepliver.dataset.caseid import KEY_FILE

    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEY_FILE).write_text(hashlib.sha256(f"deepliver learn {folder.name}".encode()).hexdigest() + "\n")
    for seed in range(cases):
        p = make_phantom(100 + seed, shape=shape, spacing=spacing, n_tumors=None if seed % 4 else 3)
        export_case(p.image, p.label, folder)
    return folder


def config_for(task: str, size: dict, epochs: int, workers: int):
    """The trained config: defaults, except the sizes of this benchmark: the liver on the phantoms' in-plane
    spacing with 128^2 crops of the 160^2 slices; the tumour on ``size["tumor_target"]`` (None: the task's
    default grid) with a liver-box-sized patch, validated every ``size["tumor_every"]``-th epoch."""
    values = {"optim.epochs": epochs, "optim.steps_per_epoch": size["steps"], "data.workers": workers,
              "optim.early_stop_patience": 0, "data.split": (75, 25, 0)}
    if task == "liver":
        values.update({"data.target_spacing": (size["spacing"][0], size["spacing"][1], None),
                       "data.patch_size": (size["liver_patch"],) * 2})
    else:
        values.update({"data.patch_size": (size["tumor_patch"],) * 2, "validation.every": size["tumor_every"]})
        if size["tumor_target"] is not None:
            values["data.target_spacing"] = size["tumor_target"]
    return apply_values(default_config("unet2d", task), values)


def _arrays(case):
    image = sitk.ReadImage(str(case.image))
    return image, sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))


def baseline_liver(dataset: Path, fp: dict) -> float:
    """HU band from the training labels + largest component, on the validation cases (mean Dice)."""
    files = {c.case: c for c in list_cases(dataset)}
    hu = np.concatenate([a[1][a[2] >= 1] for a in (_arrays(files[c]) for c in fp["train_cases"])])
    lo, hi = np.percentile(hu, [5, 95])
    scores = []
    for case in fp["val_cases"]:
        _, image, label = _arrays(files[case])
        band = ((image >= lo) & (image <= hi)).astype(np.uint8)
        scores.append(overlap_metrics(cc3d.largest_k(band, k=1, connectivity=26) > 0, label >= 1)["dice"])
    return float(np.mean(scores))


def _pooled(pairs) -> float:
    tp = sum(int(np.count_nonzero(p & r)) for p, r in pairs)
    total = sum(int(np.count_nonzero(p)) + int(np.count_nonzero(r)) for p, r in pairs)
    return 1.0 if total == 0 else 2 * tp / total


CONTRAST_BANDS = ((0, 15), (15, 30), (30, None))
SIZE_BANDS = ((0, 10), (10, 20), (20, None))
ORACLE_SMOOTH_MM = 1.5
"""Gaussian sigma (mm) of the threshold oracle's smoothing (``lesion_rows``)."""


class LesionRow(NamedTuple):
    """One reference lesion (``lesion_rows``): its size and contrast, and voxel counts for the model's and the
    threshold oracle's Dice (``tp`` and ``predicted`` near the lesion, ``reference`` its own voxels)."""
    diameter_mm: float
    contrast_hu: float
    tp: int
    predicted: int
    reference: int
    oracle_tp: int
    oracle_predicted: int


def _pooled_rows(rows: list[LesionRow], tp: str = "tp", predicted: str = "predicted") -> Optional[float]:
    """Dice pooled over ``rows`` from their ``tp`` / ``predicted`` counts (the oracle's with ``oracle_*``);
    None for no rows."""
    if not rows:
        return None
    hits, found = (sum(getattr(r, f) for r in rows) for f in (tp, predicted))
    return 2 * hits / (found + sum(r.reference for r in rows))


def lesion_rows(hu: np.ndarray, liver: np.ndarray, comps: np.ndarray, pred: np.ndarray, spacing,
                smooth: Optional[np.ndarray] = None) -> list[LesionRow]:
    """Per reference lesion (``comps``: the tumour label's 26-connected components, numbered from 1), a ``LesionRow``.
    Diameter: of the sphere of the same volume. Contrast: median HU of the lesion's interior (its erosion, or itself
    when that is empty) minus the median HU of the liver 3 voxels around it (outside every lesion grown by 2
    voxels). The Dice counts are those of the lesion and of the prediction within 3 voxels of it (other lesions
    excluded), so a lesion scores what the model found there; false positives far from every lesion are left out.
    The oracle counts are those of a threshold classifier told where the lesion is and both medians: the liver
    voxels of that same neighbourhood whose ``smooth`` HU lies on the lesion's side of the two medians' midpoint (0
    when ``smooth`` is None or the contrast is unmeasurable). It says how visible the lesion is in the image."""
    ref = comps > 0
    grown_all = ndimage.binary_dilation(ref, iterations=2)
    voxel_ml = float(np.prod(spacing))
    rows = []
    for k, found in enumerate(ndimage.find_objects(comps), start=1):
        if found is None:
            continue
        box = tuple(slice(max(s.start - 4, 0), s.stop + 4) for s in found)
        lesion = comps[box] == k
        interior = ndimage.binary_erosion(lesion)
        interior = interior if interior.any() else lesion
        near = ndimage.binary_dilation(lesion, iterations=3)
        ring = near & liver[box] & ~grown_all[box]
        inside, around = (float(np.median(hu[box][interior])), float(np.median(hu[box][ring]))) if ring.any() \
            else (float("nan"), float("nan"))
        contrast = inside - around
        near &= ~(ref[box] & ~lesion)
        found_here = pred[box] & near
        oracle = np.zeros_like(near)
        if smooth is not None and not np.isnan(contrast):
            side = smooth[box] > (inside + around) / 2 if contrast > 0 else smooth[box] < (inside + around) / 2
            oracle = near & liver[box] & side
        rows.append(LesionRow((6 * np.count_nonzero(lesion) * voxel_ml / np.pi) ** (1 / 3), contrast,
                              int(np.count_nonzero(found_here & lesion)), int(np.count_nonzero(found_here)),
                              int(np.count_nonzero(lesion)), int(np.count_nonzero(oracle & lesion)),
                              int(np.count_nonzero(oracle))))
    return rows


def _band(value: float, bands) -> int:
    return next(i for i, (lo, hi) in enumerate(bands) if value >= lo and (hi is None or value < hi))


def lesion_table(rows: list[LesionRow]) -> list[dict]:
    """Pooled Dice of ``lesion_rows`` by |contrast| band x size band (lesions without a measurable contrast are
    left out)."""
    table = []
    for ci, (clo, chi) in enumerate(CONTRAST_BANDS):
        for si, (slo, shi) in enumerate(SIZE_BANDS):
            sel = [r for r in rows if not np.isnan(r.contrast_hu) and _band(abs(r.contrast_hu), CONTRAST_BANDS) == ci
                   and _band(r.diameter_mm, SIZE_BANDS) == si]
            table.append({"contrast_hu": [clo, chi], "diameter_mm": [slo, shi], "lesions": len(sel),
                          "voxels": sum(r.reference for r in sel), "dice": _pooled_rows(sel),
                          "threshold_oracle": _pooled_rows(sel, "oracle_tp", "oracle_predicted")})
    return table


def tumor_scores(dataset: Path, bundle: Path, min_mm: float = 10.0) -> dict:
    """The tumour bundle on its validation cases (true liver as ROI): pooled Dice over all lesions and over
    lesions with an equivalent diameter > ``min_mm`` (smaller lesions + 2 voxels excluded from both masks),
    the same two figures for the HU-outlier baseline, and the model's Dice by lesion contrast and size
    (``lesion_table``)."""
    model = load_model(bundle)
    files = {c.case: c for c in list_cases(dataset)}
    pairs, large, base, base_large, rows = [], [], [], [], []
    for case in model.config.fingerprint["val_cases"]:
        image, hu, label = _arrays(files[case])
        liver, ref = label >= 1, label == 2
        pred = predict_volume(image, model, roi_mask=liver, stage="tumor").astype(bool)
        smooth = ndimage.gaussian_filter(hu.astype(np.float32), 1.0)
        guess = liver & (np.abs(smooth - np.median(hu[liver])) > 20) if liver.any() else np.zeros_like(liver)
        comps = cc3d.connected_components(ref.astype(np.uint8), connectivity=26)
        sigma = [ORACLE_SMOOTH_MM / sp for sp in image.GetSpacing()[::-1]]
        case_rows = lesion_rows(hu, liver, comps, pred, image.GetSpacing(),
                                ndimage.gaussian_filter(hu.astype(np.float32), sigma))
        rows += case_rows
        small = np.isin(comps, [k for k, r in enumerate(case_rows, start=1) if r.diameter_mm <= min_mm])
        keep = ~ndimage.binary_dilation(small, iterations=2) if small.any() else np.ones_like(ref)
        pairs.append((pred, ref))
        large.append((pred & keep, ref & keep))
        base.append((guess, ref))
        base_large.append((guess & keep, ref & keep))
    return {"all": _pooled(pairs), "large": _pooled(large), "base_all": _pooled(base),
            "base_large": _pooled(base_large), "lesions": len(rows),
            "lesions_large": int(sum(r.diameter_mm > min_mm for r in rows)), "by_lesion": lesion_table(rows),
            "threshold_oracle": _pooled_rows([r for r in rows if not np.isnan(r.contrast_hu)], "oracle_tp",
                                             "oracle_predicted")}


def log_rows(run: Path) -> list[dict]:
    with open(run / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def timed_train(dataset: Path, run: Path, config) -> tuple[Path, float, float]:
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    bundle = train(dataset, run, config)
    return bundle, time.perf_counter() - t0, (load0 + os.getloadavg()[0]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 phantoms 128x128x32 at 3 mm, few epochs")
    parser.add_argument("--cases", type=int, help="phantom cases (default 24, quick 8)")
    parser.add_argument("--epochs", type=int, help="liver epochs (default 60, quick 6)")
    parser.add_argument("--tumor-epochs", type=int, help="tumour epochs (default 80, quick 4)")
    parser.add_argument("--tumor-cases", type=int, help="phantoms of the tumour cohort (default 64, quick 8; the "
                        "first --cases of them have the liver cohort's seeds)")
    parser.add_argument("--tumor-grid", choices=("fine", "coarse"), default="fine",
                        help="the tumour cohort's grid: fine = 320x320x96 at 1.2x1.2x2.5 mm, trained at 1.5 mm "
                        "(default), coarse = the liver cohort's 160x160x48 at 2.4x2.4x5 mm, trained at 2.4 mm; "
                        "--quick: its own 3 mm grid for both")
    parser.add_argument("--tumor-every", type=int, help="validate the tumour model every N-th epoch (default 5, "
                        "quick 1; a validation of 96 cases costs about 28 s on the fine grid)")
    parser.add_argument("--tumor-set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config values of the tumour model (JSON values), e.g. "
                        "data.positive_sampling='\"component\"' or data.target_spacing=[1.2,1.2,null] "
                        "data.patch_size=[160,160]")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="keep the dataset and runs here")
    args = parser.parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.tumor_grid == "coarse" and not args.quick:
        size.update(COARSE_TUMOR)
    size.update({k: v for k, v in (("cases", args.cases), ("epochs", args.epochs),
                                   ("tumor_epochs", args.tumor_epochs), ("tumor_cases", args.tumor_cases),
                                   ("tumor_every", args.tumor_every)) if v})
    root = args.out or Path(tempfile.mkdtemp(prefix="deepliver-learn-"))
    t0 = time.perf_counter()
    dataset = make_dataset(root / "dataset", size["cases"], size["shape"], size["spacing"])
    print(f"dataset: {size['cases']} phantoms {'x'.join(map(str, size['shape']))} voxels at "
          f"{'x'.join(map(str, size['spacing']))} mm in {time.perf_counter() - t0:.1f} s")

    bundle, wall, load = timed_train(dataset, root / "run-liver", config_for("liver", size, size["epochs"], args.workers))
    rows = log_rows(root / "run-liver")
    print(f"\nliver: {size['epochs']} epochs x {size['steps']} steps, batch 16, load average {load:.1f} "
          f"(on {os.cpu_count()} cores)\n")
    print("| epoch | train loss | liver val Dice | elapsed (s) |\n|---:|---:|---:|---:|")
    elapsed, reached = 0.0, None
    for r in rows:
        elapsed += float(r["seconds"])
        if reached is None and float(r["val_dice"]) >= 0.95:
            reached = (int(r["epoch"]), elapsed)
        print(f"| {r['epoch']} | {float(r['train_loss']):.4f} | {float(r['val_dice']):.4f} | {elapsed:.0f} |")
    fp = read_bundle_config(bundle).fingerprint
    base = baseline_liver(dataset, fp)
    best = read_bundle_config(bundle).validation["dice"]

    tumor_data = dataset
    grid = (size["tumor_shape"], size["tumor_spacing"])
    if size["tumor_cases"] != size["cases"] or grid != (size["shape"], size["spacing"]):
        tumor_data = make_dataset(root / "dataset-tumor", size["tumor_cases"], *grid)
    tconfig = apply_values(config_for("tumor", size, size["tumor_epochs"], args.workers),
                           {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.tumor_set)})
    tbundle, twall, tload = timed_train(tumor_data, root / "run-tumor", tconfig)
    trows = log_rows(root / "run-tumor")
    tval = read_bundle_config(tbundle).validation
    tbest = tval["dice_global"]
    ts = tumor_scores(tumor_data, tbundle)
    target, patch = tconfig.data.target_spacing, tconfig.data.patch_size
    print(f"\ntumour: {size['tumor_cases']} phantoms {'x'.join(map(str, grid[0]))} voxels at "
          f"{'x'.join(map(str, grid[1]))} mm (75% for training), trained at {target[0]} mm in-plane on "
          f"{'x'.join(map(str, patch))} patches, {size['tumor_epochs']} epochs x {size['steps']} steps, validated "
          f"every {size['tumor_every']}; the tumour task's defaults (window -20..200 HU, poly schedule, "
          f"lesion paste {tconfig.augment.lesion_paste:g})"
          + (f", with {' '.join(args.tumor_set)}" if args.tumor_set else ""))
    when = f"epoch {reached[0]}, {reached[1]:.0f} s" if reached else "not reached"
    print("\n| model | val Dice | target | wall (s) | load | vs baseline |\n|---|---:|---:|---:|---:|---:|")
    print(f"| liver: HU band + largest component (baseline) | {base:.4f} | - | - | - | 1.00x |")
    print(f"| liver: 2D U-Net (best epoch; >= 0.95 at {when}) | {best:.4f} | >= 0.95 in 600 s | {wall:.0f} | "
          f"{load:.1f} | {best / base:.2f}x |")
    print(f"| tumour: HU outliers in the liver (baseline), pooled | {ts['base_all']:.4f} | - | - | - | 1.00x |")
    print(f"| tumour: 2D U-Net, pooled as validated (best epoch {tval['epoch']}; mean per case {tval['dice']:.4f}) | "
          f"{tbest:.4f} | >= 0.7 | {twall:.0f} | {tload:.1f} | - |")
    print(f"| tumour: 2D U-Net, pooled, all {ts['lesions']} lesions | {ts['all']:.4f} | >= 0.7 | - | - | "
          f"{ts['all'] / max(ts['base_all'], 1e-6):.2f}x |")
    print(f"| tumour: 2D U-Net, pooled, {ts['lesions_large']} lesions > 10 mm | {ts['large']:.4f} | >= 0.7 | - | - | "
          f"{ts['large'] / max(ts['base_large'], 1e-6):.2f}x |")
    print("\ntumour model by lesion (pooled Dice of each lesion with the prediction within 3 voxels of it; "
          "contrast: median HU inside minus the liver around it)\n")
    print("| abs(contrast) HU | diameter mm | lesions | voxels | Dice | threshold oracle |\n"
          "|---|---|---:|---:|---:|---:|")
    for row in ts["by_lesion"]:
        (clo, chi), (slo, shi) = row["contrast_hu"], row["diameter_mm"]
        dice, oracle = ("-" if row[k] is None else f"{row[k]:.3f}" for k in ("dice", "threshold_oracle"))
        print(f"| {clo}-{chi or ''} | {slo}-{shi or ''} | {row['lesions']} | {row['voxels']} | {dice} | {oracle} |")
    oracle = "-" if ts["threshold_oracle"] is None else f"{ts['threshold_oracle']:.3f}"
    print(f"\nthreshold oracle (pooled over all lesions: {oracle}): told each lesion's place and the median HU "
          f"inside it and of the liver around it, it marks the liver voxels within 3 voxels of it whose HU smoothed "
          f"by a {ORACLE_SMOOTH_MM} mm Gaussian is on the lesion's side of the midpoint: how visible the lesions "
          "are, not a bound on a model.")
    print("\ntumour pooled Dice per epoch: " + ", ".join(f"{r['epoch']}: {float(r['val_dice_global']):.3f}"
                                                  for r in trows if r["val_dice_global"]))
    print(json.dumps({"liver_dice": best, "liver_095_at": reached, "tumor_dice": tbest, "tumor_pooled": ts,
                      "baseline_dice": base, "liver_wall_s": wall, "tumor_wall_s": twall, "load": [load, tload]}))


if __name__ == "__main__":
    main()
