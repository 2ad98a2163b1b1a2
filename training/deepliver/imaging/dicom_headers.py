"""Find DICOM files under a folder and read the header fields deepliver needs, without pixel data.

A file counts as DICOM when it has the ``DICM`` preamble, or (for old files without one) when it starts
with a group 0002 or 0008 element; only those are read with pydicom's ``force=True``. Each image file
becomes a ``SliceHeader``; files whose pixel data can be read directly (uncompressed little endian)
remember the byte offset of their Pixel Data element so the pixels need no second parse.

Every other file becomes a ``Skipped`` record with one of four kinds (hidden files, ``.name``, e.g.
half-written temporaries, are ignored without a record):

- ``NOT_DICOM``: no DICM preamble and not a preamble-less DICOM dataset (README, .txt, .nii...).
- ``DICOMDIR``: a file-set directory, whatever its name: named ``DICOMDIR``, or MediaStorageSOPClassUID
  ``1.2.840.10008.1.3.10``, or holding a DirectoryRecordSequence.
- ``NOT_A_SLICE``: a DICOM object that parses but lacks ImagePositionPatient, ImageOrientationPatient, Rows
  or Columns at the top level: structured reports, presentation states, key objects, RT plans/structures,
  SEG, projection radiographs (CR/DX), secondary captures, enhanced multi-frame images, minimal objects.
  (A file that has them but no SOP Class UID is still a slice: some real files keep it only in the meta.)
- ``UNREADABLE``: a file that claims to be DICOM (DICM preamble) but cannot be parsed (header truncated
  or damaged, no element at all after the meta) or cannot be opened. Its SeriesInstanceUID is kept when
  the part read before the damage holds it, so that a reader can tell whether the damage hits its series.

Scanning never raises for a single file: listing shows every series it can and the skipped files; it is
the series reader that refuses an unreadable file that may belong to the series it reads.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path


from deepliver.imaging.dicom_parse import TruncatedHeader, media_storage_class, parse_header

__all__ = ["SliceHeader", "Skipped", "Scan", "scan_folder", "dicom_candidates", "NOT_DICOM", "DICOMDIR",
           "NOT_A_SLICE", "UNREADABLE", "DICOMDIR_SOP_CLASS"]

NOT_DICOM, DICOMDIR, NOT_A_SLICE, UNREADABLE = "not DICOM", "DICOMDIR", "not an image slice", "unreadable"
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
"""Media Storage Directory Storage: the SOP class of a DICOMDIR."""
_DIRECTORY_RECORDS = 0x00041220  # DirectoryRecordSequence

_TAG = {  # keyword -> tag (kept here so that the fast path needs no pydicom import)
    "PatientID": 0x00100020, "PatientName": 0x00100010, "PatientBirthDate": 0x00100030,
    "StudyInstanceUID": 0x0020000D, "SeriesInstanceUID": 0x0020000E, "SOPInstanceUID": 0x00080018,
    "FrameOfReferenceUID": 0x00200052, "Modality": 0x00080060, "SeriesDescription": 0x0008103E,
    "SeriesNumber": 0x00200011, "StudyDate": 0x00080020, "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037, "PixelSpacing": 0x00280030, "SliceThickness": 0x00180050,
    "Rows": 0x00280010, "Columns": 0x00280011, "RescaleSlope": 0x00281053, "RescaleIntercept": 0x00281052,
    "BitsAllocated": 0x00280100, "BitsStored": 0x00280101, "PixelRepresentation": 0x00280103,
    "SamplesPerPixel": 0x00280002, "NumberOfFrames": 0x00280008, "InstanceNumber": 0x00200013,
    "SOPClassUID": 0x00080016,
}
_WANTED = frozenset(_TAG.values())
_PATIENT = ("PatientID", "PatientName", "PatientBirthDate")
_NATIVE = {"1.2.840.10008.1.2.1": False, "1.2.840.10008.1.2": True}  # explicit / implicit VR little endian
_RAW_STARTS = (b"\x02\x00", b"\x08\x00")  # group 0002 / 0008, little endian: DICOM without a preamble


@dataclass(frozen=True)
class SliceHeader:
    """The header fields of one image file. Positions and directions are LPS mm / unit vectors."""

    path: Path
    patient: tuple[str, str, str]  # (PatientID, PatientName, PatientBirthDate): only ever hashed
    study_uid: str
    series_uid: str
    sop_uid: str
    frame_of_reference_uid: str
    modality: str
    description: str
    series_number: str
    study_date: str
    position: tuple[float, float, float]
    orientation: tuple[float, ...]  # row direction (3) then column direction (3)
    pixel_spacing: tuple[float, float]  # (between rows = y, between columns = x), mm
    slice_thickness: float
    rows: int
    columns: int
    slope: float
    intercept: float
    bits_allocated: int
    bits_stored: int
    signed: bool
    samples: int
    frames: int
    transfer_syntax: str
    pixel_offset: int | None  # offset of the (7FE0,0010) element for directly readable files, else None
    implicit_vr: bool


@dataclass(frozen=True)
class Skipped:
    """A file that is not used as a slice: ``kind`` is NOT_DICOM, DICOMDIR, NOT_A_SLICE or UNREADABLE,
    ``reason`` one line saying why; ``series_uid`` the file's SeriesInstanceUID when known, else ""."""

    path: Path
    kind: str
    reason: str
    series_uid: str = ""


