"""First use: install ``deepliver`` (and PyTorch) into Slicer's Python, after asking. Slicer only.

Called from an action that needs the package (the AI segmentation button), never at module import. PyTorch
goes first through the PyTorch extension's ``PyTorchUtils`` when that extension is installed (it picks the
build that fits the computer's GPU and driver); pip then installs ``deepliver`` and what is still missing.
"""

from __future__ import annotations

import importlib

import qt
import slicer

from SlicerDeepLiverLib.deps import DeepLiverMissing, pip_arguments, require_deepliver, torch_installed

TORCH_REQUIREMENT = ">=2.4"
TORCHVISION_REQUIREMENT = ">=0.19"
"""The oldest torch / torchvision deepliver supports (pyproject.toml's dependencies)."""


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
    return "PythonSlicer -m pip install " + " ".join(f'"{a}"' if " " in a else a for a in pip_arguments(module_dir))


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
            "Install it now? This downloads PyTorch (about 1 GB) the first time and can take several minutes; "
            "Slicer does not respond meanwhile.").format(reason=reason)):
        return False
    slicer.app.setOverrideCursor(qt.Qt.WaitCursor)
    try:
        if not torch_installed():
            install_torch_with_extension()
        slicer.util.pip_install(pip_arguments(module_dir))
        importlib.invalidate_caches()
        require_deepliver()
        failure = None
    except Exception as e:  # pip, network or import failure: tell the user what to do instead
        failure = e
    finally:
        slicer.app.restoreOverrideCursor()
    if failure is not None:
        slicer.util.errorDisplay(tr(
            "Installing 'deepliver' failed: {error}\n\nClose Slicer and run in a terminal:\n{command}\n"
            "then start Slicer again.").format(error=failure, command=manual_command(module_dir)))
        return False
    return True
