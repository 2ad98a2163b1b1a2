"""Benchmark: each liver post-processing step vs the fastest library call for the same step, same run.

    python benchmarks/postprocess.py            # 512x512x200 mask, 0.8 x 0.8 x 2.5 mm
    python benchmarks/postprocess.py --quick    # 256x256x100

The mask: a large ellipsoid blob with one-voxel holes, a closed cavity and a tunnel along z, plus ~7,000
speckle components (seeded). Each step gets the input it sees in the pipeline (largest component: the
noisy mask; the others: its largest component). Times are medians of --repeat runs; ratio = ours /
baseline (target <= 1.5). "same" says whether both give the same voxels.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cc3d
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepliver.postprocess import (PostprocessOptions, binary_close_mm, ellipsoid, fill_holes_2d, fill_holes_3d,
                                   largest_component, postprocess_liver)

SPACING = (0.8, 0.8, 2.5)  # x, y, z mm


def noisy_mask(shape, speckles=7000, seed=0):
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.ogrid[:nz, :ny, :nx]
    blob = (((z - nz / 2) / (0.35 * nz)) ** 2 + ((y - ny / 2) / (0.3 * ny)) ** 2
            + ((x - 0.45 * nx) / (0.35 * nx)) ** 2 < 1)
    blob &= rng.random(shape) > 0.002  # one-voxel holes
    cz, cy, cx = nz // 2, ny // 2, int(0.45 * nx)
    blob[cz - 3:cz + 3, cy - 8:cy + 8, cx - 8:cx + 8] = False  # a closed cavity
    blob[:, cy + 20:cy + 24, cx + 20:cx + 24] = False  # a tunnel along z: holes in 2D, not in 3D
    idx = rng.integers(0, blob.size, speckles)
    flat = blob.ravel()
    flat[idx] = True
    return blob


def timed(fns, repeat):
    """Median seconds and last output of each function; the functions run in turn (round robin), so a
    busy machine slows them all alike."""
    times = {name: [] for name in fns}
    outs = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: (statistics.median(t), outs[name]) for name, t in times.items()}


def sitk_largest(mask):
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.view(np.uint8)), True)
    return sitk.GetArrayFromImage(sitk.RelabelComponent(cc)) == 1


def sitk_fill_3d(mask):
    return sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mask.view(np.uint8)))).view(bool)


def sitk_fill_2d(mask):
    out = mask.copy()
    for z in np.flatnonzero(mask.any(axis=(1, 2))):
        image = sitk.GetImageFromArray(mask[z].view(np.uint8))
        out[z] = sitk.GetArrayFromImage(sitk.BinaryFillhole(image)).view(bool)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256x100 instead of 512x512x200")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--closing-mm", type=float, default=PostprocessOptions().liver_closing_mm)
    args = parser.parse_args(argv)
    x, y, z = args.size or ((256, 256, 100) if args.quick else (512, 512, 200))
    speckles = int(9000 * (x * y * z) / (512 * 512 * 200))  # ~7,000 components at full size
    mask = noisy_mask((z, y, x), speckles)
    n_components = cc3d.connected_components(mask, connectivity=26, return_N=True)[1]
    r = args.repeat
    rows = []

    res = timed({"ours": lambda: largest_component(mask),
                 "SimpleITK ConnectedComponent+Relabel": lambda: sitk_largest(mask),
                 "cc3d.largest_k": lambda: cc3d.largest_k(mask, 1, connectivity=26) > 0}, r)
    t_ours, ours = res.pop("ours")
    name, (t_ref, _) = min(res.items(), key=lambda item: item[1][0])
    same = all(np.array_equal(ours, out) for _, out in res.values())
    rows.append(("largest component (26)", t_ours, name, t_ref, same))
    liver = ours

    se = ellipsoid(args.closing_mm, SPACING)
    steps = [
        (f"closing {args.closing_mm} mm, ellipsoid {se.shape[::-1]} vox",
         lambda: binary_close_mm(liver, args.closing_mm, SPACING),
         "scipy binary_closing, full grid", lambda: ndimage.binary_closing(liver, se)),
        ("hole filling 2D (axial)", lambda: fill_holes_2d(liver), "SimpleITK BinaryFillhole per slice",
         lambda: sitk_fill_2d(liver)),
        ("hole filling 3D", lambda: fill_holes_3d(liver), "SimpleITK BinaryFillhole", lambda: sitk_fill_3d(liver)),
    ]
    for step, ours_fn, name, ref_fn in steps:
        res = timed({"ours": ours_fn, "ref": ref_fn}, r)
        rows.append((step, res["ours"][0], name, res["ref"][0], np.array_equal(res["ours"][1], res["ref"][1])))

    options = PostprocessOptions(liver_closing_mm=args.closing_mm)
    t_ours = timed({"ours": lambda: postprocess_liver(mask, SPACING, options, record=[])}, r)["ours"][0]
    t_sum = sum(row[3] for row in rows)
    rows.append(("whole liver post-processing", t_ours, "sum of the baselines above", t_sum, None))

    print(f"mask {x}x{y}x{z} (x, y, z), spacing {SPACING} mm, {n_components} components, "
          f"medians of {r}\n")
    print("| step | ours (s) | fastest library call | library (s) | ratio | same voxels |")
    print("|---|---:|---|---:|---:|---|")
    for step, t_ours, name, t_ref, same in rows:
        same_text = "-" if same is None else ("yes" if same else "no")
        print(f"| {step} | {t_ours:.3f} | {name} | {t_ref:.3f} | {t_ours / t_ref:.2f} | {same_text} |")


if __name__ == "__main__":
    main()