@dataclass
class Scan:
    """What ``scan_folder`` found: image slice headers, the files it skipped (in path order) and the
    number of files it saw (hidden files included)."""

    slices: list[SliceHeader]
    skipped: list[Skipped]
    files_seen: int

    def of_kind(self, *kinds: str) -> list[Skipped]:
        """The skipped files of these kinds."""
        return [s for s in self.skipped if s.kind in kinds]


def dicom_candidates(folder: Path) -> tuple[list[Path], int]:
    """Every regular, non-hidden file under ``folder``, sorted; and the count of all files."""
    found, total = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            total += 1
            if not name.startswith("."):
                found.append(Path(root) / name)
    return found, total


def scan_folder(folder: str | os.PathLike) -> Scan:
    """Read the headers of every file under ``folder`` (recursively): a ``SliceHeader`` per image slice,
    a ``Skipped`` record per other file. Never raises for a single file (see the module docstring)."""
    folder = Path(folder)
    candidates, total = dicom_candidates(folder)
    slices, skipped = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; we check what we use
        for path in candidates:
            if path.name.upper() == "DICOMDIR":
                skipped.append(_dicomdir(path))
                continue
            header = _read_header(path)
            (slices if isinstance(header, SliceHeader) else skipped).append(header)
    return Scan(slices, skipped, total)


def _dicomdir(path: Path) -> Skipped:
    return Skipped(path, DICOMDIR, "a DICOMDIR (the index of a DICOM file-set), not an image")


def _unreadable(path: Path, reason: str, series_uid=None) -> Skipped:
    return Skipped(path, UNREADABLE, reason, _text(series_uid))


_PREFIX = 64 * 1024
"""Bytes read first for the header; the whole file is read when the header is longer."""


def _read_header(path: Path) -> SliceHeader | Skipped:
    """A SliceHeader for an image slice, else a Skipped record saying why."""
    try:
        fp = open(path, "rb")
    except OSError as e:
        return _unreadable(path, f"cannot open ({e.strerror})")
    with fp:
        buf = fp.read(_PREFIX)
        preamble = len(buf) >= 132 and buf[128:132] == b"DICM"
        if not preamble and buf[:2] not in _RAW_STARTS:
            return Skipped(path, NOT_DICOM, "not a DICOM file (no DICM preamble)")
        if preamble:
            if media_storage_class(buf) == DICOMDIR_SOP_CLASS:  # first: a DICOMDIR may be big, or damaged
                return _dicomdir(path)
            header = _read_fast(path, fp, buf)
            if header is not None:
                return header
        fp.seek(0)
        return _read_with_pydicom(path, fp, preamble)


def _read_fast(path: Path, fp, buf: bytes) -> SliceHeader | Skipped | None:
    """The header through the fast walker; None when pydicom must read the file."""
    try:
        parsed = parse_header(buf, _WANTED, complete=len(buf) < _PREFIX)
        if parsed is None and len(buf) == _PREFIX:
            buf += fp.read()
            parsed = parse_header(buf, _WANTED, complete=True)
    except TruncatedHeader as e:
        return _unreadable(path, f"corrupted or truncated DICOM file ({e}); remove or replace it",
                           e.partial.get(_TAG["SeriesInstanceUID"]))
    if parsed is None:
        return None
    fields = {name: parsed.values.get(tag) for name, tag in _TAG.items()}
    if not all(_ascii(fields[name]) for name in _PATIENT):
        return None  # pydicom decodes them with the file's character set
    if not (fields["SOPClassUID"] or fields["ImagePositionPatient"]):
        return None  # pydicom tells a minimal object from damage
    return _to_header(path, fields, True, parsed.transfer_syntax, parsed.pixel_offset, parsed.implicit_vr)


def _read_with_pydicom(path: Path, fp, preamble: bool) -> SliceHeader | Skipped:
    import pydicom  # only for files the fast walker does not handle
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=[*_TAG.values(), _DIRECTORY_RECORDS],
                             force=not preamble)
        offset = fp.tell()
    except Exception as e:  # pydicom raises many types on damaged files
        if not preamble:
            return Skipped(path, NOT_DICOM, "starts like a DICOM dataset without a preamble but does not parse")
        detail = str(e).splitlines()[0][:160] if str(e) else "no detail"
        return _unreadable(path, f"corrupted or truncated DICOM file ({type(e).__name__}: {detail}); remove or "
                           "replace it")
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    if media_class == DICOMDIR_SOP_CLASS or _DIRECTORY_RECORDS in ds:
        return _dicomdir(path)
    fields = {}
    for name, tag in _TAG.items():
        elem = ds.get_item(tag)
        fields[name] = None if elem is None else elem.value
    if all(value is None for value in fields.values()):  # not one field we know
        return _without_known_fields(path, preamble)
    fields["SOPClassUID"] = fields["SOPClassUID"] or media_class  # some real files have it only in the meta
    for name in _PATIENT:  # decoded with the file's character set
        if isinstance(fields[name], bytes) and not _ascii(fields[name]):
            fields[name] = str(ds.get(name, ""))
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    return _to_header(path, fields, bool(little), syntax, offset, bool(implicit))


