"""Speed of ``deepliver convert``: slices/s against the PNG-encode-only rate of the same slices, 1 vs 2 workers.

Builds a dataset of synthetic 512x512xN CT cases (a liver block with tumors on most of its slices), then
measures, in the same run, each repetition interleaving all measures (medians of --repeats):

- encode only (the baseline): ``encode_png`` (the encoder convert uses, same zlib level) of the very slices
  convert writes, already windowed in memory;
- encode only with PIL (``compress_level=1``, adaptive row filters): the encoder convert used before, for
  reference;
- read + window + encode: reading each whole image too (``read_nifti_slices``, the reader convert uses),
  the floor of a converter that decompresses every voxel;
- convert with 1 worker and with 2 workers (fresh output folder each time; the dataset check with its
  checksums and label reads, boxes, YOLO / VOC / COCO files included).

Targets (issue 4): convert >= 0.8x encode only; 2 workers >= 1.7x one worker. The load average is printed
before and after (the machine may be shared).

    python benchmarks/convert.py            # 4 cases of 512x512x64
    python benchmarks/convert.py --quick    # 2 cases of 256x256x32
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from deepliver.dataset.convert import ConvertOptions, convert_dataset, dataset_cases
from deepliver.dataset.export import export_case
from deepliver.dataset.slices import (PNG_COMPRESS_LEVEL, canonical_array, canonical_orientation, encode_png,
                                     window_slice)
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.nifti_slices import DEFLATER, read_nifti_slices


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


def time_convert(dataset: Path, out: Path, workers: int) -> tuple[float, float, float, int]:
    """(wall s, CPU s of this process, CPU s of its worker processes, slices written)."""
    if out.exists():
        shutil.rmtree(out)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, cpu = time.perf_counter(), time.process_time()
    result = convert_dataset(dataset, out, ConvertOptions(workers=workers))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's processes have been joined
    workers_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return seconds, cpu, workers_cpu, sum(result.slices.values())


def written_slices(dataset: Path, out: Path) -> list[tuple[Path, int]]:
    """(image path, canonical z) of each slice convert wrote."""
    return [(image_path, int(png.stem.rsplit("_", 1)[1])) for case, image_path, _ in dataset_cases(dataset)
            for png in sorted(out.glob(f"images/*/{case}_*.png"))]


def windowed(slices: list[tuple[Path, int]]) -> list[np.ndarray]:
    """The windowed uint8 slices convert wrote, recomputed in memory from the images."""
    volumes = {path: canonical_array(sitk.ReadImage(str(path))) for path in {p for p, _ in slices}}
    return [window_slice(volumes[path][z], ConvertOptions().window) for path, z in slices]


def read_and_encode(slices: list[tuple[Path, int]]) -> None:
    """Read each whole image, window and encode the slices convert wrote."""
    for path in sorted({p for p, _ in slices}):
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        geometry = Geometry(header.GetSize(), header.GetSpacing(), header.GetOrigin(), header.GetDirection())
        hu = canonical_orientation(geometry).apply(read_nifti_slices(path, 0, header.GetSize()[2]))
        for z in (z for p, z in slices if p == path):
            encode_png(window_slice(hu[z], ConvertOptions().window))


def encode_pil(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def timed(function) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - start, time.process_time() - cpu


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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        tmp = Path(tmp)
        dataset = build_dataset(tmp / "dataset", args.cases, args.size, args.depth)
        time_convert(dataset, tmp / "out", 1)  # warm-up (page cache, imports); gives the slices written
        slices = written_slices(dataset, tmp / "out")
        pixels = windowed(slices)
        wall: dict[str, list[float]] = defaultdict(list)
        cpu: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.repeats):
            for name, function in (("encode", lambda: [encode_png(p) for p in pixels]),
                                   ("pil", lambda: [encode_pil(p) for p in pixels]),
                                   ("floor", lambda: read_and_encode(slices))):
                seconds, cpu_seconds = timed(function)
                wall[name].append(seconds)
                cpu[name].append(cpu_seconds)
            for workers in (1, 2):
                seconds, cpu_seconds, workers_cpu, count = time_convert(dataset, tmp / "out", workers)
                if count != len(pixels):
                    raise RuntimeError(f"convert wrote {count} slices, expected {len(pixels)}")
                wall[f"convert{workers}"].append(seconds)
                # 2 workers: the critical path if each worker had a core (cases split evenly)
                cpu[f"convert{workers}"].append(cpu_seconds + workers_cpu / workers)
    rate = {k: len(pixels) / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: len(pixels) / statistics.median(v) for k, v in cpu.items()}
    load_after = os.getloadavg()
    print(f"{args.cases} case(s) of {args.size}x{args.size}x{args.depth}, {len(pixels)} of "
          f"{args.cases * args.depth} slices written per run, medians of {args.repeats}; deflate by {DEFLATER}; "
          "load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPUs.\n'CPU' columns use "
          "CPU time, robust to a busy machine: this process's, and for 2 workers this process's plus half of its "
          "workers' (the run time if each worker had a core of its own). On a shared machine whose kernel "
          "schedules by session (autogroup), the 2-worker wall figure shows the share of the machine this "
          "session got, not the speedup.\n")
    print("| measure | slices/s (wall) | ratio (wall) | slices/CPU-s | ratio (CPU) | target |")
    print("|---|---:|---:|---:|---:|---|")

    def row(name: str, key: str, base: str = "encode", target: str = "") -> None:
        against = "encode" if base == "encode" else "PIL encode" if base == "pil" else "1 worker"
        cpu_cells = f"{cpu_rate[key]:.1f} | {cpu_rate[key] / cpu_rate[base]:.2f} x {against}"
        print(f"| {name} | {rate[key]:.1f} | {rate[key] / rate[base]:.2f} x {against} | {cpu_cells} | {target} |")

    row("PNG encode only (baseline)", "encode")
    row("PNG encode only, PIL (reference)", "pil")
    row("read whole image + window + encode", "floor")
    row("convert, 1 worker", "convert1", target=">= 0.8")
    row("convert, 1 worker, against PIL encode", "convert1", base="pil")
    row("convert, 2 workers", "convert2", base="convert1", target=">= 1.7")


if __name__ == "__main__":
    main()
