"""Speed of reading a DICOM CT series: ``deepliver.imaging.read_volume(folder)`` against SimpleITK's
``ImageSeriesReader`` alone (``GetGDCMSeriesFileNames`` + ``Execute``), same series, same run.

Writes a phantom CT (``deepliver.dataset.phantom.make_phantom``; a smooth random volume with
``--source synthetic``) as a DICOM series in a temporary folder, reads it once with each reader (warm
page cache, imports done), checks that both give the same voxels and geometry, then times alternating
runs and reports medians. Target (issue 2): ratio SimpleITK / deepliver >= 1.0.

    python benchmarks/io.py            # 512 x 512 x 200
    python benchmarks/io.py --quick    # 256 x 256 x 64
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepliver.imaging import read_volume, same_geometry, write_dicom_series


def synthetic_ct(size: tuple[int, int, int], seed: int = 0) -> sitk.Image:
    """A smooth random CT-like int16 volume (HU) with realistic spacing and a flipped direction."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (max(2, z // 8), max(2, y // 16), max(2, x // 16)))
    smooth = ndimage.zoom(coarse, (z / coarse.shape[0], y / coarse.shape[1], x / coarse.shape[2]), order=1)
    hu = np.clip(40 + 300 * smooth + rng.normal(0, 12, smooth.shape), -1024, 3071).astype(np.int16)
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.78, 0.78, 2.5))
    image.SetOrigin((-200.0, -180.0, -350.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def make_image(size: tuple[int, int, int], source: str) -> tuple[sitk.Image, str]:
    if source == "phantom":
        try:
            from deepliver.dataset.phantom import make_phantom
        except ImportError:
            source = "synthetic"
        else:
            return make_phantom(seed=0, shape=size).image, "phantom (make_phantom seed 0)"
    return synthetic_ct(size), "synthetic smooth random"


def read_simpleitk(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader_GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def timed(function, *args) -> float:
    start = time.perf_counter()
    result = function(*args)
    elapsed = time.perf_counter() - start
    del result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 x 256 x 64 instead of 512 x 512 x 200")
    parser.add_argument("--size", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per reader (default 5)")
    parser.add_argument("--source", choices=("phantom", "synthetic"), default="phantom")
    args = parser.parse_args()
    size = tuple(args.size) if args.size else ((256, 256, 64) if args.quick else (512, 512, 200))

    image, source = make_image(size, args.source)
    with tempfile.TemporaryDirectory(prefix="deepliver-io-") as tmp:
        folder = Path(tmp) / "series"
        start = time.perf_counter()
        write_dicom_series(image, folder, uid_seed=0)
        write_s = time.perf_counter() - start

        ours, theirs = read_volume(folder), read_simpleitk(folder)  # warm-up and correctness check
        same_voxels = np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))
        same_geo = same_geometry(ours, theirs, tol=1e-4) and same_geometry(ours, image, tol=1e-4)
        del ours, theirs

        times = {"deepliver read_volume": [], "SimpleITK ImageSeriesReader": []}
        for _ in range(max(3, args.repeats)):  # alternate, so both see the same machine load
            times["deepliver read_volume"].append(timed(read_volume, folder))
            times["SimpleITK ImageSeriesReader"].append(timed(read_simpleitk, folder))

    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["SimpleITK ImageSeriesReader"] / medians["deepliver read_volume"]
    print(f"DICOM series {size[0]}x{size[1]}x{size[2]} int16, {source}; write_dicom_series {write_s:.2f} s; "
          f"same voxels: {same_voxels}, same geometry: {same_geo}; {len(times['deepliver read_volume'])} runs\n")
    print("| reader | median (s) | min (s) | max (s) |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.3f} | {min(values):.3f} | {max(values):.3f} |")
    print(f"\nratio SimpleITK / deepliver: **{ratio:.2f}x** (target >= 1.0)")


if __name__ == "__main__":
    main()