def _ascii(value) -> bool:
    return not isinstance(value, bytes) or value.isascii()


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value).strip(" \x00")


def _floats(value, n: int) -> tuple[float, ...] | None:
    """``n`` numbers from a DS/IS value (backslash-separated), or None if absent or malformed."""
    if value is None or value in (b"", ""):
        return None
    try:
        if isinstance(value, bytes):
            values = tuple(float(v) for v in value.decode("ascii").strip(" \x00").split("\\"))
        elif isinstance(value, (str, int, float)):
            values = (float(value),)
        else:
            values = tuple(float(v) for v in value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return values if len(values) == n else None


def _number(value, default: float) -> float:
    values = _floats(value, 1)
    return values[0] if values else default


def _ushort(value, little: bool, default: int) -> int:
    """An US value: binary bytes in the file's byte order, or an already converted number."""
    if value is None or value in (b"", ""):
        return default
    if isinstance(value, bytes):
        return int.from_bytes(value[:2], "little" if little else "big")
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _without_known_fields(path: Path, preamble: bool) -> Skipped:
    """A file with none of the fields we read: a minimal but valid DICOM object when pydicom finds any
    element in it, else damage after the preamble (or, without one, not DICOM at all)."""
    import pydicom
    try:
        elements = len(pydicom.dcmread(path, stop_before_pixels=True, force=True))
    except Exception:  # pydicom raises many types on damaged files
        elements = 0
    if elements:
        return Skipped(path, NOT_A_SLICE, f"a DICOM object of {elements} element(s) without SOP Class UID, "
                       "patient, study or image fields")
    if not preamble:
        return Skipped(path, NOT_DICOM, "starts like a DICOM dataset but holds no DICOM element")
    return _unreadable(path, "corrupted DICOM file: its header has no SOP Class UID (damaged after the DICM "
                       "preamble); remove or replace it")


def _not_a_slice(path: Path, f: dict, missing: list[str]) -> Skipped:
    """Structured report, SEG, presentation state, radiograph, secondary capture, enhanced multi-frame..."""
    uid = _text(f["SOPClassUID"])
    try:
        from pydicom.uid import UID
        name = UID(uid).name
    except Exception:  # an odd UID: show it as it is
        name = uid
    frames = int(_number(f["NumberOfFrames"], 1))
    if frames > 1:
        reason = (f"{name} with {frames} frames and no {'/'.join(missing)} at the top level (an enhanced "
                  "multi-frame image, not supported: export one file per slice)")
    else:
        reason = f"{name} without {'/'.join(missing)}: not a slice of a 3D volume"
    return Skipped(path, NOT_A_SLICE, reason, _text(f["SeriesInstanceUID"]))


def _to_header(path: Path, f: dict, little: bool, syntax: str, offset: int | None,
               implicit: bool) -> SliceHeader | Skipped:
    position = _floats(f["ImagePositionPatient"], 3)
    orientation = _floats(f["ImageOrientationPatient"], 6)
    rows, columns = _ushort(f["Rows"], little, 0), _ushort(f["Columns"], little, 0)
    present = {"ImagePositionPatient": position, "ImageOrientationPatient": orientation, "Rows": rows,
               "Columns": columns}
    missing = [name for name, value in present.items() if not value]
    if missing:
        return _not_a_slice(path, f, missing)
    direct = (syntax in _NATIVE or (syntax == "" and little)) and offset is not None
    return SliceHeader(
        path=path,
        patient=(_text(f["PatientID"]), _text(f["PatientName"]), _text(f["PatientBirthDate"])),
        study_uid=_text(f["StudyInstanceUID"]), series_uid=_text(f["SeriesInstanceUID"]),
        sop_uid=_text(f["SOPInstanceUID"]), frame_of_reference_uid=_text(f["FrameOfReferenceUID"]),
        modality=_text(f["Modality"]), description=_text(f["SeriesDescription"]),
        series_number=_text(f["SeriesNumber"]), study_date=_text(f["StudyDate"]),
        position=position, orientation=orientation, pixel_spacing=_floats(f["PixelSpacing"], 2) or (1.0, 1.0),
        slice_thickness=_number(f["SliceThickness"], 0.0), rows=rows, columns=columns,
        slope=_number(f["RescaleSlope"], 1.0), intercept=_number(f["RescaleIntercept"], 0.0),
        bits_allocated=_ushort(f["BitsAllocated"], little, 16), bits_stored=_ushort(f["BitsStored"], little, 0),
        signed=_ushort(f["PixelRepresentation"], little, 0) == 1,
        samples=_ushort(f["SamplesPerPixel"], little, 1), frames=int(_number(f["NumberOfFrames"], 1)),
        transfer_syntax=syntax, pixel_offset=offset if direct else None, implicit_vr=implicit,
    )
