"""Speed of ``deepliver convert``: slices/s against the PNG-encode-only rate of the same slices, 1 vs 2 workers.

Builds a dataset of synthetic 512x512xN CT cases (a liver block with tumors on most of its slices), then
measures, in the same run (medians of --repeats):

- encode only: ``encode_png`` (same encoder, same zlib level) of the very slices convert writes, already
  windowed in memory: the baseline convert cannot beat;
- read + window + encode: reading each image too (SimpleITK), the floor of any converter of NIfTI input;
- convert with 1 worker and with 2 workers (fresh output folder each time; reading, hashing, boxes, YOLO /
  VOC / COCO files included).

Targets (issue 4): convert >= 0.8x encode only; 2 workers >= 1.7x one worker.

    python benchmarks/convert.py            # 4 cases of 512x512x64
    python benchmarks/convert.py --quick    # 2 cases of 256x256x32
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from deepliver.dataset.convert import ConvertOptions, convert_dataset, dataset_cases
from deepliver.dataset.export import export_case
from deepliver.dataset.slices import canonical_array, encode_png, window_slice


def synthetic_case(seed: int, size: int, depth: int) -> tuple[sitk.Image, sitk.Image]:
    """A CT-like volume (HU, int16) and its label: a liver block over most slices, a few tumors on each."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    body = ((x - size / 2) ** 2 / (0.45 * size) ** 2 + (y - size / 2) ** 2 / (0.35 * size) ** 2) <= 1
    hu = np.where(body, 40, -1000).astype(np.int16)[None].repeat(depth, 0)
    hu += rng.normal(0, 15, hu.shape).astype(np.int16)
    label = np.zeros(hu.shape, np.uint8)
    z0, z1 = depth // 8, depth - depth // 8
    label[z0:z1, size // 4: size // 2, size // 5: size // 2] = 1
    for z in range(z0, z1):
        for _ in range(int(rng.integers(0, 4))):
            cy, cx = int(rng.integers(size // 4 + 8, size // 2 - 8)), int(rng.integers(size // 5 + 8, size // 2 - 8))
            label[z, cy - 4:cy + 4, cx - 5:cx + 5] = 2
    hu[label == 1] += 60
    hu[label == 2] -= 30
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((0.8, 0.8, 2.5))
    lab = sitk.GetImageFromArray(label)
    lab.CopyInformation(image)
    return image, lab


def build_dataset(root: Path, cases: int, size: int, depth: int) -> Path:
    for i in range(cases):
        export_case(*synthetic_case(i, size, depth), root)
    return root


def time_convert(dataset: Path, out: Path, workers: int) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, slices written); CPU s only means something for 1 worker."""
    if out.exists():
        shutil.rmtree(out)
    start, cpu = time.perf_counter(), time.process_time()
    result = convert_dataset(dataset, out, ConvertOptions(workers=workers))
    return time.perf_counter() - start, time.process_time() - cpu, sum(result.slices.values())


def written_slices(dataset: Path, out: Path) -> list[np.ndarray]:
    """The windowed uint8 slices convert wrote (recomputed in memory from the images)."""
    options = ConvertOptions()
    slices = []
    for case, image_path, _ in dataset_cases(dataset):
        hu = canonical_array(sitk.ReadImage(str(image_path)))
        for png in sorted(out.glob(f"images/*/{case}_*.png")):
            slices.append(window_slice(hu[int(png.stem.rsplit("_", 1)[1])], options.window))
    return slices


def read_and_encode(dataset: Path, out: Path) -> int:
    """The floor of any converter: read each image, window and encode the slices convert wrote."""
    count = 0
    for case, image_path, _ in dataset_cases(dataset):
        hu = canonical_array(sitk.ReadImage(str(image_path)))
        for png in sorted(out.glob(f"images/*/{case}_*.png")):
            encode_png(window_slice(hu[int(png.stem.rsplit("_", 1)[1])], ConvertOptions().window))
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels")
    parser.add_argument("--depth", type=int, default=64, help="slices per case")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 cases of 256x256x32")
    args = parser.parse_args()
    if args.quick:
        args.cases, args.size, args.depth = 2, 256, 32
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        tmp = Path(tmp)
        dataset = build_dataset(tmp / "dataset", args.cases, args.size, args.depth)
        times, cpu_convert = {1: [], 2: []}, []
        count = 0
        for _ in range(args.repeats):
            for workers in (1, 2):
                seconds, cpu, count = time_convert(dataset, tmp / "out", workers)
                times[workers].append(seconds)
                if workers == 1:
                    cpu_convert.append(cpu)
        pixels = written_slices(dataset, tmp / "out")
        encode, cpu_encode = [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            for p in pixels:
                encode_png(p)
            encode.append(time.perf_counter() - start)
            cpu_encode.append(time.process_time() - cpu)
        floor, cpu_floor = [], []
        for _ in range(args.repeats):
            start, cpu = time.perf_counter(), time.process_time()
            read_and_encode(dataset, tmp / "out")
            floor.append(time.perf_counter() - start)
            cpu_floor.append(time.process_time() - cpu)
    rate_floor, cpu_rate_floor = len(pixels) / statistics.median(floor), len(pixels) / statistics.median(cpu_floor)
    rate_encode = len(pixels) / statistics.median(encode)
    cpu_rate_encode = len(pixels) / statistics.median(cpu_encode)
    rate = {w: count / statistics.median(t) for w, t in times.items()}
    cpu_rate = count / statistics.median(cpu_convert)
    print(f"{args.cases} case(s) of {args.size}x{args.size}x{args.depth}, {count} slices written per run, "
          f"medians of {args.repeats}; 'CPU' columns use this process's CPU time (robust to a busy machine)\n")
    print("| measure | slices/s (wall) | ratio (wall) | slices/CPU-s | ratio (CPU) | target |")
    print("|---|---:|---:|---:|---:|---|")
    print(f"| PNG encode only (baseline) | {rate_encode:.1f} | 1.00 | {cpu_rate_encode:.1f} | 1.00 | |")
    print(f"| read image + window + encode (floor) | {rate_floor:.1f} | {rate_floor / rate_encode:.2f} x encode | "
          f"{cpu_rate_floor:.1f} | {cpu_rate_floor / cpu_rate_encode:.2f} x encode | |")
    print(f"| convert, 1 worker | {rate[1]:.1f} | {rate[1] / rate_encode:.2f} x encode | {cpu_rate:.1f} | "
          f"{cpu_rate / cpu_rate_encode:.2f} x encode | >= 0.8 |")
    print(f"| convert, 2 workers | {rate[2]:.1f} | {rate[2] / rate[1]:.2f} x 1 worker | | | >= 1.7 |")


if __name__ == "__main__":
    main()
