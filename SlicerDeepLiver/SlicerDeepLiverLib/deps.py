"""Find the ``deepliver`` package from Slicer's Python, or explain how to install it.

The module never imports ``deepliver`` at import time: Slicer lists the module even when the package is
missing, and the first action that needs it calls ``require_deepliver()``, which raises
``DeepLiverMissing`` with the install command for this Python. (A first-use installer can later catch
that error and offer to run the command: ``install.offer_install`` in Slicer, with ``pip_arguments``.)
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Optional

MINIMUM_VERSION = (0, 1, 0)
"""The oldest ``deepliver`` whose public API this module was written against."""

SUBPACKAGES = ("deepliver.labels", "deepliver.imaging", "deepliver.dataset")
"""What the annotation workflow imports (none of them imports torch)."""


DISTRIBUTION = "slicer-deepliver"
"""The pip distribution that provides the ``deepliver`` package."""


class DeepLiverMissing(ImportError):
    """``deepliver`` is not importable from this Python, or too old. The message says what to run."""


def install_command(python: str | None = None, source: str = "<path to SlicerDeepLiver>") -> str:
    """The shell command that installs ``deepliver`` from a source checkout into ``python``.

    In Slicer, ``python`` is the ``PythonSlicer`` executable (``sys.executable`` inside Slicer).
    """
    return f'"{python or sys.executable}" -m pip install -e "{source}"'


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def require_deepliver(python: str | None = None):
    """Import ``deepliver`` and the subpackages the module uses; return the ``deepliver`` module.

    Raises ``DeepLiverMissing`` naming the missing module and the install command, or the installed
    and the needed versions when the package is older than ``MINIMUM_VERSION``.
    """
    try:
        deepliver = importlib.import_module("deepliver")
        for name in SUBPACKAGES:
            importlib.import_module(name)
    except ImportError as e:
        raise DeepLiverMissing(
            f"the Python package 'deepliver' cannot be imported ({e}). Install it into Slicer's Python "
            f"with: {install_command(python)} (it also installs PyTorch, about 1 GB), then restart Slicer."
        ) from e
    found = _version_tuple(getattr(deepliver, "__version__", "0"))
    if found < MINIMUM_VERSION:
        needed = ".".join(map(str, MINIMUM_VERSION))
        raise DeepLiverMissing(
            f"deepliver {deepliver.__version__} is installed but this module needs {needed} or newer; "
            f"update it with: {install_command(python)}"
        )
    return deepliver


def source_checkout(module_dir: str | Path) -> Optional[Path]:
    """The repository root when the module runs from a source checkout (the folder above the module
    folder holds the ``pyproject.toml`` of ``slicer-deepliver``), else None."""
    root = Path(module_dir).resolve().parent
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{DISTRIBUTION}"' in text else None


def pip_arguments(module_dir: str | Path) -> list[str]:
    """``pip install`` arguments for ``deepliver``: the source checkout the module lives in (editable), or
    the ``slicer-deepliver`` distribution from the package index. A list, so paths with spaces survive."""
    root = source_checkout(module_dir)
    return ["-e", str(root)] if root is not None else [DISTRIBUTION]


def torch_installed() -> bool:
    """Whether ``torch`` can be found, without importing it (importing takes seconds and memory)."""
    return importlib.util.find_spec("torch") is not None
