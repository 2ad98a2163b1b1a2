"""Turn the inputs of an export (paths or SimpleITK images) into exportable arrays and a source record.

The image becomes a ``(z, y, x)`` array in Hounsfield units: int16 when every value is an integer in the
int16 range, int32 for wider integers, float32 otherwise. The label becomes a uint8 ``(z, y, x)`` array on
the image's grid. The source record keeps only pseudonymous fields (see ``deepliver.dataset.manifest``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver import imaging
from deepliver.errors import GeometryError, InputError
from deepliver.imaging.dicom import select_series
from deepliver.imaging.geometry import Geometry, geometry_differences
from deepliver.labels import check_label_values

__all__ = ["CaseInput", "read_case_input", "hu_array", "label_array", "source_record"]

_SOURCE_FIELDS = ("patient_key", "study_uid", "series_uid", "frame_of_reference_uid", "modality", "description")


@dataclass
class CaseInput:
    """An image and its label ready to export: ``image`` and ``label`` are ``(z, y, x)`` arrays on
    ``geometry`` (HU and uint8); ``source`` is the manifest's source record."""

    image: np.ndarray
    label: np.ndarray
    geometry: Geometry
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def series_uid(self) -> str:
        return (self.source.get("series_uid") or "").strip()


def read_case_input(image, label, *, key: bytes, series: Optional[str] = None, source=None) -> CaseInput:
    """Read ``image`` (DICOM folder, volume file or ``SimpleITK.Image``) and ``label`` (volume file,
    ``SimpleITK.Image`` or ``(z, y, x)`` numpy array on the image's grid) into a ``CaseInput``.

    ``series`` picks a series in a DICOM folder; ``source`` (a ``deepliver.imaging.dicom.SeriesInfo``)
    describes an image the caller already read; ``key`` is the dataset key (patient keys are computed
    with it for DICOM folders). Raises ``InputError`` subclasses naming the file.
    """
    itk_image, info, kind = _read_image(image, series, key)
    if source is not None:
        info, kind = source, "dicom"
    geometry = Geometry.from_image(itk_image)
    return CaseInput(hu_array(itk_image), label_array(label, itk_image, _name(label)), geometry,
                     source_record(kind, info, image))


def _name(item) -> Optional[str]:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else None


def _read_image(image, series: Optional[str], key: bytes):
    if isinstance(image, sitk.Image):
        return imaging.check_volume(image), None, "image"
    path = Path(image)
    if path.is_dir():
        infos = imaging.list_series(path, key=key)
        info = select_series(infos, series, path)
        return imaging.read_volume(path, series=info.series_id), info, "dicom"
    if series is not None:
        raise InputError(f"--series {series!r} applies to DICOM folders only; this is a file", path)
    return imaging.read_volume(path), None, "file"




def hu_array(image: sitk.Image) -> np.ndarray:
    """The voxels of ``image`` as a ``(z, y, x)`` array in the smallest exact type: int16 when every value
    is an integer within int16, int32 for wider integers, float32 otherwise (Hounsfield units kept)."""
    array = sitk.GetArrayFromImage(image)
    if array.dtype == np.int16:
        return array
    if array.dtype.kind in "iub":
        lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
        small = -32768 <= lo and hi <= 32767
        return array.astype(np.int16 if small else np.int32)
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError(f"{int(np.count_nonzero(~np.isfinite(array)))} voxel(s) are NaN or infinite")
    if array.size and -32768 <= array.min() and array.max() <= 32767 and np.array_equal(np.rint(array), array):
        return array.astype(np.int16)
    return array


def label_array(label, reference: sitk.Image, path: Optional[str] = None) -> np.ndarray:
    """The label map as a uint8 ``(z, y, x)`` array on ``reference``'s grid; ``GeometryError`` when its
    geometry differs from the image's, ``LabelError`` for values outside ``deepliver.labels``."""
    geometry = Geometry.from_image(reference)
    if isinstance(label, np.ndarray):
        if tuple(label.shape) != geometry.shape:
            raise GeometryError(f"label array shape (z, y, x) {tuple(label.shape)} differs from the image's "
                                f"{geometry.shape}")
        check_label_values(label)
        return label.astype(np.uint8, copy=False)
    if isinstance(label, sitk.Image):
        diffs = geometry_differences(label, geometry)
        if diffs:
            raise GeometryError("label geometry differs from its image: " + "; ".join(diffs))
        array = sitk.GetArrayFromImage(label)
        check_label_values(array)
        return array.astype(np.uint8, copy=False)
    return sitk.GetArrayFromImage(imaging.read_label(label, reference=geometry))


def source_record(kind: str, info=None, image=None) -> dict[str, Any]:
    """The manifest's ``source``: kind (``dicom``, ``file``, ``image``), format, and the pseudonymous
    DICOM fields of ``info`` (a ``SeriesInfo``) or None. Never a path or a direct identifier."""
    record: dict[str, Any] = {"kind": kind, "format": "dicom" if kind == "dicom" else None}
    if kind == "file":
        record["format"] = imaging.volume_extension(image)
    for name in _SOURCE_FIELDS:
        value = getattr(info, name, None) if info is not None else None
        record[name] = str(value) if value not in (None, "") else None
    return record
