"""Fast reads of a run of slices of a 3D integer NIfTI file, and the fastest deflate/inflate installed.

``deepliver convert`` writes a few hundred PNG slices per CT; reading the CT (a ``.nii.gz`` of 20-100 MB)
costs more than encoding them. ``read_nifti_slices`` parses the header itself and inflates the gzip stream
only up to the last slice wanted, with ISA-L (``python-isal``, a dependency: 2-3 times as fast as zlib at
inflating, and its deflate level 1 several times as fast as zlib's level 1 with smaller output) when it
is importable, else with zlib. It returns exactly the voxels SimpleITK's reader gives for those slices
(``sitk.GetArrayFromImage`` order ``(z, y, x)``; ITK keeps the file's voxel order and expresses the
orientation in the direction matrix), and None for files it leaves to SimpleITK: other than NIfTI-1/2 of
dimension 3, a non-integer data type, or intensity scaling (``scl_slope`` not 0 or 1, or ``scl_inter``
not 0).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from deepliver.errors import ReadError

try:  # ISA-L: same streams as zlib, faster
    from isal import igzip as _gzip
    from isal import isal_zlib as _zlib
    DEFLATER = "isal"
except ImportError:  # pragma: no cover - isal is a dependency; kept for platforms without a wheel
    _gzip, _zlib, DEFLATER = gzip, zlib, "zlib"

__all__ = ["read_nifti_slices", "deflate", "DEFLATER"]

_INTEGER_TYPES = {2: "u1", 4: "i2", 8: "i4", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}


def deflate(data: bytes, level: int = 1) -> bytes:
    """``data`` as a zlib stream (RFC 1950), by ISA-L when installed (its levels are 0-3: ``level`` is
    capped at 3) else by zlib at ``level``. Deterministic for one installation."""
    if DEFLATER == "isal":
        return _zlib.compress(data, min(int(level), 3))
    return zlib.compress(data, int(level))


# sizeof_hdr -> (dim format, offset), datatype offset, (vox_offset format, offset), (scl_slope/inter format, offset)
_HEADER_FIELDS = {
    348: (("8h", 40), 70, ("f", 108), ("2f", 112)),     # NIfTI-1
    540: (("8q", 16), 12, ("q", 168), ("2d", 176)),     # NIfTI-2
}


def _layout(header: bytes) -> Optional[tuple[tuple[int, int, int], np.dtype, int]]:
    """``((nx, ny, nz), dtype, voxel offset)`` of a plain 3D integer NIfTI-1/2 header, else None."""
    for endian in "<>":
        size = struct.unpack_from(endian + "i", header, 0)[0] if len(header) >= 4 else 0
        if size in _HEADER_FIELDS and len(header) >= size:
            (dim_fmt, dim_at), type_at, (off_fmt, off_at), (scl_fmt, scl_at) = _HEADER_FIELDS[size]
            dims = struct.unpack_from(endian + dim_fmt, header, dim_at)
            datatype = struct.unpack_from(endian + "h", header, type_at)[0]
            offset = int(struct.unpack_from(endian + off_fmt, header, off_at)[0])
            slope, inter = struct.unpack_from(endian + scl_fmt, header, scl_at)
            break
    else:
        return None
    slope, inter = (v if np.isfinite(v) else 0.0 for v in (slope, inter))   # niftilib: non-finite = unset
    ndim = int(dims[0])
    shape = tuple(int(d) for d in dims[1:4])
    if not 3 <= ndim <= 7 or any(int(d) > 1 for d in dims[4:ndim + 1]) or min(shape) < 1:
        return None
    if datatype not in _INTEGER_TYPES or slope not in (0.0, 1.0) or inter != 0.0:
        return None
    return shape, np.dtype(endian + _INTEGER_TYPES[datatype]), max(offset, size + 4)  # + 4 extension bytes


def read_nifti_slices(path: str | os.PathLike, lo: int, hi: int) -> Optional[np.ndarray]:
    """File slices ``lo`` to ``hi - 1`` of the NIfTI file ``path`` (``.nii`` or ``.nii.gz``) as a native-endian
    ``(hi - lo, ny, nx)`` array, inflating nothing past slice ``hi - 1``; None when the file is not one this
    reader handles (see the module docstring). ``ReadError`` when the file is unreadable or ends early."""
    path = Path(path)
    opener = _gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            layout = _layout(f.read(540))
            if layout is None:
                return None
            (nx, ny, nz), dtype, offset = layout
            if not 0 <= lo < hi <= nz:
                raise ReadError(f"slices {lo} to {hi - 1} asked for, the image has {nz}", path)
            plane = nx * ny * dtype.itemsize
            f.seek(offset + lo * plane)
            data = np.empty((hi - lo) * plane, dtype=np.uint8)       # not zero-filled: every byte is read
            got = _read_into(f, data)
    except (OSError, EOFError, zlib.error, _zlib.error) as e:
        raise ReadError(f"cannot read this NIfTI file ({e})", path) from e
    if got != len(data):
        raise ReadError(f"the file ends inside slice {lo + got // plane} of {nz}; copy or write it again", path)
    return data.view(dtype).reshape(hi - lo, ny, nx).astype(dtype.newbyteorder("="), copy=False)


def _read_into(f, buffer: np.ndarray) -> int:
    view, got = memoryview(buffer), 0
    while got < len(buffer):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got
