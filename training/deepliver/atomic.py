"""Atomic file writes: write a temporary file in the destination folder, then ``os.replace`` it.

A reader never sees a half-written file, and a failure leaves the previous file untouched.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "write_bytes_atomic", "write_files_atomic"]


def _suffix(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".seg.nrrd", ".tar.gz"):
        if name.endswith(ext):
            return ext
    return path.suffix


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` with the same extension; on success move it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + _suffix(path), dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; a normal file gets the user's umask
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON (keys in insertion order, trailing newline) atomically."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


_SERIAL = itertools.count()


def write_files_atomic(files: Iterable[tuple[str | os.PathLike, bytes]]) -> None:
    """Write each ``(path, data)`` atomically, file by file, like ``write_bytes_atomic`` but with fewer
    system calls (for many small files): the temporary file beside ``path`` is named from the process id
    and a counter and opened exclusively with the final permissions (no mkstemp, no chmod), and folders
    are made only when missing. On an exception the current temporary file is removed and the files
    already written stay."""
    prefix = f"{os.getpid()}.{next(_SERIAL)}"
    for index, (path, data) in enumerate(files):
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{prefix}.{index}.tmp{_suffix(path)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
