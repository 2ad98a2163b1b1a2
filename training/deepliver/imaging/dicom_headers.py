"""Find DICOM files under a folder and read the header fields deepliver needs, without pixel data.

A file counts as DICOM when it has the ``DICM`` preamble, or (for old files without one) when it starts
with a group 0002 or 0008 element; only those are read with pydicom's ``force=True``. ``DICOMDIR``,
hidden files (``.name``, e.g. half-written temporary files) and other files are skipped. Each image
file becomes a ``SliceHeader``; files whose pixel data can be read directly (uncompressed little
endian) remember the byte offset of their Pixel Data element so the pixels need no second parse.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path


from deepliver.errors import ReadError
from deepliver.imaging.dicom_parse import TruncatedHeader, parse_header

__all__ = ["SliceHeader", "Scan", "scan_folder", "dicom_candidates"]

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


@dataclass
class Scan:
    """What ``scan_folder`` found: image slice headers and counts of what it skipped."""

    slices: list[SliceHeader]
    files_seen: int
    dicom_files: int
    non_image: list[Path]


def dicom_candidates(folder: Path) -> tuple[list[Path], int]:
    """Every regular, non-hidden file under ``folder`` except DICOMDIR, sorted; and the count of all files."""
    found, total = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            total += 1
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            found.append(Path(root) / name)
    return found, total


def scan_folder(folder: str | os.PathLike) -> Scan:
    """Read the headers of every DICOM image file under ``folder`` (recursively).

    Raises ``ReadError`` naming the file when a file that claims to be DICOM cannot be parsed.
    """
    folder = Path(folder)
    candidates, total = dicom_candidates(folder)
    slices, non_image, dicom_files = [], [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on odd values; we check what we use
        for path in candidates:
            header = _read_header(path)
            if header is None:
                continue
            dicom_files += 1
            if isinstance(header, SliceHeader):
                slices.append(header)
            else:
                non_image.append(path)
    return Scan(slices, total, dicom_files, non_image)


_PREFIX = 64 * 1024
"""Bytes read first for the header; the whole file is read when the header is longer."""


def _read_header(path: Path) -> SliceHeader | bool | None:
    """A SliceHeader, False for a DICOM file that is not an image slice, None for a non-DICOM file."""
    try:
        fp = open(path, "rb")
    except OSError as e:
        raise ReadError(f"cannot open ({e.strerror})", path) from e
    with fp:
        buf = fp.read(_PREFIX)
        preamble = len(buf) >= 132 and buf[128:132] == b"DICM"
        if not preamble and buf[:2] not in _RAW_STARTS:
            return None
        if preamble:
            try:
                parsed = parse_header(buf, _WANTED, complete=len(buf) < _PREFIX)
                if parsed is None and len(buf) == _PREFIX:
                    buf += fp.read()
                    parsed = parse_header(buf, _WANTED, complete=True)
            except TruncatedHeader as e:
                raise ReadError(f"corrupted or truncated DICOM file ({e}); remove or replace it", path) from e
            if parsed is not None:
                fields = {name: parsed.values.get(tag) for name, tag in _TAG.items()}
                if all(_ascii(fields[name]) for name in _PATIENT) and fields["SOPClassUID"]:
                    return _to_header(path, fields, True, parsed.transfer_syntax, parsed.pixel_offset,
                                      parsed.implicit_vr)
        fp.seek(0)
        return _read_with_pydicom(path, fp, preamble)


def _read_with_pydicom(path: Path, fp, preamble: bool) -> SliceHeader | bool | None:
    import pydicom  # only for files the fast walker does not handle
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=list(_TAG), force=not preamble)
        offset = fp.tell()
        fields = {}
        for name, tag in _TAG.items():
            elem = ds.get_item(tag)
            fields[name] = None if elem is None else elem.value
        if preamble and not fields["SOPClassUID"]:  # every valid DICOM file has one
            raise ReadError("corrupted DICOM file: its header has no SOP Class UID (damaged after the "
                            "DICM preamble); remove or replace it", path)
        for name in _PATIENT:  # decoded with the file's character set
            if isinstance(fields[name], bytes) and not _ascii(fields[name]):
                fields[name] = str(ds.get(name, ""))
        meta = getattr(ds, "file_meta", None)
        syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        implicit, little = ds.original_encoding
        if implicit is None:
            implicit, little = True, True
        return _to_header(path, fields, bool(little), syntax, offset, bool(implicit))
    except ReadError:
        raise
    except Exception as e:  # pydicom raises many types on damaged files
        if not preamble:
            return None
        detail = str(e).splitlines()[0][:160] if str(e) else "no detail"
        raise ReadError(f"corrupted or truncated DICOM file ({type(e).__name__}: {detail}); remove or "
                        "replace it", path) from e


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


def _to_header(path: Path, f: dict, little: bool, syntax: str, offset: int | None,
               implicit: bool) -> SliceHeader | bool:
    position = _floats(f["ImagePositionPatient"], 3)
    orientation = _floats(f["ImageOrientationPatient"], 6)
    rows, columns = _ushort(f["Rows"], little, 0), _ushort(f["Columns"], little, 0)
    if position is None or orientation is None or rows == 0 or columns == 0:
        return False  # structured report, SEG, presentation state, secondary capture...
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
