"""DICOM series: discover them in a folder (``list_series``) and read one as a 3D volume
(``read_dicom_series``).

Files are grouped by SeriesInstanceUID. Anonymized files whose UIDs were emptied are grouped by what is
left (frame of reference, study, modality, series number and description, orientation, size, pixel
spacing) and the group gets a stable synthetic id ``anon-<12 hex>`` that works wherever a series UID does
(``--series``). Patient identity is never exposed: ``SeriesInfo.patient_key`` is a keyed hash.

Real archive folders hold more than image slices. ``list_series`` skips, and reports in
``SeriesList.skipped`` (``skipped_summary`` makes one line of it): non-DICOM files, DICOMDIRs under any
name, DICOM objects that are not slices of a volume (reports, presentation states, radiographs,
enhanced multi-frame), and unreadable files (damaged or truncated headers). It fails only when no series
is left. ``read_dicom_series`` is strict about the series it reads: an unreadable file whose series is
that one, or cannot be told, is an error naming the file; damaged pixel data is found while reading.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from deepliver.errors import ReadError
from deepliver.imaging.dicom_geometry import sort_slices, stack_geometry
from deepliver.imaging.dicom_headers import (DICOMDIR, NOT_A_SLICE, NOT_DICOM, UNREADABLE, Scan, SliceHeader,
                                             Skipped, scan_folder)
from deepliver.imaging.dicom_pixels import read_pixels

__all__ = ["SeriesInfo", "SeriesList", "Skipped", "list_series", "read_dicom_series", "skipped_summary",
           "select_series", "patient_key", "DEFAULT_PATIENT_KEY"]

DEFAULT_PATIENT_KEY = b"deepliver/patient-key/v1"
"""Key used for ``patient_key`` when none is given. Pass your own secret key to make keys unlinkable."""


@dataclass(frozen=True)
class SeriesInfo:
    """Summary of one DICOM series, from headers only. ``size``/``spacing`` are ``(x, y, z)`` (mm).

    ``series_id`` is the SeriesInstanceUID, or ``anon-<hash>`` for files without one; ``files`` are in
    z order (along the slice normal).
    """

    patient_key: str
    study_uid: str
    series_uid: str
    series_id: str
    frame_of_reference_uid: str
    modality: str
    description: str
    study_date: str
    num_slices: int
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    files: tuple[Path, ...]

    @property
    def short_id(self) -> str:
        """8 hex characters identifying the series for display and ``--series``."""
        return hashlib.sha256(self.series_id.encode()).hexdigest()[:8]

    def matches(self, wanted: str) -> bool:
        """True when ``wanted`` is this series' UID, synthetic id or short id."""
        wanted = wanted.strip()
        return bool(wanted) and wanted in (self.series_uid, self.series_id, self.short_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary without patient identifiers (files given as a count)."""
        return {"short_id": self.short_id, "series_id": self.series_id, "series_uid": self.series_uid,
                "study_uid": self.study_uid, "frame_of_reference_uid": self.frame_of_reference_uid,
                "patient_key": self.patient_key, "modality": self.modality, "description": self.description,
                "study_date": self.study_date, "num_slices": self.num_slices, "size": list(self.size),
                "spacing": list(self.spacing), "num_files": len(self.files)}

    def label(self) -> str:
        """A short human-readable description: ``<short_id> '<description>' (<n> slices)``."""
        return f"{self.short_id} '{self.description or self.modality or '?'}' ({self.num_slices} slices)"


def patient_key(patient_id: str, patient_name: str, birth_date: str, key: bytes | None = None) -> str:
    """HMAC-SHA256 of ``PatientID|PatientName|PatientBirthDate`` with ``key``; the first 16 hex characters."""
    message = "|".join((patient_id, patient_name, birth_date)).encode("utf-8")
    return hmac.new(key or DEFAULT_PATIENT_KEY, message, hashlib.sha256).hexdigest()[:16]


class SeriesList(list):
    """A list of ``SeriesInfo`` with ``skipped``: the files not used as slices (``Skipped`` records with
    ``path``, ``kind``, ``reason``), in path order."""

    def __init__(self, infos: Sequence[SeriesInfo] = (), skipped: Sequence[Skipped] = ()):
        super().__init__(infos)
        self.skipped = list(skipped)


def list_series(folder: str | os.PathLike, key: bytes | None = None) -> SeriesList:
    """One ``SeriesInfo`` per image series under ``folder`` (recursive), read from headers only.

    Sorted by patient key, study date, study and series description; ``.skipped`` lists the files left
    out (see the module docstring). Raises ``ReadError`` when the folder does not exist, is empty or
    holds no readable DICOM image slice (the message then says what was skipped).
    """
    folder = Path(folder)
    groups, scan = _groups(folder)
    infos = [_info(series_id, slices, key) for series_id, slices in groups.items()]
    infos.sort(key=lambda s: (s.patient_key, s.study_date, s.study_uid, s.description, s.series_id))
    return SeriesList(infos, scan.skipped)


_KIND_ORDER = (UNREADABLE, NOT_A_SLICE, DICOMDIR, NOT_DICOM)


def skipped_summary(skipped: Sequence[Skipped]) -> str:
    """One line about skipped files, "" when none: ``N file(s) skipped (2 unreadable, 1 DICOMDIR); first
    unreadable: PATH: REASON``. The example is of the most serious kind present (unreadable first)."""
    if not skipped:
        return ""
    counts = {kind: sum(s.kind == kind for s in skipped) for kind in _KIND_ORDER}
    parts = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    first = next(s for kind in _KIND_ORDER for s in skipped if s.kind == kind)
    return f"{len(skipped)} file(s) skipped ({parts}); first {first.kind}: {first.path}: {first.reason}"


def read_dicom_series(folder: str | os.PathLike, series: str | None = None) -> sitk.Image:
    """Read one DICOM series under ``folder`` as a 3D image (rescaled: Hounsfield units for CT).

    ``series`` selects by SeriesInstanceUID, synthetic ``anon-`` id or short id; it is required when the
    folder holds several series. The image's geometry comes from the slice headers: origin = first
    slice's ImagePositionPatient, direction columns = row, column and slice normal, z spacing = mean
    step between positions. Pixel type int16 when it holds the values exactly, else float32. Raises
    ``ReadError``/``GeometryError`` (one line, naming the folder or file) on unusable input.
    """
    folder = Path(folder)
    groups, scan = _groups(folder)
    series_id = _choose(groups, series, folder)
    _refuse_unreadable(scan, groups[series_id], folder)
    geometry, ordered = stack_geometry(groups[series_id], folder)
    array = read_pixels(ordered)
    image = geometry.image_from_array(array)
    if image.GetPixelID() == sitk.sitkFloat32 and not np.isfinite(array).all():
        raise ReadError(f"{int(np.count_nonzero(~np.isfinite(array)))} voxel(s) are NaN or infinite", folder)
    return image


def _groups(folder: Path) -> tuple[dict[str, list[SliceHeader]], Scan]:
    if not folder.exists():
        raise ReadError("no such folder", folder)
    if not folder.is_dir():
        raise ReadError("not a folder; expected a folder of DICOM files", folder)
    scan = scan_folder(folder)
    if scan.files_seen == 0:
        raise ReadError("the folder is empty; expected a DICOM series", folder)
    if not scan.slices:
        _no_slices(scan, folder)
    groups: dict[str, list[SliceHeader]] = defaultdict(list)
    for header in scan.slices:
        groups[_series_id(header)].append(header)
    return dict(groups), scan


def _no_slices(scan: Scan, folder: Path) -> None:
    unreadable, others = scan.of_kind(UNREADABLE), scan.of_kind(NOT_A_SLICE, DICOMDIR)
    if unreadable:
        first = unreadable[0]
        raise ReadError(f"no readable DICOM image slice: {len(unreadable)} DICOM file(s) cannot be read (first: "
                        f"{first.path}: {first.reason}); {skipped_summary(scan.skipped)}", folder)
    if others:
        first = others[0]
        raise ReadError(f"{len(others)} DICOM file(s) but no image slices (e.g. {first.path.name}: "
                        f"{first.reason})", folder)
    raise ReadError(f"no DICOM files among its {scan.files_seen} file(s); expected a DICOM series", folder)


def _refuse_unreadable(scan: Scan, slices: Sequence[SliceHeader], folder: Path) -> None:
    """Raise for the first unreadable file of this series: its SeriesInstanceUID (read before the damage)
    is this series', or it is unknown and the file lies in a folder that holds slices of this series. (A
    damaged file elsewhere whose series is unknown is not blamed; should it be a slice of this series
    after all, the spacing check finds the gap unless it was the first or last slice.)"""
    series_uid, folders = slices[0].series_uid, {s.path.parent for s in slices}
    for skipped in scan.of_kind(UNREADABLE):
        ours = skipped.series_uid == series_uid if skipped.series_uid else skipped.path.parent in folders
        if ours:
            raise ReadError(skipped.reason, skipped.path)


def _series_id(header: SliceHeader) -> str:
    if header.series_uid:
        return header.series_uid
    key = (header.frame_of_reference_uid, header.study_uid, header.modality, header.series_number,
           header.description, header.rows, header.columns,
           tuple(round(v, 4) for v in header.orientation), tuple(round(v, 4) for v in header.pixel_spacing))
    return "anon-" + hashlib.sha256(repr(key).encode()).hexdigest()[:12]


def _info(series_id: str, slices: Sequence[SliceHeader], key: bytes | None) -> SeriesInfo:
    ordered, distances = sort_slices(slices)
    first = ordered[0]
    if len(ordered) > 1:
        z = float(distances[-1] - distances[0]) / (len(ordered) - 1)
    else:
        z = first.slice_thickness
    return SeriesInfo(
        patient_key=patient_key(*first.patient, key=key), study_uid=first.study_uid,
        series_uid=first.series_uid, series_id=series_id, frame_of_reference_uid=first.frame_of_reference_uid,
        modality=first.modality, description=first.description, study_date=first.study_date,
        num_slices=len(ordered), size=(first.columns, first.rows, len(ordered)),
        spacing=(first.pixel_spacing[1], first.pixel_spacing[0], z), files=tuple(s.path for s in ordered))


def _choose(groups: dict[str, list[SliceHeader]], wanted: str | None, folder: Path) -> str:
    if wanted is None and len(groups) == 1:
        return next(iter(groups))
    infos = sorted((_info(sid, slices, None) for sid, slices in groups.items()),
                   key=lambda s: (s.study_date, s.description, s.series_id))
    return select_series(infos, wanted, folder).series_id


def select_series(infos: Sequence["SeriesInfo"], wanted: str | None, folder) -> "SeriesInfo":
    """The one series of ``infos`` that ``wanted`` names (SeriesInstanceUID, id or short id; None when there is
    only one). ``ReadError`` naming ``folder`` and listing the series otherwise."""
    if wanted is None and len(infos) == 1:
        return infos[0]
    listing = "; ".join(s.label() for s in infos)
    if wanted is None:
        raise ReadError(f"the folder holds {len(infos)} DICOM series: {listing}; pass --series ID with one "
                        "of these ids (or the SeriesInstanceUID)", folder)
    found = [s for s in infos if s.matches(wanted)]
    if len(found) != 1:
        raise ReadError(f"no DICOM series '{wanted}' here; the folder holds: {listing}", folder)
    return found[0]
