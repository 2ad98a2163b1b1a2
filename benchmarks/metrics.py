"""Benchmark: ``evaluate_pair`` (all metrics, liver and tumor) on a CT-sized label pair, beside MONAI's
Hausdorff / surface-distance calls and SimpleITK's Hausdorff filter on the same liver masks, same run.

    python benchmarks/metrics.py            # 512x512x200, 0.8 x 0.8 x 2.5 mm
    python benchmarks/metrics.py --quick    # 256x256x100

Medians of --repeat runs. ``ours`` rows compute several metrics at once; the library rows one each.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import SimpleITK as sitk

from deepliver.metrics import evaluate_pair, overlap_metrics, surface_metrics

SPACING = (0.8, 0.8, 2.5)  # x, y, z mm


def label_pair(shape, seed=0):
    """A liver-like ellipsoid with 12 spherical tumors (reference) and a shifted, speckled prediction."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]

    def ellipsoid(c, r):
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 < 1

    labels = []
    for shift in (0, 2):
        label = ellipsoid((nz / 2, ny / 2 + shift, 0.45 * nx), (0.3 * nz, 0.28 * ny, 0.33 * nx)).astype(np.uint8)
        labels.append(label)
    for i in range(12):
        c = (nz / 2 + rng.uniform(-0.15, 0.15) * nz, ny / 2 + rng.uniform(-0.15, 0.15) * ny,
             0.45 * nx + rng.uniform(-0.15, 0.15) * nx)
        r = rng.uniform(2, 12)  # mm
        radii = (r / SPACING[2], r / SPACING[1], r / SPACING[0])
        labels[0][ellipsoid(c, radii)] = 2
        if i % 4:  # three quarters of the tumors are found, a little larger
            labels[1][ellipsoid(c, tuple(v * 1.1 for v in radii))] = 2
    speckle = rng.random(shape) < 2e-5
    labels[1][speckle] = 1
    return labels[1], labels[0]


def timed(fns, repeat):
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256x100 instead of 512x512x200")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    x, y, z = args.size or ((256, 256, 100) if args.quick else (512, 512, 200))
    pred, ref = label_pair((z, y, x))
    images = []
    for array in (pred, ref):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(SPACING)
        images.append(image)
    liver_p, liver_r = pred >= 1, ref >= 1
    sp_zyx = SPACING[::-1]

    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    tp, tr = (torch.from_numpy(m[None, None]) for m in (liver_p, liver_r))
    liver_images = [sitk.Cast(im >= 1, sitk.sitkUInt8) for im in images]

    def sitk_hd():
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(*liver_images)
        return f.GetHausdorffDistance()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fns = {
            "ours: evaluate_pair, all metrics, liver + tumor": lambda: evaluate_pair(*images),
            "ours: overlap_metrics (6), liver": lambda: overlap_metrics(liver_p, liver_r),
            "ours: surface_metrics (hd, hd95, assd), liver": lambda: surface_metrics(liver_p, liver_r, sp_zyx),
            "MONAI compute_hausdorff_distance(percentile=95), liver": lambda: compute_hausdorff_distance(
                tp, tr, spacing=sp_zyx, percentile=95),
            "MONAI compute_average_surface_distance, liver": lambda: compute_average_surface_distance(
                tp, tr, symmetric=True, spacing=sp_zyx),
            "SimpleITK HausdorffDistanceImageFilter, liver": sitk_hd,
        }
        times = timed(fns, args.repeat)
        ours = surface_metrics(liver_p, liver_r, sp_zyx)
        monai_hd95 = compute_hausdorff_distance(tp, tr, spacing=sp_zyx, percentile=95).item()
    print(f"labels {x}x{y}x{z} (x, y, z), spacing {SPACING} mm, medians of {args.repeat}; "
          f"liver hd95 ours {ours['hd95']:.4f} mm, MONAI {monai_hd95:.4f} mm, hd ours {ours['hd']:.4f}, "
          f"SimpleITK {sitk_hd():.4f}\n")
    base = times["MONAI compute_hausdorff_distance(percentile=95), liver"]
    print("| call | seconds | ratio to MONAI hd95 |")
    print("|---|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.3f} | {t / base:.2f} |")


if __name__ == "__main__":
    main()
