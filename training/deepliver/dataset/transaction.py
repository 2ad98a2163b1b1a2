"""All-or-nothing updates of several files: stage temporary files, then move them in together.

Staging writes ``.<name>.<random>.tmp<ext>`` files beside their destinations (same file system, so the
final ``os.replace`` is atomic). ``commit`` keeps a hard-link backup of every file it replaces and puts
them all back if any step fails; ``abort`` (or leaving the ``with`` block on an exception) removes the
staged files. A failure while staging therefore leaves the folder exactly as it was.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

__all__ = ["Transaction"]


def _ext(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


class Transaction:
    """Stage files for several destinations and move them in together (see the module docstring)."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []   # (temporary, destination)
        self._copies: list[tuple[Path, Path]] = []   # (existing source, new destination): kept copies

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.abort()

    def stage(self, destination: str | os.PathLike) -> Path:
        """A new empty temporary path to write the content of ``destination`` into."""
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp" + _ext(destination),
                                   dir=destination.parent)
        os.close(fd)
        self._staged.append((Path(tmp), destination))
        return Path(tmp)

    def retarget(self, tmp: Path, destination: str | os.PathLike) -> None:
        """Send the staged file ``tmp`` to another ``destination`` in the same folder (staging may start
        before the final name is known)."""
        destination = Path(destination)
        for i, (staged, old) in enumerate(self._staged):
            if staged == tmp:
                if destination.parent != old.parent:
                    raise ValueError(f"{destination}: must stay in {old.parent} (an atomic move needs it)")
                self._staged[i] = (staged, destination)
                return
        raise KeyError(f"{tmp} is not staged here")

    def keep_copy(self, source: str | os.PathLike, destination: str | os.PathLike) -> None:
        """At commit, before anything is replaced, make ``destination`` a copy of ``source`` (a hard link
        where the file system allows it). ``destination`` must not exist."""
        self._copies.append((Path(source), Path(destination)))

    def commit(self) -> None:
        """Copy the kept files, then move every staged file onto its destination; all or nothing."""
        created: list[Path] = []
        replaced: list[tuple[Path, Path | None]] = []  # (destination, backup or None when new)
        try:
            for source, destination in self._copies:
                destination.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(source, destination)
                created.append(destination)
            for tmp, destination in self._staged:
                backup = None
                if destination.exists():
                    backup = destination.with_name(f".{destination.name}.{secrets.token_hex(4)}.bak")
                    _link_or_copy(destination, backup)
                replaced.append((destination, backup))
                os.chmod(tmp, _file_mode())  # temporary files are private (0600); results are not
                os.replace(tmp, destination)
        except BaseException:
            self._roll_back(replaced, created)
            raise
        else:
            for _, backup in replaced:
                if backup is not None:
                    backup.unlink(missing_ok=True)
        finally:
            self._staged.clear()
            self._copies.clear()

    def _roll_back(self, replaced: list[tuple[Path, Path | None]], created: list[Path]) -> None:
        for destination, backup in reversed(replaced):
            if backup is not None:
                os.replace(backup, destination)
            else:
                destination.unlink(missing_ok=True)
        for path in created:
            path.unlink(missing_ok=True)
        self.abort()

    def abort(self) -> None:
        """Remove every staged file that was not moved in."""
        for tmp, _ in self._staged:
            tmp.unlink(missing_ok=True)
        self._staged.clear()
        self._copies.clear()


def _file_mode() -> int:
    """0o666 without the process umask (read from /proc where available; 0o022 assumed otherwise)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    return 0o644


def _link_or_copy(source: Path, destination: Path) -> None:
    if destination.exists():
        raise FileExistsError(f"{destination}: already exists; refusing to overwrite")
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
