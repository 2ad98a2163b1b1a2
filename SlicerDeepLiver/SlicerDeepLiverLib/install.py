"""First use: install ``deepliver`` and onnxruntime into Slicer's Python, after asking; PyTorch only when the
user picks the GPU. Slicer only.

Called from an action that needs the package (the AI segmentation button), never at module import.
``deepliver`` goes in with ``--no-deps`` first; then pip gets only the dependencies that are missing or too
old (``deps.dependencies_to_install``), never Slicer's own SimpleITK, with a constraints file pinning the
installed SimpleITK (and torch) so that no dependency of a dependency replaces them (the approach of
SlicerTotalSegmentator / SlicerNNUnet). PyTorch, for ``--runtime torch --device cuda``, goes through the
PyTorch extension's ``PyTorchUtils`` when that extension is installed (it picks the build that fits the
GPU and driver), else through pip.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import tempfile
from pathlib import Path

import qt
import slicer

from SlicerDeepLiverLib.deps import (DISTRIBUTION, GPU_REQUIREMENTS, DeepLiverMissing, constraints,
                                     dependencies_to_install, pip_arguments, require_deepliver, torch_installed)

TORCH_REQUIREMENT = ">=2.4"
TORCHVISION_REQUIREMENT = ">=0.19"
"""The oldest torch / torchvision deepliver supports (pyproject.toml's ``train`` extra)."""


def _pip(arguments) -> None:
    """``pip install ARGUMENTS`` with the constraints file of ``deps.constraints`` (when it pins anything)."""
    pins = constraints()
    if not pins:
        slicer.util.pip_install(list(arguments))
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "constraints.txt"
        path.write_text(pins, encoding="utf-8")
        slicer.util.pip_install(["-c", str(path), *arguments])


def install_deepliver(module_dir) -> list[str]:
    """``deepliver`` without dependencies, then what it needs and lacks (core + onnxruntime). Returns the
    protected requirements left as Slicer has them (``deps.dependencies_to_install``'s ``kept``)."""
    slicer.util.pip_install(["--no-deps", *pip_arguments(module_dir)])
    importlib.invalidate_caches()
    missing, kept = dependencies_to_install(importlib.metadata.requires(DISTRIBUTION) or [])
    if missing:
        _pip(missing)
    for requirement in kept:
        logging.warning("DeepLiver: kept Slicer's own %s; pip was not asked to replace it", requirement)
    return kept


def install_torch_with_extension() -> bool:
    """Install PyTorch with the PyTorch extension's helper; False when that extension is not installed.
    Raises ``RuntimeError`` when the helper installed nothing."""
    try:
        import PyTorchUtils
    except ImportError:
        return False
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled():
        torch = torchLogic.installTorch(askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT,
                                        torchvisionVersionRequirement=TORCHVISION_REQUIREMENT)
        if torch is None:
            raise RuntimeError("the PyTorch extension did not install PyTorch")
    return True


def manual_command(module_dir) -> str:
    """What to type in a terminal (Slicer closed) when the automatic install fails."""
    return "PythonSlicer -m pip install " + " ".join(f'"{a}"' if " " in a or "[" in a else a
                                                     for a in pip_arguments(module_dir))


def _run(tr, what: str, manual: str, step) -> bool:
    slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        step()
        importlib.invalidate_caches()
        failure = None
    except Exception as e:  # pip, network or import failure: tell the user what to do instead
        failure = e
    finally:
        slicer.app.restoreOverrideCursor()
    if failure is not None:
        slicer.util.errorDisplay(tr(
            "Installing {what} failed: {error}\n\nClose Slicer and run in a terminal:\n{command}\n"
            "then start Slicer again.").format(what=what, error=failure, command=manual))
        return False
    return True


def offer_install(module_dir, tr) -> bool:
    """True when ``deepliver`` imports (at once, or after the user agreed and the install worked).

    Asks first; on failure shows the error and the manual command. ``tr`` translates the messages."""
    try:
        require_deepliver()
        return True
    except DeepLiverMissing as e:
        reason = str(e)
    if not slicer.util.confirmOkCancelDisplay(tr(
            "The AI segmentation needs the Python package 'deepliver' in Slicer's Python ({reason}).\n\n"
            "Install it now? This downloads the package, ONNX Runtime and the few libraries Slicer lacks (no "
            "PyTorch) and takes a minute or two; Slicer does not respond meanwhile.").format(reason=reason)):
        return False
    return _run(tr, "'deepliver'", manual_command(module_dir),
                lambda: (install_deepliver(module_dir), require_deepliver()))


def offer_torch(tr) -> bool:
    """True when PyTorch (and MONAI) can be found, at once or after the user agreed to install them for the
    GPU. Without the PyTorch extension pip installs ``torch`` (on Windows that may be a CPU-only build)."""
    if torch_installed() and not dependencies_to_install(GPU_REQUIREMENTS)[0]:
        return True
    if not slicer.util.confirmOkCancelDisplay(tr(
            "Segmenting on the GPU needs PyTorch in Slicer's Python (about 2-3 GB to download; the CPU does "
            "not need it).\n\nInstall PyTorch now? This can take several minutes; Slicer does not respond "
            "meanwhile.")):
        return False

    def step() -> None:
        if not torch_installed() and not install_torch_with_extension():
            _pip([f"torch{TORCH_REQUIREMENT}"])
        importlib.invalidate_caches()
        missing = dependencies_to_install(GPU_REQUIREMENTS)[0]
        if missing:
            _pip(missing)

    return _run(tr, "PyTorch", f"PythonSlicer -m pip install \"torch{TORCH_REQUIREMENT}\" "
                               f"\"{GPU_REQUIREMENTS[0]}\"", step)
