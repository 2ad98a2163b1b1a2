"""Progress reporting shared by every long-running verb.

Library functions take ``progress: ProgressCallback | None`` and call it as ``progress(stage, done, total)``;
they never print. The command line turns it into a tqdm bar on stderr (``--progress bar``, the default),
one JSON object a line on stdout (``--progress json``: ``{"stage": "liver", "done": 12, "total": 80}``,
read by the Slicer module), or nothing (``--progress none``).
"""

from __future__ import annotations

import json
import sys
from typing import Callable, Iterable, Iterator, Optional, TextIO, TypeVar

__all__ = ["ProgressCallback", "Reporter", "track", "PROGRESS_MODES"]

ProgressCallback = Callable[[str, int, int], None]
PROGRESS_MODES = ("bar", "json", "none")
T = TypeVar("T")


class Reporter:
    """A ``ProgressCallback`` that writes bars or JSON lines. Call ``close()`` at the end."""

    def __init__(self, mode: str = "bar", stream: Optional[TextIO] = None):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress mode must be one of {PROGRESS_MODES}, got {mode!r}")
        self.mode = mode
        self.stream = stream
        self._bar = None
        self._stage: Optional[str] = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.mode == "json":
            out = self.stream or sys.stdout
            out.write(json.dumps({"stage": stage, "done": int(done), "total": int(total)}) + "\n")
            out.flush()
        elif self.mode == "bar":
            from tqdm import tqdm
            if stage != self._stage or self._bar is None:
                self.close()
                self._bar = tqdm(total=total, desc=stage, file=self.stream or sys.stderr, leave=False)
                self._stage = stage
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


def track(items: Iterable[T], stage: str, total: int, progress: Optional[ProgressCallback]) -> Iterator[T]:
    """Yield ``items``, reporting ``(stage, done, total)`` before the first and after each one."""
    if progress is not None:
        progress(stage, 0, total)
    for i, item in enumerate(items, 1):
        yield item
        if progress is not None:
            progress(stage, i, total)
