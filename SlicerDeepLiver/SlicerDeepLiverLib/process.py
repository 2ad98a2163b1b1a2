"""Child processes that never block the caller, and that Cancel ends completely.

``BackgroundProcess`` starts a command in its own process group (POSIX: a new session; Windows: a new
process group), reads stdout and stderr on two daemon threads into a queue, and ``kill_tree`` ends the
child and everything it started (``killpg`` SIGTERM, then SIGKILL; ``taskkill /T /F`` on Windows).
``SegmentationRun`` is one ``deepliver segment --progress json`` run on top of it: ``poll()`` reads what
arrived and updates the progress, ``cancel()`` kills the tree and removes partial outputs.

The same classes serve the Slicer widget (``poll()`` from a ``qt.QTimer``) and the tests (a plain loop,
``wait()``). Pure Python, no Qt: reader threads only fill a queue and never touch the GUI.
Why not ``slicer.util.launchConsoleProcess``: it merges stderr into stdout and starts the child in
Slicer's own process group, so neither the error lines nor the whole tree could be told apart.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable, Optional

from SlicerDeepLiverLib.inference import ProgressTracker, SegmentRequest, SegmentSummary, build_command, read_summary

STDERR_LINES = 12
"""How many of the last stderr lines a failed run shows."""


class BackgroundProcess:
    """``command`` (an argument list) running in its own process group; output read without blocking.

    ``read()`` returns the ``(stream, line)`` pairs that arrived since the last call (stream ``"stdout"``
    or ``"stderr"``, line without its newline); ``finished`` is True once the process ended and both
    streams were read to the end.
    """

    def __init__(self, command: list[str], env: Optional[dict[str, str]] = None, cwd: Optional[str] = None) -> None:
        options: dict = {"start_new_session": True}
        if os.name == "nt":
            options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
        self.command = list(command)
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                        bufsize=1, env=env, cwd=cwd, **options)
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._queue: "queue.Queue[tuple[str, str]]" = queue.Queue()
        self._readers = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                         for name, stream in (("stdout", self.process.stdout), ("stderr", self.process.stderr))]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream) -> None:
        for line in stream:
            self._queue.put((name, line.rstrip("\r\n")))
        stream.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll()

    @property
    def finished(self) -> bool:
        return self.process.poll() is not None and not any(r.is_alive() for r in self._readers) \
            and self._queue.empty()

    def read(self) -> list[tuple[str, str]]:
        lines = []
        while True:
            try:
                name, line = self._queue.get_nowait()
            except queue.Empty:
                return lines
            if name == "stderr" and line.strip():
                self.stderr_tail.append(line)
            lines.append((name, line))

    def kill_tree(self, grace_s: float = 3.0) -> None:
        """End the process and every process it started; returns once the child is reaped."""
        if os.name == "nt":
            if self.process.poll() is None:
                subprocess.run(["taskkill", "/PID", str(self.pid), "/T", "/F"], capture_output=True, check=False)
        else:
            _signal_group(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while _group_alive(self.pid) and time.monotonic() < deadline:
                self.process.poll()  # reap the leader so that only live members count
                time.sleep(0.05)
            _signal_group(self.pid, signal.SIGKILL)
        self.process.wait()
        for reader in self._readers:
            reader.join(timeout=grace_s)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_alive(pgid: int) -> bool:
    """True while any process of group ``pgid`` exists (POSIX; zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
"""States of a ``SegmentationRun``."""


class SegmentationRun:
    """One ``deepliver segment`` run of ``request`` (see ``inference.build_command``).

    ``start()``, then ``poll()`` until the state is not ``RUNNING`` (or ``wait()``). On ``DONE`` the label
    is at ``request.output`` and ``summary`` holds the sidecar's numbers; on ``FAILED`` ``error`` says
    why (exit code and the last stderr lines) and partial outputs are removed; ``cancel()`` kills the
    process tree and removes partial outputs.
    """

    def __init__(self, request: SegmentRequest, env: Optional[dict[str, str]] = None) -> None:
        self.request = request
        self.env = env
        self.command = build_command(request)
        self.tracker = ProgressTracker(has_tumor=request.tumor_model is not None)
        self.state = RUNNING
        self.error = ""
        self.summary: Optional[SegmentSummary] = None
        self.process: Optional[BackgroundProcess] = None

    @property
    def sidecar(self) -> Path:
        from deepliver.inference.segment import sidecar_path
        return sidecar_path(Path(self.request.output))

    @property
    def percent(self) -> int:
        return 100 if self.state == DONE else self.tracker.percent

    @property
    def stage(self) -> Optional[str]:
        return self.tracker.stage

    def start(self) -> "SegmentationRun":
        Path(self.request.output).parent.mkdir(parents=True, exist_ok=True)
        self.process = BackgroundProcess(self.command, env=self.env)
        return self

    def poll(self) -> str:
        """Read what arrived, update progress; returns the state."""
        if self.state != RUNNING or self.process is None:
            return self.state
        for stream, line in self.process.read():
            if stream == "stdout":
                self.tracker.feed(line)
        if self.process.finished:
            self._finish(self.process.returncode)
        return self.state

    def _finish(self, returncode: int) -> None:
        if returncode == 0 and Path(self.request.output).is_file():
            try:
                self.summary = read_summary(self.sidecar)
                self.state = DONE
                return
            except ValueError as e:
                self.error = str(e)
        else:
            tail = list(self.process.stderr_tail) or list(self.tracker.other_lines)[-STDERR_LINES:]
            why = "\n".join(tail) if tail else "(it printed nothing on stderr)"
            if returncode == 0:
                why = f"it ended without writing {self.request.output}"
            self.error = f"deepliver segment stopped with exit code {returncode}:\n{why}"
        self.state = FAILED
        self.remove_outputs()

    def cancel(self) -> None:
        """Kill the whole process tree and remove what it wrote; the state becomes ``CANCELLED``."""
        if self.process is not None:
            self.process.kill_tree()
        if self.state == RUNNING:
            self.state = CANCELLED
        self.remove_outputs()

    def remove_outputs(self) -> None:
        """Delete the output label, its sidecar, and the temporary files of atomic writes beside them."""
        output = Path(self.request.output)
        for path in (output, self.sidecar):
            if path.is_file():
                path.unlink()
            if path.parent.is_dir():
                for partial in path.parent.glob(f".{path.name}.*.tmp*"):
                    partial.unlink(missing_ok=True)

    def wait(self, interval_s: float = 0.1, timeout_s: Optional[float] = None,
             on_poll: Optional[Callable[["SegmentationRun"], None]] = None) -> str:
        """Poll until the run ends (or ``timeout_s`` passes: then cancel it); returns the final state.
        ``on_poll(run)`` is called after every poll (a test can cancel from there)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.poll() == RUNNING:
            if on_poll is not None:
                on_poll(self)
                if self.state != RUNNING:
                    break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                self.error = f"deepliver segment did not finish within {timeout_s:g} s"
                break
            time.sleep(interval_s)
        return self.state


def new_work_folder(prefix: str = "DeepLiver-") -> Path:
    """A new private temporary folder for one run's input and output files."""
    return Path(tempfile.mkdtemp(prefix=prefix))
