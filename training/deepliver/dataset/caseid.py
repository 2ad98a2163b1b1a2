"""Stable, pseudonymous case ids: a keyed hash (HMAC-SHA256) of the SeriesInstanceUID or of the voxels.

The key is 32 random bytes kept in ``DATASET/.deepliver-key`` (hex, one line, mode 0600), created on the
first export. **Do not share it**: whoever holds it can test whether a given SeriesInstanceUID (or a given
image) is in the dataset, and it links the dataset's pseudonymous patient keys to patient IDs. Share the
dataset without it; keep a backup of it with whoever may add to the dataset later (without the key, new
exports of a series already in the dataset get a new case id instead of updating the old one).

A case id reads ``case_<16 hex digits>`` (64 bits of the HMAC); the id of a series is
``HMAC(key, "series:" + uid)``, the id of an image without a usable series UID (not DICOM, or anonymized
with empty UIDs) is ``HMAC(key, "voxels:" + voxel_digest)`` where ``voxel_digest`` is the SHA-256 of the
voxels as exported and of the geometry (see ``voxel_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path

import numpy as np

from deepliver.errors import InputError
from deepliver.imaging.geometry import Geometry

__all__ = ["KEY_FILE", "CASE_PREFIX", "dataset_key", "series_case_id", "voxel_digest", "voxels_case_id",
           "is_case_id"]

KEY_FILE = ".deepliver-key"
"""Name of the key file inside the dataset folder (secret; not to share)."""

CASE_PREFIX = "case_"
_ID_HEX = 16
_KEY_BYTES = 32


def dataset_key(dataset: str | os.PathLike, create: bool = False) -> bytes:
    """The dataset's HMAC key from ``DATASET/.deepliver-key``.

    With ``create`` the folder and the key are made when missing (atomically: two processes racing to
    create it end up with the same key). Raises ``InputError`` naming the file when it is missing (and
    ``create`` is false) or malformed.
    """
    path = Path(dataset) / KEY_FILE
    if not path.exists():
        if not create:
            raise InputError(f"no dataset key ({KEY_FILE}) here: this folder has no exported case yet, or the "
                             "key was not copied with the dataset (restore it from the backup)", path)
        _create_key(path)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != _KEY_BYTES:
        raise InputError(f"malformed dataset key: expected {2 * _KEY_BYTES} hex digits, found "
                         f"{len(text)} characters (restore the file from the backup)", path)
    return key


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{KEY_FILE}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(_KEY_BYTES) + "\n")
        try:
            os.link(tmp, path)  # fails when another process created the key first: keep theirs
        except FileExistsError:
            pass
        except OSError:  # file systems without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _case_id(key: bytes, message: bytes) -> str:
    return CASE_PREFIX + hmac.new(key, message, hashlib.sha256).hexdigest()[:_ID_HEX]


def series_case_id(key: bytes, series_uid: str) -> str:
    """The case id of the series ``series_uid`` (a non-empty SeriesInstanceUID) under ``key``."""
    uid = series_uid.strip()
    if not uid:
        raise InputError("empty SeriesInstanceUID: use the voxel digest for an anonymized series")
    return _case_id(key, b"series:" + uid.encode("ascii", errors="replace"))


def voxel_digest(array: np.ndarray, geometry: Geometry) -> str:
    """SHA-256 (hex) of a ``(z, y, x)`` voxel array (its dtype and bytes) and its geometry.

    Geometry enters rounded (spacing and origin to 1e-4 mm, direction to 1e-6) so a round trip through a
    NIfTI header (float32) gives the same digest.
    """
    if tuple(array.shape) != geometry.shape:
        raise InputError(f"array shape (z, y, x) {tuple(array.shape)} differs from the geometry's "
                         f"{geometry.shape}")
    header = json.dumps({
        "dtype": np.dtype(array.dtype).str, "size": list(geometry.size),
        "spacing": [round(v, 4) + 0.0 for v in geometry.spacing],
        "origin": [round(v, 4) + 0.0 for v in geometry.origin],
        "direction": [round(v, 6) + 0.0 for v in geometry.direction],
    }, sort_keys=True).encode("ascii")
    h = hashlib.sha256(b"deepliver-voxels-v1\n" + header + b"\n")
    h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return h.hexdigest()


def voxels_case_id(key: bytes, digest: str) -> str:
    """The case id of an image without a usable series UID, from its ``voxel_digest``."""
    return _case_id(key, b"voxels:" + digest.encode("ascii"))


def is_case_id(name: str) -> bool:
    """True when ``name`` has the form of a case id (``case_`` + 16 lower-case hex digits)."""
    tail = name[len(CASE_PREFIX):]
    return (name.startswith(CASE_PREFIX) and len(tail) == _ID_HEX
            and all(c in "0123456789abcdef" for c in tail))
