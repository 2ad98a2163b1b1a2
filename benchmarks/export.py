"""Speed of ``export_case`` against SimpleITK writing the same two files, measured in the same run.

One CT case (a phantom from ``make_phantom`` at the requested size, or a synthetic CT-like volume with
``--synthetic``) given as SimpleITK images; medians of ``--repeats`` (default 3), order alternated:

- SimpleITK: ``sitk.WriteImage(image, "image.nii.gz")`` + ``sitk.WriteImage(label, "label.nii.gz")`` with
  default settings (the baseline);
- export, new case: ``export_case`` into a fresh dataset (voxel digest for the case id, int16 image
  written by ``deepliver.dataset.nifti`` at gzip level 1 and hashed on the way, uint8 label through
  ``deepliver.imaging.write_label`` in a second thread with its statistics, lesion count and sha256,
  manifest, dataset.json, all-or-nothing commit);
- export, update: the same case again with a changed label (previous label kept in history; the image
  is not rewritten when its voxels are unchanged).

Target (issue 3): export, new case <= 1.2x SimpleITK.

    python benchmarks/export.py            # 512 x 512 x 200
    python benchmarks/export.py --quick    # 256 x 256 x 48
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from deepliver.dataset import export_case


def synthetic_case(size: tuple[int, int, int], seed: int = 0) -> tuple[sitk.Image, sitk.Image]:
    """CT-like int16 HU volume (body ellipse, noise) and a uint8 label (liver block, a few tumors)."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:y, 0:x]
    body = ((xx - x / 2) / (0.45 * x)) ** 2 + ((yy - y / 2) / (0.35 * y)) ** 2 <= 1
    hu = np.where(body, 40, -1000).astype(np.int16)[None].repeat(z, 0)
    hu += rng.normal(0, 15, hu.shape).astype(np.int16)
    label = np.zeros(hu.shape, np.uint8)
    label[z // 6: z - z // 6, y // 4: y // 2, x // 5: x // 2] = 1
    for _ in range(5):
        cz, cy, cx = rng.integers(z // 4, z - z // 4), rng.integers(y // 4 + 8, y // 2 - 8), rng.integers(x // 5 + 8, x // 2 - 8)
        label[cz - 3: cz + 3, cy - 6: cy + 6, cx - 6: cx + 6] = 2
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.8, 2.5))
    lab = sitk.GetImageFromArray(label)
    lab.CopyInformation(image)
    return image, lab


def make_case(size: tuple[int, int, int], synthetic: bool) -> tuple[sitk.Image, sitk.Image, str]:
    if not synthetic:
        try:
            from deepliver.dataset.phantom import make_phantom
        except ImportError:
            synthetic = True
        else:
            phantom = make_phantom(0, shape=size, n_tumors=4)
            return phantom.image, phantom.label, "phantom"
    image, label = synthetic_case(size)
    return image, label, "synthetic"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 x 256 x 48 instead of 512 x 512 x 200")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="voxels per axis")
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (median reported; default 3)")
    parser.add_argument("--synthetic", action="store_true", help="synthetic volume instead of a phantom")
    args = parser.parse_args()
    size = tuple(args.size) if args.size else ((256, 256, 48) if args.quick else (512, 512, 200))
    image, label, kind = make_case(size, args.synthetic)
    changed = sitk.GetArrayFromImage(label)
    changed[changed.shape[0] // 2, :8, :8] = 2

    work = Path(tempfile.mkdtemp(prefix="deepliver-bench-export-"))
    times: dict[str, list[float]] = {"SimpleITK": [], "export, new case": [], "export, update": []}
    sizes = {}
    try:
        for rep in range(args.repeats):
            run = work / f"run{rep}"
            (run / "sitk").mkdir(parents=True)
            steps = [
                ("SimpleITK", lambda: (sitk.WriteImage(image, str(run / "sitk" / "image.nii.gz")),
                                       sitk.WriteImage(label, str(run / "sitk" / "label.nii.gz")))),
                ("export, new case", lambda: export_case(image, label, run / "ds")),
            ]
            for name, fn in (steps if rep % 2 == 0 else steps[::-1]):
                times[name].append(timed(fn))
            times["export, update"].append(timed(lambda: export_case(image, changed, run / "ds")))
            sizes = {"SimpleITK": _mb(run / "sitk"), "export, new case": _mb(run / "ds" / "imagesTr")
                     + _mb(run / "ds" / "labelsTr", recursive=False)}
            shutil.rmtree(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = statistics.median(times["SimpleITK"])
    print(f"\nexport of one {kind} case {size[0]}x{size[1]}x{size[2]} (int16 image + uint8 label), "
          f"median of {args.repeats}, {os.cpu_count()} CPU(s)\n")
    print("| step | median s | min s | files MB | ratio vs SimpleITK |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        mb = f"{sizes[name]:.1f}" if name in sizes else ""
        print(f"| {name} | {statistics.median(values):.3f} | {min(values):.3f} | {mb} | "
              f"{statistics.median(values) / base:.2f}x |")
    print("\ntarget: export, new case <= 1.20x SimpleITK")


def _mb(folder: Path, recursive: bool = True) -> float:
    files = folder.rglob("*") if recursive else folder.iterdir()
    return sum(p.stat().st_size for p in files if p.is_file()) / 2 ** 20


if __name__ == "__main__":
    main()
