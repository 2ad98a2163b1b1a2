"""Text of the detection formats: YOLO labels and ``data.yaml``, Pascal VOC XML, COCO JSON.

Boxes come in as inclusive pixel boxes ``[x_min, y_min, x_max, y_max]`` (0-based, see
``deepliver.dataset.boxes``); a box covers the pixel area ``[x_min, x_max + 1) x [y_min, y_max + 1)``.

- YOLO: one line ``class cx cy w h`` per box, normalized by the image size, 6 decimals:
  ``cx = (x_min + x_max + 1) / 2 / W``, ``w = (x_max - x_min + 1) / W`` (same for y with ``H``); class 0.
  An image without boxes gets an empty file.
- Pascal VOC: the VOC devkit's **1-based** inclusive pixel coordinates, ``xmin = x_min + 1``,
  ``xmax = x_max + 1`` (subtract 1 to get numpy indices). ``depth`` is 1 (8-bit grayscale PNG).
  An image without boxes gets a file with no ``object``.
- COCO: ``bbox = [x_min, y_min, w, h]`` with ``w = x_max - x_min + 1`` (pixel edges, 0-based),
  ``area = w * h`` (box area: there are no segmentation polygons), ``iscrowd = 0``, category id 1.
  Image ids and annotation ids count from 1 in file order; ``file_name`` is the PNG name inside
  ``images/<split>/``. An image without boxes is listed with no annotation.

Everything is deterministic: no dates, JSON keys sorted, fixed number formatting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Sequence
from xml.sax.saxutils import escape

from deepliver.errors import ConfigError

__all__ = ["FORMATS", "SliceEntry", "parse_formats", "yolo_text", "voc_xml", "coco_document", "coco_json",
           "data_yaml", "COCO_CATEGORY_ID"]

FORMATS = ("yolo", "voc", "coco")
COCO_CATEGORY_ID = 1


@dataclass(frozen=True)
class SliceEntry:
    """One written slice: PNG name (inside ``images/<split>/``), size in pixels, inclusive boxes."""

    file_name: str
    width: int
    height: int
    boxes: tuple[tuple[int, int, int, int], ...]

    @property
    def stem(self) -> str:
        return self.file_name.rsplit(".", 1)[0]


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"yolo,voc"`` -> ``("yolo", "voc")`` in canonical order; ``ConfigError`` naming unknown ones."""
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"unknown format(s) {', '.join(unknown) or '(none given)'}; choose from "
                          f"{', '.join(FORMATS)} (comma-separated)")
    return tuple(f for f in FORMATS if f in names)


def yolo_text(entry: SliceEntry, class_id: int = 0) -> str:
    """The YOLO label file of ``entry`` (empty string when it has no box)."""
    lines = []
    for x0, y0, x1, y1 in entry.boxes:
        cx = (x0 + x1 + 1) / 2.0 / entry.width
        cy = (y0 + y1 + 1) / 2.0 / entry.height
        w = (x1 - x0 + 1) / entry.width
        h = (y1 - y0 + 1) / entry.height
        lines.append(f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n")
    return "".join(lines)


def voc_xml(entry: SliceEntry, folder: str, class_name: str) -> str:
    """The Pascal VOC annotation of ``entry`` (1-based coordinates, see the module docstring)."""
    objects = "".join(
        f"  <object>\n    <name>{escape(class_name)}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <bndbox>\n"
        f"      <xmin>{x0 + 1}</xmin>\n      <ymin>{y0 + 1}</ymin>\n"
        f"      <xmax>{x1 + 1}</xmax>\n      <ymax>{y1 + 1}</ymax>\n    </bndbox>\n  </object>\n"
        for x0, y0, x1, y1 in entry.boxes)
    return (f"<annotation>\n  <folder>{escape(folder)}</folder>\n  <filename>{escape(entry.file_name)}</filename>\n"
            f"  <source>\n    <database>deepliver</database>\n  </source>\n"
            f"  <size>\n    <width>{entry.width}</width>\n    <height>{entry.height}</height>\n"
            f"    <depth>1</depth>\n  </size>\n  <segmented>0</segmented>\n{objects}</annotation>\n")


def coco_document(entries: Iterable[SliceEntry], class_name: str) -> dict:
    """A COCO detection document for ``entries`` (in the given order)."""
    images, annotations = [], []
    for image_id, entry in enumerate(entries, start=1):
        images.append({"id": image_id, "file_name": entry.file_name, "width": entry.width,
                       "height": entry.height})
        for x0, y0, x1, y1 in entry.boxes:
            w, h = x1 - x0 + 1, y1 - y0 + 1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": COCO_CATEGORY_ID, "bbox": [x0, y0, w, h], "area": w * h,
                                "iscrowd": 0})
    return {"info": {"description": f"deepliver convert: {class_name} boxes"},
            "images": images, "annotations": annotations,
            "categories": [{"id": COCO_CATEGORY_ID, "name": class_name, "supercategory": "liver"}]}


def coco_json(entries: Iterable[SliceEntry], class_name: str) -> str:
    """``coco_document`` as JSON text (sorted keys, compact, trailing newline)."""
    return json.dumps(coco_document(entries, class_name), sort_keys=True, separators=(",", ":")) + "\n"


def data_yaml(root: str, class_name: str) -> str:
    """The ultralytics ``data.yaml``: absolute dataset ``path`` (ultralytics resolves a relative one against
    its own datasets folder), image folders relative to it, class 0 named ``class_name``."""
    quoted = json.dumps(str(root))  # a JSON string is a valid YAML double-quoted scalar
    return (f"path: {quoted}\ntrain: images/train\nval: images/val\ntest: images/test\n"
            f"nc: 1\nnames:\n  0: {class_name}\n")
