"""The ``deepliver segment`` run seen from the module: its command, its progress lines, its result, and
the checks made before it (device, intensities).

Pure Python (tested with pytest outside Slicer); ``process.py`` starts and stops the process.
The module never imports torch: which devices torch sees is asked of a child process
(``device_probe_command``), and the segmentation runs in a child process too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

DEVICES = ("auto", "cpu", "cuda")
"""``deepliver segment --device`` values."""

RUNTIME_FOR_DEVICE = {"cpu": "onnx", "cuda": "torch", "auto": "auto"}
"""The ``--runtime`` each device runs with: the CPU with onnxruntime (no torch in Slicer's Python needed),
the GPU with torch, ``auto`` as ``deepliver segment`` chooses."""

RUNTIME_NAMES = {"onnx": "ONNX Runtime", "torch": "PyTorch"}
"""How the status line names the runtime a sidecar reports."""

STAGE_WEIGHTS = (("read", 5.0), ("liver", 55.0), ("tumor", 35.0), ("write", 5.0))
"""Share of the overall progress bar of each ``--progress json`` stage, in the order they come."""


@dataclass(frozen=True)
class SegmentRequest:
    """One run of ``deepliver segment``: ``input`` a volume file the child reads (.nrrd), ``output`` the
    label file it writes (.nii.gz; the sidecar JSON goes beside it), bundle folders, ``device`` one of
    ``DEVICES``, ``threads`` the runtime's CPU threads (None: its default), ``python`` the interpreter
    (None: ``python_executable()``), ``runtime`` auto, torch or onnx (None: ``RUNTIME_FOR_DEVICE``)."""

    input: Path
    output: Path
    liver_model: Path
    tumor_model: Optional[Path] = None
    device: str = "auto"
    threads: Optional[int] = None
    python: Optional[str] = None
    runtime: Optional[str] = None


def python_executable(executable: str = sys.executable, which: Callable[[str], Optional[str]] = shutil.which) -> str:
    """The Python that has ``deepliver``: in Slicer that is ``PythonSlicer`` (``sys.executable`` when it
    already is PythonSlicer, else the one on ``PATH``, which Slicer sets); elsewhere ``executable``."""
    if Path(executable).name.lower().startswith("pythonslicer"):
        return executable
    return which("PythonSlicer") or executable


def build_command(request: SegmentRequest) -> list[str]:
    """The argument list of the run (no shell): ``python -m deepliver segment INPUT -o OUTPUT --liver-model
    ... [--tumor-model ...] --runtime R --device D [--threads N] --progress json``. ``ValueError`` for a bad
    device, runtime or thread count."""
    if request.device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {request.device!r}")
    runtime = request.runtime or RUNTIME_FOR_DEVICE[request.device]
    if runtime not in ("auto", "torch", "onnx"):
        raise ValueError(f"runtime must be one of auto, torch, onnx, got {runtime!r}")
    if request.threads is not None and request.threads < 1:
        raise ValueError(f"threads must be at least 1, got {request.threads}")
    command = [request.python or python_executable(), "-m", "deepliver", "segment", str(request.input),
               "-o", str(request.output), "--liver-model", str(request.liver_model)]
    if request.tumor_model is not None:
        command += ["--tumor-model", str(request.tumor_model)]
    command += ["--runtime", runtime, "--device", request.device]
    if request.threads is not None:
        command += ["--threads", str(int(request.threads))]
    return command + ["--progress", "json"]


@dataclass(frozen=True)
class Progress:
    """One ``--progress json`` line: ``{"stage": "liver", "done": 12, "total": 80}``."""

    stage: str
    done: int
    total: int


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_progress_line(line: str) -> Optional[Progress]:
    """The ``Progress`` of a stdout line, or None for anything else (log text, a truncated or malformed
    object, wrong types, negative counts)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("stage"), str) or not data["stage"]:
        return None
    if not (_count(data.get("done")) and _count(data.get("total"))):
        return None
    return Progress(data["stage"], data["done"], data["total"])


