"""Shared fixtures of the dataset tests. Fixtures of the export/check tests are named ``ds_*``.

Volumes are small (z, y, x) = (12, 40, 48) on an oblique, right-handed grid so geometry mistakes show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from deepliver.imaging import write_label, write_volume
from deepliver.imaging.geometry import Geometry

DS_SHAPE = (12, 40, 48)  # z, y, x


def ds_geometry() -> Geometry:
    """An oblique grid (30 degrees about z), anisotropic spacing, non-zero origin."""
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    return Geometry(size=(DS_SHAPE[2], DS_SHAPE[1], DS_SHAPE[0]), spacing=(0.75, 0.8, 2.5),
                    origin=(-120.5, 30.25, -44.0), direction=(c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))


def ds_make_image(seed: int = 0) -> sitk.Image:
    """A CT-like int16 image in HU: air outside an ellipse, noisy soft tissue inside."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:DS_SHAPE[0], :DS_SHAPE[1], :DS_SHAPE[2]]
    body = ((y - 20) / 18.0) ** 2 + ((x - 24) / 22.0) ** 2 < 1
    array = np.where(body, 40 + rng.normal(0, 20, DS_SHAPE), -1000).astype(np.int16)
    return ds_geometry().image_from_array(array)


def ds_make_label(seed: int = 0) -> np.ndarray:
    """A uint8 (z, y, x) label: a liver box with two tumors, one of them two blobs touching only at a
    corner (one lesion 26-connected, two 6-connected), plus a separate single-voxel tumor."""
    label = np.zeros(DS_SHAPE, np.uint8)
    shift = seed % 3
    label[2:10, 8 + shift:30, 10:38] = 1
    label[4:6, 12:15, 14:17] = 2
    label[6:8, 15:17, 17:19] = 2  # touches the first blob only at the corner (5,14,16)-(6,15,17)
    label[8, 25, 30 + shift] = 2
    return label


@dataclass
class DsPair:
    """A case on disk: image and label files, and the arrays written."""

    image_path: Path
    label_path: Path
    image: sitk.Image
    label: np.ndarray


def ds_write_pair(folder: Path, seed: int = 0, image_name: str = "image.nii.gz") -> DsPair:
    folder.mkdir(parents=True, exist_ok=True)
    image, label = ds_make_image(seed), ds_make_label(seed)
    image_path = write_volume(image, folder / image_name)
    label_path = write_label(label, folder / "label.nii.gz", image)
    return DsPair(image_path, label_path, image, label)


@pytest.fixture
def ds_pair(tmp_path) -> DsPair:
    """One NIfTI case (image.nii.gz + label.nii.gz) under tmp_path/src."""
    return ds_write_pair(tmp_path / "src")


@pytest.fixture
def ds_dicom(tmp_path):
    """A DICOM series written with known identifiers, in a folder whose name holds the patient name.
    Returns (folder, image, label, identifiers)."""
    from deepliver.imaging import write_dicom_series
    identifiers = {"patient_name": "LEAKY^NAME", "patient_id": "ID-SECRET-123", "birth_date": "19510203"}
    folder = tmp_path / "LEAKY^NAME_ID-SECRET-123"
    image = ds_make_image(3)
    write_dicom_series(image, folder, description="ABDOMEN CT", uid_seed=7, **identifiers)
    return folder, image, ds_make_label(3), identifiers


def ds_snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones too) as relative path -> bytes, plus folders as b''."""
    out = {}
    for path in sorted(root.rglob("*")):
        out[path.relative_to(root).as_posix()] = path.read_bytes() if path.is_file() else b"<dir>"
    return out


@pytest.fixture
def ds_tools():
    """The helpers above for test modules (conftest is not importable under --import-mode=importlib)."""
    from types import SimpleNamespace
    return SimpleNamespace(shape=DS_SHAPE, geometry=ds_geometry, make_image=ds_make_image,
                           make_label=ds_make_label, write_pair=ds_write_pair, snapshot=ds_snapshot)
