"""Write a 3D CT volume as a DICOM CT Image Storage series (one file per z slice), with pydicom.

Used by the phantom generator and the tests. The series reads back (``deepliver.imaging.read_volume``,
SimpleITK, Slicer) with the image's exact geometry and voxel values: each slice gets
``ImagePositionPatient = origin + k * spacing_z * direction[:, 2]``, ``ImageOrientationPatient`` from the
direction's first two columns, ``PixelSpacing = (y, x)`` spacing and ``SliceThickness = z`` spacing, and
the stored integers give the image's Hounsfield units exactly through RescaleSlope/Intercept.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import DSfloat

from deepliver.atomic import atomic_path
from deepliver.errors import GeometryError, ReadError

__all__ = ["write_dicom_series"]

_FIXED_DATE = "20240102"
"""Study/series date written when ``uid_seed`` is given, so seeded output is byte-for-byte reproducible."""


def write_dicom_series(image: sitk.Image, folder: str | os.PathLike, *, patient_name: str = "PHANTOM^ONE",
                       patient_id: str = "PH0001", birth_date: str = "19700101", study_uid: str | None = None,
                       series_uid: str | None = None, frame_of_reference_uid: str | None = None,
                       description: str = "deepliver phantom", uid_seed: int | None = None,
                       file_names: str = "IM{index:04d}.dcm") -> list[Path]:
    """Write ``image`` (3D scalar, Hounsfield units) to ``folder`` as a CT series; returns the files in
    slice order (index 0 is the image's z index 0).

    Pixels are stored as int16 (RescaleSlope 1, RescaleIntercept 0) when the voxels are integers within
    the int16 range, as uint16 with ``RescaleIntercept = min`` when integers span less than 65536 but
    do not fit int16; other values (non-integer HU) are quantised to 65536 levels with a fractional
    RescaleSlope (the only lossy case). UIDs not given are generated; with ``uid_seed`` they are
    derived from it (and the patient id), so the same image and seed give identical files.
    ``file_names`` is formatted with ``index`` (0-based slice index). The direction must be
    right-handed (determinant +1): DICOM defines the slice axis as row x column, so a left-handed
    image would read back flipped; flip it along z first. Each file is written atomically.
    """
    _check_image(image)
    folder = Path(folder)
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    stored, slope, intercept = _to_stored(array)
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)

    uids = _Uids(uid_seed, patient_id)
    study_uid = study_uid or uids.make("study")
    series_uid = series_uid or uids.make("series", study_uid)
    frame_of_reference_uid = frame_of_reference_uid or uids.make("frame", study_uid)
    date = _FIXED_DATE if uid_seed is not None else datetime.date.today().strftime("%Y%m%d")

    base = _base_dataset(stored, spacing, direction, slope, intercept, array)
    base.PatientName = patient_name
    base.PatientID = patient_id
    base.PatientBirthDate = birth_date
    base.StudyInstanceUID = study_uid
    base.SeriesInstanceUID = series_uid
    base.FrameOfReferenceUID = frame_of_reference_uid
    base.SeriesDescription = description
    base.StudyDescription = description
    base.StudyDate = base.SeriesDate = base.ContentDate = base.AcquisitionDate = date
    base.StudyTime = base.SeriesTime = base.ContentTime = "120000"

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(stored.shape[0]):
        position = origin + k * spacing[2] * direction[:, 2]
        ds = _slice_dataset(base, stored[k], position, direction[:, 2], k, uids.make("sop", series_uid, k))
        path = folder / file_names.format(index=k)
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


class _Uids:
    """Random UIDs, or UIDs derived from ``seed`` (and the patient id) when a seed is given."""

    def __init__(self, seed: int | None, patient_id: str):
        self.seed, self.patient_id = seed, patient_id

    def make(self, *parts) -> str:
        if self.seed is None:
            return generate_uid()
        return generate_uid(entropy_srcs=["deepliver", str(self.seed), self.patient_id, *map(str, parts)])


def _check_image(image: sitk.Image) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ReadError(f"a DICOM series needs a scalar 3D image; got {image.GetDimension()}D with "
                        f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if np.linalg.det(direction) < 0:
        raise GeometryError("the image direction is left-handed (determinant -1); DICOM slices stack "
                            "along row x column, so it would read back flipped. Flip the image along z "
                            "(sitk.Flip(image, [False, False, True]) and negate the z direction column)")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise GeometryError("the image direction is not orthonormal; DICOM needs orthogonal axes")


def _to_stored(array: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored pixel values and (slope, intercept) with ``stored * slope + intercept == array``."""
    if array.size == 0:
        raise ReadError("cannot write an empty image")
    lo, hi = float(array.min()), float(array.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ReadError("the image holds NaN or infinite voxels; DICOM cannot store them")
    integral = np.issubdtype(array.dtype, np.integer) or bool(np.all(np.mod(array, 1) == 0))
    if integral and lo >= -32768 and hi <= 32767:
        return array.astype(np.int16), 1.0, 0.0
    if integral and hi - lo <= 65535:
        return (array.astype(np.int64) - int(lo)).astype(np.uint16), 1.0, lo
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.clip(np.rint((array.astype(np.float64) - lo) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, lo


def _ds(values: Sequence[float]) -> list[DSfloat]:
    """Decimal strings that fit DICOM's 16 characters, keeping as many digits as possible."""
    return [DSfloat(float(v), auto_format=True) for v in values]


def _base_dataset(stored: np.ndarray, spacing: np.ndarray, direction: np.ndarray, slope: float,
                  intercept: float, hu: np.ndarray) -> Dataset:
    """The attributes every slice shares."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "deepliver"
    ds.ReferringPhysicianName = ""
    ds.AccessionNumber = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.PatientSex = "O"
    ds.BodyPartExamined = "ABDOMEN"
    ds.PositionReferenceIndicator = ""
    ds.KVP = DSfloat(120)
    ds.ImageOrientationPatient = _ds(list(direction[:, 0]) + list(direction[:, 1]))
    ds.PixelSpacing = _ds([spacing[1], spacing[0]])
    ds.SliceThickness = DSfloat(float(spacing[2]), auto_format=True)
    ds.SpacingBetweenSlices = DSfloat(float(spacing[2]), auto_format=True)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
    ds.RescaleIntercept = DSfloat(intercept, auto_format=True)
    ds.RescaleSlope = DSfloat(slope, auto_format=True)
    ds.RescaleType = "HU"
    ds.WindowCenter = DSfloat(40)
    ds.WindowWidth = DSfloat(400)
    return ds


def _slice_dataset(base: Dataset, pixels: np.ndarray, position: np.ndarray, normal: np.ndarray, k: int,
                   sop_uid: str) -> Dataset:
    ds = Dataset()
    ds.update(base)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = _ds(position)
    ds.SliceLocation = DSfloat(float(position @ normal), auto_format=True)
    ds.PixelData = np.ascontiguousarray(pixels).astype("<" + pixels.dtype.str[1:], copy=False).tobytes()
    return ds
