"""Tumor detector training slices cut to the liver, exactly as ``detect_volume`` cuts them at inference.

``crop_to_liver(data, out, margin_mm)`` reads ``deepliver convert``'s slice lists (``coco_<split>.json``:
which canonical slices of which case, the positives and the negatives it chose) and the source dataset's
volumes, and writes the same slices cut to the liver's square (``deepliver.inference.detect.liver_square``
of the true liver, grown by ``margin_mm``; ``crop_square``; then windowed and resized to the slice size)
into ``out`` in convert's layout: ``images/<split>/<case>_<z:04d>.png``, YOLO ``labels/<split>/*.txt``,
``coco_<split>.json``, ``data.yaml``, ``splits.json``. Both trainers then read ``out`` as they read a
convert output, and the bundle records ``inference["crop"] = "liver"`` so ``deepliver segment`` cuts the
same square around its predicted liver.

Boxes are recomputed on the canonical label (``deepliver.dataset.boxes.volume_boxes``: 8-connected tumor
components per slice) and mapped into the square: the pixel area ``[x_min, x_max + 1)`` becomes
``[(x_min - x0) * s, (x_max + 1 - x0) * s)`` with ``s = size / side``, stored as the inclusive pixels
``floor`` to ``ceil - 1`` (convert's ``scale_box`` rule).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional

import SimpleITK as sitk

from deepliver.errors import InputError
from deepliver.progress import ProgressCallback

__all__ = ["crop_to_liver", "square_boxes"]


def square_boxes(boxes, square: tuple[int, int, int], size: int) -> tuple[tuple[int, int, int, int], ...]:
    """Inclusive canonical-pixel boxes (``deepliver.dataset.boxes.Box`` or ``(x_min, y_min, x_max, y_max)``)
    as inclusive pixels of the ``size`` slice of ``square = (y0, x0, side)`` (clipped; empty ones dropped)."""
    y0, x0, side = square
    scale = size / side
    out = []
    for box in boxes:
        x_min, y_min, x_max, y_max = (int(v) for v in tuple(box)[:4])
        xa = max(int(math.floor((x_min - x0) * scale + 1e-9)), 0)
        ya = max(int(math.floor((y_min - y0) * scale + 1e-9)), 0)
        xb = min(int(math.ceil((x_max + 1 - x0) * scale - 1e-9)) - 1, size - 1)
        yb = min(int(math.ceil((y_max + 1 - y0) * scale - 1e-9)) - 1, size - 1)
        if xa <= xb and ya <= yb:
            out.append((xa, ya, xb, yb))
    return tuple(out)


def _slices_by_case(root: Path, split: str) -> dict[str, list[str]]:
    """``{case: [file names]}`` of ``coco_<split>.json`` (``<case>_<z:04d>.png``)."""
    path = root / f"coco_{split}.json"
    if not path.is_file():
        return {}
    by_case: dict[str, list[str]] = defaultdict(list)
    for image in json.loads(path.read_text(encoding="utf-8"))["images"]:
        by_case[image["file_name"].rsplit("_", 1)[0]].append(image["file_name"])
    return by_case


def _case_slices(image_path: Path, label_path: Path, names: list[str], data, margin_mm: float):
    """``SliceEntry`` + uint8 pixels of one case's slices cut to its liver square."""
    from deepliver.dataset.boxes import volume_boxes
    from deepliver.dataset.detection_formats import SliceEntry
    from deepliver.dataset.slices import Window, canonical_orientation, resize_slice, window_slice
    from deepliver.imaging.geometry import Geometry
    from deepliver.inference.detect import canonical_spacing, crop_square, liver_square
    from deepliver.labels import LIVER, TUMOR

    image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    geometry = Geometry.from_image(image)
    orientation = canonical_orientation(geometry)
    hu = orientation.apply(sitk.GetArrayFromImage(image))
    labels = orientation.apply(sitk.GetArrayFromImage(label))
    square = liver_square(labels >= LIVER.value, canonical_spacing(geometry, orientation), margin_mm)
    if square is None:
        return []
    tumor_boxes = volume_boxes(labels == TUMOR.value)
    window = Window(*data.window)
    out = []
    for name in names:
        z = int(name.rsplit("_", 1)[1].split(".")[0])
        pixels = resize_slice(window_slice(crop_square(hu[z], square, window.low), window), data.size)
        entry = SliceEntry(name, data.size, data.size, square_boxes(tumor_boxes.get(z, []), square, data.size))
        out.append((entry, pixels))
    return out


def crop_to_liver(data, out: str | os.PathLike, margin_mm: float,
                  progress: Optional[ProgressCallback] = None):
    """Write ``data``'s (a ``DetectionData`` of the tumor task) slices cut to the liver into ``out`` (see the
    module docstring; ``out`` is replaced); returns the ``DetectionData`` of ``out``. ``InputError`` when the
    source dataset is unknown (the crop needs the liver labels)."""
    from dataclasses import replace

    from deepliver.atomic import write_bytes_atomic, write_text_atomic
    from deepliver.dataset.convert import dataset_cases
    from deepliver.dataset.detection_formats import coco_json, data_yaml, yolo_text
    from deepliver.dataset.slices import encode_png

    if data.dataset is None:
        raise InputError("the liver crop needs the source dataset folder (its liver labels); train from the "
                         "dataset folder, or set detector.crop to none", data.root)
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    files = {case: (image, label) for case, image, label in dataset_cases(data.dataset)}
    splits = json.loads((data.root / "splits.json").read_text(encoding="utf-8"))
    work = [(split, case, names) for split in ("train", "val", "test")
            for case, names in sorted(_slices_by_case(data.root, split).items())]
    entries: dict[str, list] = defaultdict(list)
    for split in ("train", "val", "test"):  # every split's folders, even empty: data.yaml names them all
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for done, (split, case, names) in enumerate(work, start=1):
        if case not in files:
            raise InputError(f"case {case} of coco_{split}.json is not in the dataset {data.dataset}; convert "
                             "again from this dataset", data.root)
        for entry, pixels in _case_slices(*files[case], names, data, margin_mm):
            write_bytes_atomic(out / "images" / split / entry.file_name, encode_png(pixels))
            write_text_atomic(out / "labels" / split / f"{entry.stem}.txt", yolo_text(entry))
            entries[split].append(entry)
        if progress:
            progress("liver crop", done, len(work))
    for split in ("train", "val", "test"):
        write_text_atomic(out / f"coco_{split}.json", coco_json(entries[split], data.task))
    write_text_atomic(out / "data.yaml", data_yaml(str(out.resolve()), data.task))
    write_text_atomic(out / "splits.json", json.dumps(splits, indent=2) + "\n")
    return replace(data, root=out)
