"""Decode the pixels of ordered DICOM slices into one ``(z, y, x)`` array in rescaled units (HU for CT).

Uncompressed little-endian files are read straight from the Pixel Data offset found while reading the
headers (no second parse); other transfer syntaxes (JPEG, JPEG-LS, JPEG 2000, RLE, big endian, deflate)
go through pydicom's decoders. ``value = stored * RescaleSlope + RescaleIntercept`` per slice. The result
is int16 when every slice's slope and intercept are integers and the values fit, else float32.
"""

from __future__ import annotations

import struct
import warnings
from typing import Sequence

import numpy as np

from deepliver.errors import ReadError
from deepliver.imaging.dicom_headers import SliceHeader

__all__ = ["read_pixels"]

_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_INT16 = np.iinfo(np.int16)


def read_pixels(slices: Sequence[SliceHeader]) -> np.ndarray:
    """The rescaled voxels of ``slices`` (already in z order) as a ``(z, y, x)`` int16 or float32 array."""
    first = slices[0]
    integral = all(float(s.slope).is_integer() and float(s.intercept).is_integer() for s in slices)
    out = np.empty((len(slices), first.rows, first.columns), dtype=np.int16 if integral else np.float32)
    scratch = _Scratch((first.rows, first.columns))
    for k, header in enumerate(slices):
        if out.dtype == np.int16 and _plain_int16(header) and _direct(header, out[k]) is not None:
            continue  # the common case: stored values are the result, read straight into place
        stored = _stored_pixels(header, scratch)
        if out.dtype == np.int16:
            values = _rescale_int(stored, header, scratch)
            if values is None:  # does not fit int16: switch to float32 for the whole volume
                out = out.astype(np.float32)
                values = _rescale_float(stored, header)
        else:
            values = _rescale_float(stored, header)
        out[k] = values
    return out


def _plain_int16(header: SliceHeader) -> bool:
    return (header.pixel_offset is not None and header.signed and header.bits_allocated == 16
            and header.bits_stored in (0, 16) and header.slope == 1 and header.intercept == 0
            and header.samples == 1 and header.frames <= 1)


class _Scratch:
    """Reusable per-slice buffers: allocating ~0.5 MB per slice costs fresh pages every time."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.buffers = shape, {}

    def get(self, dtype: np.dtype) -> np.ndarray:
        key = np.dtype(dtype)
        if key not in self.buffers:
            self.buffers[key] = np.empty(self.shape, dtype=key)
        return self.buffers[key]


def _rescale_int(stored: np.ndarray, header: SliceHeader, scratch: _Scratch) -> np.ndarray | None:
    slope, intercept = int(header.slope), int(header.intercept)
    if slope == 1 and intercept == 0 and stored.dtype in (np.int16, np.uint8, np.int8):
        return stored
    values = scratch.get(np.int64 if stored.dtype.itemsize == 4 else np.int32)
    np.copyto(values, stored, casting="unsafe")
    if slope != 1:
        values *= slope
    if intercept:
        values += intercept
    if values.size and (values.min() < _INT16.min or values.max() > _INT16.max):
        return None
    return values


def _rescale_float(stored: np.ndarray, header: SliceHeader) -> np.ndarray:
    return stored.astype(np.float32) * np.float32(header.slope) + np.float32(header.intercept)


def _dtype(header: SliceHeader) -> np.dtype:
    if header.bits_allocated not in (8, 16, 32):
        raise ReadError(f"unsupported BitsAllocated {header.bits_allocated} (expected 8, 16 or 32)", header.path)
    return np.dtype(f"<{'i' if header.signed else 'u'}{header.bits_allocated // 8}")


def _stored_pixels(header: SliceHeader, scratch: _Scratch) -> np.ndarray:
    """The stored values of one single-frame grayscale slice, shape ``(rows, columns)``."""
    if header.samples != 1:
        raise ReadError(f"this is a color image ({header.samples} samples per pixel); a grayscale CT slice "
                        "is needed", header.path)
    if header.frames > 1:
        raise ReadError(f"multi-frame DICOM ({header.frames} frames in one file) is not supported; export "
                        "the series as one file per slice", header.path)
    dtype = _dtype(header)
    array = _direct(header, scratch.get(dtype)) if header.pixel_offset is not None else None
    if array is None:
        array = _decoded(header, dtype)
    return _mask_bits(array, header)


def _direct(header: SliceHeader, into: np.ndarray) -> np.ndarray | None:
    """Read uncompressed pixels at the known offset into ``into`` (rows, columns); None when the layout
    is not the expected one."""
    expected = into.nbytes
    with open(header.path, "rb") as fp:
        fp.seek(header.pixel_offset)
        head = fp.read(8 if header.implicit_vr else 12)
        if len(head) < 8 or head[:4] != _PIXEL_TAG:
            if len(head) == 0:
                raise ReadError("truncated DICOM file: the pixel data is missing", header.path)
            return None
        length = struct.unpack("<I", head[4:8] if header.implicit_vr else head[8:12])[0]
        if length == 0xFFFFFFFF:  # encapsulated: let pydicom handle it
            return None
        got = fp.readinto(memoryview(into).cast("B"))
    if got < expected or length < expected:
        raise ReadError(f"truncated DICOM file: pixel data has {min(got, length)} of {expected} bytes "
                        f"({header.columns}x{header.rows}, {header.bits_allocated} bits)", header.path)
    return into


def _decoded(header: SliceHeader, dtype: np.dtype) -> np.ndarray:
    """Pixels through pydicom (compressed or unusual encodings)."""
    import pydicom
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(header.path, force=True)
            array = ds.pixel_array
    except Exception as e:  # decoder errors come in many types
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ReadError(f"cannot decode the pixel data (transfer syntax {header.transfer_syntax or 'unknown'}): "
                        f"{reason}; the file is corrupted, truncated or needs a decoder plugin "
                        "(pylibjpeg, pyjpegls)", header.path) from e
    if array.shape != (header.rows, header.columns):
        raise ReadError(f"pixel data has shape {array.shape}, expected ({header.rows}, {header.columns})",
                        header.path)
    return array


def _mask_bits(array: np.ndarray, header: SliceHeader) -> np.ndarray:
    """Keep only BitsStored bits (sign-extending signed values), as the standard says."""
    bits = header.bits_stored
    width = array.dtype.itemsize * 8
    if not bits or bits >= width or header.pixel_offset is None:
        return array  # pydicom's decoders already applied BitsStored
    if header.signed:
        shift = width - bits
        return (array << shift) >> shift
    return array & ((1 << bits) - 1)
