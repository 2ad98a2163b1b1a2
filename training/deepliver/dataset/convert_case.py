"""One case of ``deepliver convert``: plan its slices from the label, then write them.

``convert_case`` (both steps) runs in a worker process, so it takes and returns plain picklable values
(paths, dicts).
The plan needs only the label; writing reads the image. Arrays are canonical ``(z, y, x)`` (see
``deepliver.dataset.slices``); boxes are inclusive pixel boxes in the written (possibly resized) slice.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from deepliver.dataset.boxes import scale_box, volume_boxes
from deepliver.dataset.detection_formats import SliceEntry, voc_xml, yolo_text
from deepliver.dataset.slices import Window, canonical_orientation, encode_png, resize_slice, window_slice
from deepliver.errors import GeometryError, LabelError, ReadError
from deepliver.imaging.volumes import read_label, read_volume
from deepliver.labels import LIVER, TUMOR

__all__ = ["convert_case", "plan_case", "write_case", "choose_negatives", "record_path"]


def record_path(out: Path, case: str) -> Path:
    """Where the per-case record of a conversion lives: ``OUT/.convert/<case>.json``."""
    return Path(out) / ".convert" / f"{case}.json"


def choose_negatives(candidates_inside: list[int], candidates_outside: list[int], count: int,
                     seed: int, case: str) -> list[int]:
    """``count`` slice indices without a box, drawn first from ``candidates_inside`` (the liver's z-range),
    then from ``candidates_outside``; reproducible from ``(seed, case)`` alone. Sorted ascending."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{seed}/{case}".encode()).digest()[:8], "big"))
    chosen: list[int] = []
    for pool in (sorted(candidates_inside), sorted(candidates_outside)):
        take = min(count - len(chosen), len(pool))
        if take > 0:
            chosen.extend(int(pool[i]) for i in rng.choice(len(pool), size=take, replace=False))
    return sorted(chosen)


def plan_case(case: str, label_path: str, checksums: dict[str, str], settings: dict[str, Any],
              previous: Optional[dict]) -> dict[str, Any]:
    """The slices to write and their boxes, from the label alone.

    ``checksums``: ``{"image_sha256", "label_sha256"}`` of the case's files (from its manifest, verified by
    the dataset check); ``settings``: the output-affecting options (``ConvertOptions.settings()``).
    ``previous`` is the case's record from an earlier run: when its checksums and settings match, its plan
    is reused without reading the label.
    Returns ``{"case", "image_sha256", "label_sha256", "settings_key", "liver", "grid" (canonical z, y, x
    shape), "width", "height" (of the written slices), "slices": [{"z", "boxes"}]}``; ``liver`` False means
    the case has no liver voxel and is skipped.
    """
    plan = {"case": case, "image_sha256": checksums["image_sha256"], "label_sha256": checksums["label_sha256"],
            "settings_key": settings["key"]}
    if previous and all(previous.get(k) == plan[k] for k in ("image_sha256", "label_sha256", "settings_key")):
        return {**plan, **{k: previous[k] for k in ("liver", "grid", "width", "height", "slices")}}
    label = _read_label_fast(label_path)
    array = canonical_orientation(label).apply(sitk.GetArrayFromImage(label))
    depth, height, width = array.shape
    liver_z = np.flatnonzero((array >= LIVER.value).any(axis=(1, 2)))
    out_w, out_h = (settings["size"], settings["size"]) if settings["size"] else (width, height)
    plan.update(liver=bool(liver_z.size), grid=[depth, height, width], width=out_w, height=out_h, slices=[])
    if not liver_z.size:
        return plan
    mask = array >= LIVER.value if settings["task"] == "liver" else array == TUMOR.value
    positives = volume_boxes(mask, settings["min_box_pixels"])
    if (out_w, out_h) != (width, height):
        sx, sy = out_w / width, out_h / height
        positives = {z: [scale_box(b, sx, sy, out_w, out_h) for b in boxes] for z, boxes in positives.items()}
    empty = [z for z in range(depth) if z not in positives]
    lo, hi = int(liver_z[0]), int(liver_z[-1])
    count = int(math.floor(settings["background_ratio"] * len(positives) + 0.5))
    negatives = choose_negatives([z for z in empty if lo <= z <= hi], [z for z in empty if not lo <= z <= hi],
                                 count, settings["seed"], case)
    rows = {z: [b.as_list() for b in boxes] for z, boxes in positives.items()}
    rows.update({z: [] for z in negatives})
    plan["slices"] = [{"z": z, "boxes": rows[z]} for z in sorted(rows)]
    return plan


