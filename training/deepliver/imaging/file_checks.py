"""Cheap completeness checks for volume files, run before SimpleITK reads them.

ITK's NIfTI reader fills the missing part of a truncated ``.nii`` / ``.nii.gz`` with zeros without a
word (and turns NaN voxels into 0), and its MetaImage reader prints to the console before failing with a
misleading reason. These checks compare the bytes present with the bytes the header promises, count
non-finite voxels of float NIfTI files, and raise one-line ``ReadError``s.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from deepliver.errors import ReadError

__all__ = ["check_file_complete"]

_MHA_TYPES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def check_file_complete(path: str | os.PathLike, ext: str) -> None:
    """Raise ``ReadError`` naming ``path`` when a NIfTI or MetaImage file is shorter than its header says,
    or a float NIfTI file holds NaN or infinite voxels."""
    path = Path(path)
    if ext in (".nii", ".nii.gz"):
        _check_nifti(path, compressed=ext == ".nii.gz")
    elif ext == ".mha":
        _check_mha(path)


def _truncated(path: Path, have: int, want: int, what: str) -> ReadError:
    return ReadError(f"truncated file: {what} holds {have} of the {want} bytes its header announces; "
                     "copy or write it again", path)


class _NiftiLayout:
    """Where the voxels of a NIfTI-1/2 file are: offset, count, numpy dtype."""

    def __init__(self, offset: int, voxels: int, bitpix: int, datatype: int, endian: str):
        self.offset, self.voxels, self.bitpix = offset, voxels, bitpix
        self.float_dtype = {16: np.dtype(endian + "f4"), 64: np.dtype(endian + "f8")}.get(datatype)

    @property
    def size(self) -> int:
        """Bytes of header plus voxels."""
        return self.offset + self.voxels * self.bitpix // 8


def _nifti_layout(header: bytes) -> _NiftiLayout | None:
    """The voxel layout from a NIfTI-1/2 file's first 540 bytes, or None if unrecognised."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack_from(endian + "i", header, 0)[0] == 348:
            dims = struct.unpack_from(endian + "8h", header, 40)
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 70)
            offset = int(struct.unpack_from(endian + "f", header, 108)[0])
            break
        if len(header) >= 540 and struct.unpack_from(endian + "i", header, 0)[0] == 540:
            dims = struct.unpack_from(endian + "8q", header, 16)
            datatype, bitpix = struct.unpack_from(endian + "2h", header, 12)
            offset = struct.unpack_from(endian + "q", header, 168)[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or any(d < 0 for d in dims[1:ndim + 1]):
        return None
    voxels = int(np.prod([max(1, d) for d in dims[1:ndim + 1]], dtype=np.int64))
    return _NiftiLayout(max(offset, 348), voxels, bitpix, datatype, endian)


def _check_nifti(path: Path, compressed: bool) -> None:
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as fp:
            layout = _nifti_layout(fp.read(540))
    except (OSError, EOFError, zlib.error) as e:
        raise ReadError(f"cannot read this {'.nii.gz' if compressed else '.nii'} file ({e})", path) from e
    if layout is None:
        return
    want = layout.size
    if compressed:
        with open(path, "rb") as fp:
            fp.seek(-4, os.SEEK_END)
            trailer = struct.unpack("<I", fp.read(4))[0]  # uncompressed size mod 2**32 (last member)
        # when the trailer disagrees, count for sure (this also accepts multi-member gzip files)
        have = want if trailer == want % 2**32 else _gunzip_size(path)
    else:
        have = path.stat().st_size
    if have < want:
        raise _truncated(path, have, want, "the uncompressed data" if compressed else "the file")
    if layout.float_dtype is not None:
        _check_finite(path, opener, layout)


def _check_finite(path: Path, opener, layout: _NiftiLayout) -> None:
    """ITK's NIfTI reader turns NaN into 0 without a word: count non-finite voxels ourselves."""
    with opener(path, "rb") as fp:
        fp.read(layout.offset)
        data = np.frombuffer(fp.read(layout.voxels * layout.float_dtype.itemsize), dtype=layout.float_dtype)
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise ReadError(f"{bad} voxel(s) are NaN or infinite; replace them (e.g. with the air value -1024 HU "
                        "or 0 for labels) before using this file", path)


def _gunzip_size(path: Path) -> int:
    """Bytes that decompress from ``path`` (all gzip members) before the data ends or breaks."""
    total, inflater = 0, zlib.decompressobj(wbits=31)
    try:
        with open(path, "rb") as fp:
            while chunk := fp.read(1 << 20):
                while chunk:
                    total += len(inflater.decompress(chunk))
                    chunk = inflater.unused_data
                    if chunk:  # the next gzip member
                        inflater = zlib.decompressobj(wbits=31)
    except zlib.error:
        pass  # damaged data: what decompressed so far is what is there
    return total


def _check_mha(path: Path) -> None:
    """MetaImage with the data in the same file (``ElementDataFile = LOCAL``)."""
    fields, header_end = {}, 0
    with open(path, "rb") as fp:
        for raw in fp:
            header_end += len(raw)
            key, _, value = raw.decode("latin-1").partition("=")
            fields[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile" or header_end > 1 << 16:
                break
    if fields.get("ElementDataFile") != "LOCAL":
        return
    try:
        if fields.get("CompressedData", "False").lower() == "true":
            want = int(fields["CompressedDataSize"])
        else:
            dims = [int(v) for v in fields["DimSize"].split()]
            want = int(np.prod(dims, dtype=np.int64)) * int(fields.get("ElementNumberOfChannels", "1")) \
                * _MHA_TYPES[fields["ElementType"]]
    except (KeyError, ValueError):
        return  # let SimpleITK judge headers we do not understand
    have = path.stat().st_size - header_end
    if have < want:
        raise _truncated(path, have, want, "the image data")