def stage_spans(has_tumor: bool) -> dict[str, tuple[float, float]]:
    """``{stage: (start, width)}`` in percent of the whole run; without a tumor model its share is spread
    over the other stages."""
    weights = [(s, w) for s, w in STAGE_WEIGHTS if has_tumor or s != "tumor"]
    total = sum(w for _, w in weights)
    spans, start = {}, 0.0
    for stage, weight in weights:
        spans[stage] = (start, 100.0 * weight / total)
        start += 100.0 * weight / total
    return spans


def overall_percent(progress: Progress, has_tumor: bool = True) -> Optional[int]:
    """Percent of the whole run (0-100) reached at ``progress``; None for a stage this run does not have.
    A total of 0 counts as a finished stage; ``done`` above ``total`` is capped."""
    span = stage_spans(has_tumor).get(progress.stage)
    if span is None:
        return None
    fraction = 1.0 if progress.total == 0 else min(progress.done, progress.total) / progress.total
    return int(round(span[0] + span[1] * fraction))


class ProgressTracker:
    """Follows a run's stdout: the overall percent (never goes back), the current stage, and the last
    lines that were not progress (shown when the run fails)."""

    def __init__(self, has_tumor: bool = True, keep: int = 20) -> None:
        self.has_tumor = has_tumor
        self.percent = 0
        self.stage: Optional[str] = None
        self.progress_lines = 0
        self.other_lines: deque[str] = deque(maxlen=keep)

    def feed(self, line: str) -> Optional[Progress]:
        """Take one stdout line; its ``Progress`` or None when it was something else."""
        progress = parse_progress_line(line)
        if progress is None:
            if line.strip():
                self.other_lines.append(line.rstrip())
            return None
        self.progress_lines += 1
        percent = overall_percent(progress, self.has_tumor)
        if percent is not None:
            self.stage = progress.stage
            self.percent = max(self.percent, percent)
        return progress


@dataclass(frozen=True)
class SegmentSummary:
    """What the sidecar JSON of a finished run says: volumes in mL (liver includes tumor), lesion count, the
    device and runtime (``torch`` or ``onnx``; empty when the sidecar predates runtimes) it ran on."""

    liver_found: bool
    liver_ml: float
    tumor_ml: float
    lesion_count: int
    device: str
    seconds: float
    runtime: str = ""