def _read_label_fast(path: str) -> sitk.Image:
    """A uint8 label map; values checked by their maximum only (a full check costs ~0.7 s per CT;
    ``deepliver check`` does it). Other pixel types get ``read_label``'s full check."""
    label = read_volume(path)
    if label.GetPixelID() != sitk.sitkUInt8:
        return read_label(path)
    top = int(sitk.GetArrayViewFromImage(label).max())
    if top > TUMOR.value:
        raise LabelError(f"label value {top} is outside the label table (0 background, 1 liver, 2 tumor)", path)
    return label


def convert_case(out: str, case: str, image_path: str, label_path: str, checksums: dict[str, str], split: str,
                 settings: dict[str, Any], previous: Optional[dict]) -> dict[str, Any]:
    """Plan and write one case (see ``plan_case`` and ``write_case``); returns its record, or its plan
    (``liver`` False, nothing written) when the label has no liver voxel."""
    plan = plan_case(case, label_path, checksums, settings, previous)
    return write_case(out, image_path, plan, split, settings) if plan["liver"] else plan


def slice_entries(plan: dict[str, Any]) -> list[SliceEntry]:
    """The ``SliceEntry`` of each planned slice (PNG name ``<case>_<z:04d>.png``)."""
    return [SliceEntry(f"{plan['case']}_{s['z']:04d}.png", plan["width"], plan["height"],
                       tuple(tuple(b) for b in s["boxes"])) for s in plan["slices"]]


def write_case(out: str, image_path: str, plan: dict[str, Any], split: str, settings: dict[str, Any]) -> dict:
    """Write the planned slices of one case into ``out`` (PNG, and YOLO / VOC files per ``settings``), then
    its record ``OUT/.convert/<case>.json`` (last, so a record means the files are complete). Returns the
    record: the plan plus ``split`` and ``files`` (paths relative to ``out``, POSIX separators)."""
    out = Path(out)
    image = read_volume(image_path)
    orientation = canonical_orientation(image)
    hu = orientation.apply(sitk.GetArrayViewFromImage(image))  # ``image`` stays referenced while in use
    if list(hu.shape) != list(plan["grid"]):
        raise GeometryError(f"canonical image grid (z, y, x) {hu.shape} differs from its label's "
                            f"{tuple(plan['grid'])}; re-export the case", image_path)
    window = Window(*settings["window"])
    files = []
    for entry, z in zip(slice_entries(plan), (s["z"] for s in plan["slices"])):
        pixels = window_slice(hu[z], window)
        if settings["size"]:
            pixels = resize_slice(pixels, settings["size"])
        files.append(_write(out, f"images/{split}/{entry.file_name}", encode_png(pixels)))
        if "yolo" in settings["formats"]:
            files.append(_write(out, f"labels/{split}/{entry.stem}.txt", yolo_text(entry)))
        if "voc" in settings["formats"]:
            files.append(_write(out, f"annotations/{split}/{entry.stem}.xml",
                                voc_xml(entry, split, settings["task"])))
    record = {**plan, "split": split, "files": files}
    write_json_atomic(record_path(out, plan["case"]), record)
    return record


def _write(out: Path, relative: str, data: bytes | str) -> str:
    try:
        if isinstance(data, str):
            write_text_atomic(out / relative, data)
        else:
            write_bytes_atomic(out / relative, data)
    except OSError as e:
        raise ReadError(f"cannot write ({e.strerror})", out / relative) from e
    return relative
