"""Find the ``deepliver`` package from Slicer's Python, or explain how to install it.

The module never imports ``deepliver`` at import time: Slicer lists the module even when the package is
missing, and the first action that needs it calls ``require_deepliver()``, which raises
``DeepLiverMissing`` with the install command for this Python. (A first-use installer can later catch
that error and offer to run the command: ``install.offer_install`` in Slicer, with ``pip_arguments``.)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

MINIMUM_VERSION = (0, 1, 0)
"""The oldest ``deepliver`` whose public API this module was written against."""

SUBPACKAGES = ("deepliver.labels", "deepliver.imaging", "deepliver.dataset")
"""What the annotation workflow imports (none of them imports torch)."""


DISTRIBUTION = "slicer-deepliver"
"""The pip distribution that provides the ``deepliver`` package."""

EXTRAS = ("onnx",)
"""The extras the one-click install asks for: the core package and onnxruntime (no torch)."""

PROTECTED = ("SimpleITK",)
"""Packages pip must never replace in Slicer's Python: Slicer's SimpleITK is its own build (with Slicer's IO
classes), as SlicerTotalSegmentator and SlicerNNUnet note; it is kept whatever version it is."""

GPU_REQUIREMENTS = ("monai>=1.3,<2",)
"""What ``--runtime torch`` needs besides torch (the U-Net is MONAI's); mirrors the ``train`` extra."""


class DeepLiverMissing(ImportError):
    """``deepliver`` is not importable from this Python, or too old. The message says what to run."""


def install_command(python: str | None = None, source: str = "<path to SlicerDeepLiver>") -> str:
    """The shell command that installs ``deepliver`` from a source checkout into ``python``.

    In Slicer, ``python`` is the ``PythonSlicer`` executable (``sys.executable`` inside Slicer).
    """
    return f'"{python or sys.executable}" -m pip install -e "{source}[{",".join(EXTRAS)}]"'


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
            f"with: {install_command(python)} (the core and onnxruntime; PyTorch is not needed), then restart Slicer."
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


def pip_arguments(module_dir: str | Path, extras: Iterable[str] = EXTRAS) -> list[str]:
    """``pip install`` arguments for ``deepliver`` with ``extras``: the source checkout the module lives in
    (editable), or the ``slicer-deepliver`` distribution from the package index. A list, so paths with
    spaces survive."""
    suffix = f"[{','.join(extras)}]" if extras else ""
    root = source_checkout(module_dir)
    return ["-e", f"{root}{suffix}"] if root is not None else [f"{DISTRIBUTION}{suffix}"]


def installed_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name`` (None: no metadata found)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def importable(name: str) -> bool:
    """Whether a top-level module ``name`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def dependencies_to_install(requirements: Iterable[str], extras: Iterable[str] = EXTRAS,
                            version: Callable[[str], Optional[str]] = installed_version,
                            found: Callable[[str], bool] = importable,
                            protected: Iterable[str] = PROTECTED) -> tuple[list[str], list[str]]:
    """Split ``requirements`` (``Requires-Dist`` strings, markers included) into ``(install, kept)``.

    ``install``: the requirements that apply (their marker holds for this Python with one of ``extras``)
    and are missing or whose installed version (``version(name)``) does not satisfy them. ``kept``: the
    ``protected`` ones that would need installing but are left alone because a copy is importable
    (``found(name)``) -- pip is never asked for them. Names compare case-insensitively, ``-``/``_`` alike."""
    try:
        from packaging.requirements import Requirement
        from packaging.utils import canonicalize_name
    except ImportError:  # a Python without the top-level package: pip's own copy
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.utils import canonicalize_name

    shielded = {canonicalize_name(p) for p in protected}
    install, kept, extras = [], [], list(extras) or [""]
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
            continue
        have = version(requirement.name)
        if have is not None and requirement.specifier.contains(have, prereleases=True):
            continue
        line = f"{requirement.name}{requirement.specifier}"
        if canonicalize_name(requirement.name) in shielded and (have is not None or found(requirement.name)):
            kept.append(f"{line} (installed: {have or 'unknown version'})")
        else:
            install.append(line)
    return install, kept


def constraints(names: Iterable[str] = PROTECTED + ("torch",),
                version: Callable[[str], Optional[str]] = installed_version) -> str:
    """A pip constraints file's text pinning each of ``names`` that is installed to its version, so that a
    dependency's dependency cannot replace it either (``pip install -c FILE ...``)."""
    pins = [f"{name}=={version(name)}" for name in names if version(name) is not None]
    return "".join(pin + "\n" for pin in pins)


def torch_installed() -> bool:
    """Whether ``torch`` can be found, without importing it (importing takes seconds and memory)."""
    return importable("torch")