def read_summary(sidecar: str | os.PathLike) -> SegmentSummary:
    """The ``SegmentSummary`` of a sidecar written by ``deepliver segment``. ``ValueError`` naming the
    file when it is missing, not JSON, or lacks a key."""
    path = Path(sidecar)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        timings = data.get("timings") or {}
        return SegmentSummary(bool(data["liver_found"]), float(data["liver_ml"]), float(data["tumor_ml"]),
                              int(data["lesion_count"]), str(data.get("device", "")),
                              float(sum(float(v) for v in timings.values())), str(data.get("runtime", "")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a readable segmentation summary ({type(e).__name__}: {e})") from e


def summary_text(summary: SegmentSummary, tr: Callable[[str], str] = str) -> str:
    """The status line after a run (``tr`` translates the template, placeholders kept)."""
    if not summary.liver_found:
        return tr("The model found no liver in this volume; nothing was segmented. Is it an abdominal CT?")
    return tr("AI segmentation: liver {liver:.1f} mL, tumor {tumor:.1f} mL, {lesions} lesion(s) "
              "({engine}). Correct it with the Segment Editor, then save the case.").format(
        liver=summary.liver_ml, tumor=summary.tumor_ml, lesions=summary.lesion_count, engine=engine_text(summary))


def engine_text(summary: SegmentSummary) -> str:
    """``"ONNX Runtime on cpu"`` from the sidecar's runtime and device (the device alone for old sidecars)."""
    runtime = RUNTIME_NAMES.get(summary.runtime, summary.runtime)
    return f"{runtime} on {summary.device}" if runtime else summary.device


CT_RANGE = (-1100.0, 4000.0)
"""Hounsfield units a CT's voxels fall in (air -1000, dense bone and metal up to ~3000)."""
PADDING_BELOW = -1500.0
"""Values at or below this are scanner padding outside the field of view (-2000, -3024), not tissue."""


def ct_warning(array: np.ndarray, max_samples: int = 2_000_000) -> Optional[str]:
    """Why the intensities of ``array`` (any axis order) do not look like CT in Hounsfield units, or
    None when they do.

    Padding (values <= ``PADDING_BELOW``) is left out. Flags: the 0.5-99.5 percentile range outside
    ``CT_RANGE``; nothing below -50 HU (no air, no fat: MR, PET, or CT stored without its rescale);
    a median outside [-1050, 1000] HU. Uses at most ``max_samples`` evenly spaced voxels."""
    flat = np.asarray(array).ravel()
    flat = flat[:: max(1, flat.size // max_samples)]
    values = flat[flat > PADDING_BELOW].astype(np.float64)
    if values.size == 0:
        return f"every voxel is at or below {PADDING_BELOW:g} (padding only, no tissue)"
    low, median, high = np.percentile(values, [0.5, 50, 99.5])
    problems = []
    if low < CT_RANGE[0] or high > CT_RANGE[1]:
        problems.append(f"values outside {CT_RANGE[0]:g} to {CT_RANGE[1]:g} HU")
    if low > -50:
        problems.append("nothing below -50 HU (no air or fat)")
    if not -1050 <= median <= 1000:
        problems.append("a median far from CT values")
    if not problems:
        return None
    return (f"{', '.join(problems)}: intensities range from {float(flat.min()):g} to {float(flat.max()):g} "
            f"(0.5-99.5 percentiles {low:.0f} to {high:.0f}, median {median:.0f}); a CT in Hounsfield units "
            "has air near -1000, fat near -100, liver 40-70 and bone up to about 3000")


DEVICE_PROBE = """
import importlib.util, json, os, shutil, sys
if sys.platform == "darwin":
    nvidia = False
elif sys.platform.startswith("linux"):
    nvidia = os.path.exists("/proc/driver/nvidia/version")
else:
    nvidia = shutil.which("nvidia-smi") is not None
report = {"torch": None, "cuda": False, "gpus": [], "nvidia": nvidia}
if importlib.util.find_spec("torch") is not None:
    import torch
    report.update(torch=torch.__version__, cuda=bool(torch.cuda.is_available()),
                  gpus=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
print(json.dumps(report))
"""
"""Python run in a child process to learn whether an NVIDIA driver is present and what torch sees; torch
is imported only when it is installed (the module never imports torch itself)."""


def device_probe_command(python: Optional[str] = None) -> list[str]:
    return [python or python_executable(), "-c", DEVICE_PROBE]


@dataclass(frozen=True)
class DeviceReport:
    """What the probe found: torch's version (None: not installed or not importable), whether torch sees
    CUDA, GPU names, the error, whether an NVIDIA driver is present (``nvidia``)."""

    torch: Optional[str]
    cuda: bool
    gpus: tuple[str, ...] = ()
    error: str = ""
    nvidia: bool = False

    @property
    def gpu_needs_torch(self) -> bool:
        """An NVIDIA driver is present but torch is not installed: the GPU choice installs it."""
        return self.torch is None and not self.error and self.nvidia

    @property
    def devices(self) -> tuple[str, ...]:
        """The ``DEVICES`` to offer, the default first: the GPU first when torch sees CUDA; the CPU first and
        the GPU after it when a driver is there but torch is missing; else the CPU alone."""
        if self.cuda:
            return ("cuda", "cpu")
        return ("cpu", "cuda") if self.gpu_needs_torch else ("cpu",)


def parse_device_probe(returncode: int, stdout: str, stderr: str) -> DeviceReport:
    """The ``DeviceReport`` of a finished probe (its exit code and output)."""
    for line in reversed(stdout.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if returncode == 0 and isinstance(data, dict) and "torch" in data:
            version = None if data["torch"] is None else str(data["torch"])
            return DeviceReport(version, bool(data.get("cuda")), tuple(map(str, data.get("gpus") or ())),
                                nvidia=bool(data.get("nvidia")))
    last = [line for line in stderr.splitlines() if line.strip()][-1:]
    return DeviceReport(None, False, (), last[0] if last else f"the probe exited with code {returncode}")
