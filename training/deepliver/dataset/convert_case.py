"""One case of ``deepliver convert``, in two steps that run in worker processes (plain picklable values in
and out: paths, dicts).

1. ``check_and_plan``: the dataset check of the case (``deepliver.dataset.check.check_case``) and, when it
   passes, the slices to write and their boxes, from the label the check has just read (read once).
2. ``write_case``: reads the image, only from its first to its last planned slice (the voxels past the
   last planned slice are never decompressed; ``deepliver.imaging.nifti_slices``), windows and
   encodes the planned slices and writes them with their YOLO / VOC files.

Arrays are canonical ``(z, y, x)`` (see ``deepliver.dataset.slices``); boxes are inclusive pixel boxes in
the written (possibly resized) slice.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver.atomic import write_files_atomic, write_json_atomic
from deepliver.dataset.boxes import scale_box, volume_boxes
from deepliver.dataset.check import check_case
from deepliver.dataset.detection_formats import SliceEntry, voc_xml, yolo_text
from deepliver.dataset.slices import Window, canonical_orientation, encode_png, resize_slice, window_slice
from deepliver.errors import GeometryError, ReadError
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.nifti_slices import read_nifti_slices
from deepliver.imaging.volumes import read_volume, volume_extension
from deepliver.labels import LIVER, TUMOR

__all__ = ["check_and_plan", "plan_case", "write_case", "choose_negatives", "record_path", "slice_entries",
           "blocking_problems", "manifest_checksums"]

_EMPTY_LIVER = ": empty liver:"  # check_case's wording; convert skips such a case instead of failing
_INTEGER_PIXELS = (sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                   sitk.sitkUInt64, sitk.sitkInt64)


def record_path(out: Path, case: str) -> Path:
    """Where the per-case record of a conversion lives: ``OUT/.convert/<case>.json``."""
    return Path(out) / ".convert" / f"{case}.json"


def blocking_problems(problems: list[str]) -> list[str]:
    """The dataset problems that stop a conversion: all but an empty liver (such a case is skipped)."""
    return [p for p in problems if _EMPTY_LIVER not in p]


def manifest_checksums(manifest: dict[str, Any]) -> dict[str, str]:
    """``{"image_sha256", "label_sha256"}`` recorded in a case manifest."""
    return {"image_sha256": manifest["image"]["sha256"], "label_sha256": manifest["label"]["sha256"]}


def check_and_plan(dataset: str, case: str, settings: dict[str, Any], previous: Optional[dict]) -> dict[str, Any]:
    """The dataset check of one case and, when nothing blocks the conversion, its plan (``plan_case`` on the
    label the check read). Returns ``{"problems": [...], "manifest": dict | None, "plan": dict | None}``."""
    checked = check_case(dataset, case)
    plan = None
    if checked.manifest is not None and checked.label is not None and not blocking_problems(checked.problems):
        plan = plan_case(case, checked.label, manifest_checksums(checked.manifest), settings, previous)
    return {"problems": checked.problems, "manifest": checked.manifest, "plan": plan}


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


def plan_case(case: str, label: sitk.Image, checksums: dict[str, str], settings: dict[str, Any],
              previous: Optional[dict]) -> dict[str, Any]:
    """The slices to write and their boxes, from the label alone (an integer label map whose values the
    dataset check has verified).

    ``checksums``: ``{"image_sha256", "label_sha256"}`` of the case's files (from its manifest, verified by
    the dataset check); ``settings``: the output-affecting options (``ConvertOptions.settings()``).
    ``previous`` is the case's record from an earlier run: when its checksums and settings match, its plan
    is reused (boxes not recomputed).
    Returns ``{"case", "image_sha256", "label_sha256", "settings_key", "liver", "grid" (canonical z, y, x
    shape), "width", "height" (of the written slices), "slices": [{"z", "boxes"}]}``; ``liver`` False means
    the case has no liver voxel and is skipped.
    """
    plan = {"case": case, "image_sha256": checksums["image_sha256"], "label_sha256": checksums["label_sha256"],
            "settings_key": settings["key"]}
    if previous and all(previous.get(k) == plan[k] for k in ("image_sha256", "label_sha256", "settings_key")):
        return {**plan, **{k: previous[k] for k in ("liver", "grid", "width", "height", "slices")}}
    array = canonical_orientation(label).apply(sitk.GetArrayViewFromImage(label))  # ``label`` is referenced
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


def slice_entries(plan: dict[str, Any]) -> list[SliceEntry]:
    """The ``SliceEntry`` of each planned slice (PNG name ``<case>_<z:04d>.png``)."""
    return [SliceEntry(f"{plan['case']}_{s['z']:04d}.png", plan["width"], plan["height"],
                       tuple(tuple(b) for b in s["boxes"])) for s in plan["slices"]]


def write_case(out: str, image_path: str, plan: dict[str, Any], split: str, settings: dict[str, Any]) -> dict:
    """Write the planned slices of one case into ``out`` (PNG, and YOLO / VOC files per ``settings``), then
    its record ``OUT/.convert/<case>.json`` (last, so a record means the files are complete). Returns the
    record: the plan plus ``split`` and ``files`` (paths relative to ``out``, POSIX separators)."""
    out = Path(out)
    wanted = [s["z"] for s in plan["slices"]]
    hu, first = _canonical_slab(image_path, wanted, plan["grid"]) if wanted else (None, 0)  # none: no read
    window = Window(*settings["window"])
    files = []
    for entry, z in zip(slice_entries(plan), wanted):
        pixels = window_slice(hu[z - first], window)
        if settings["size"]:
            pixels = resize_slice(pixels, settings["size"])
        written = [(f"images/{split}/{entry.file_name}", encode_png(pixels))]
        if "yolo" in settings["formats"]:
            written.append((f"labels/{split}/{entry.stem}.txt", yolo_text(entry).encode()))
        if "voc" in settings["formats"]:
            written.append((f"annotations/{split}/{entry.stem}.xml",
                            voc_xml(entry, split, settings["task"]).encode()))
        try:
            write_files_atomic((out / relative, data) for relative, data in written)
        except OSError as e:
            raise ReadError(f"cannot write ({e.strerror})", e.filename or out) from e
        files.extend(relative for relative, _ in written)
    record = {**plan, "split": split, "files": files}
    write_json_atomic(record_path(out, plan["case"]), record)
    return record


def _canonical_slab(image_path: str, wanted: list[int], grid: list[int]) -> tuple[np.ndarray, int]:
    """``(slab, first)``: the canonical ``(z, y, x)`` HU voxels of canonical slices ``first`` to at least
    ``max(wanted)`` of the image (``wanted`` not empty). For an integer 3D image whose file slice axis is
    the canonical z axis only the file slices from the first to the last wanted one are read (nothing
    further is decompressed: ``read_nifti_slices`` for plain integer NIfTI, else SimpleITK's streaming
    reader; the dataset check has verified the file's sha256, so it is complete); else
    the whole image, with ``read_volume``'s checks. ``GeometryError`` when the canonical grid differs from
    ``grid`` (the label's)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(image_path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        reader = None  # read_volume below raises the ReadError that names the problem
    if reader is not None and reader.GetDimension() == 3 and reader.GetNumberOfComponents() == 1 \
            and reader.GetPixelID() in _INTEGER_PIXELS and reader.GetSize()[2] > 1:
        orientation = canonical_orientation(Geometry(reader.GetSize(), reader.GetSpacing(), reader.GetOrigin(),
                                                     reader.GetDirection()))
        _check_grid(tuple(reader.GetSize()[::-1]), orientation, grid, image_path)
        depth = reader.GetSize()[2]
        lo, hi = 0, depth
        if orientation.axes[0] == 0:  # file slices [lo, hi) hold the wanted canonical slices
            lo, hi = (depth - 1 - max(wanted), depth - min(wanted)) if orientation.flip[0] else \
                (min(wanted), max(wanted) + 1)
        voxels = read_nifti_slices(image_path, lo, hi) if volume_extension(image_path) in (".nii", ".nii.gz") \
            else None
        if voxels is None:  # not a plain integer NIfTI: SimpleITK streams the region
            reader.SetExtractIndex((0, 0, lo))
            reader.SetExtractSize((reader.GetSize()[0], reader.GetSize()[1], hi - lo))
            try:
                voxels = sitk.GetArrayFromImage(reader.Execute())
            except RuntimeError as e:
                raise ReadError(f"cannot read this image ({str(e).strip().splitlines()[-1][:160]})",
                                image_path) from e
        return orientation.apply(voxels), (depth - hi if orientation.flip[0] else lo)
    image = read_volume(image_path)
    orientation = canonical_orientation(image)
    _check_grid(tuple(image.GetSize()[::-1]), orientation, grid, image_path)
    return orientation.apply(sitk.GetArrayFromImage(image)), 0


def _check_grid(shape: tuple[int, ...], orientation, grid: list[int], path: str) -> None:
    canonical = tuple(shape[a] for a in orientation.axes)
    if list(canonical) != list(grid):
        raise GeometryError(f"canonical image grid (z, y, x) {canonical} differs from its label's "
                            f"{tuple(grid)}; re-export the case", path)
