"""The import rules of ARCHITECTURE.md, checked on the real package.

- labels, imaging, dataset, postprocess, metrics never import torch (checked in a fresh interpreter);
- the segment path (inference.segment, cascade, predict, predictor, sliding, runtime; models.bundle) imports
  no torch either, so ``deepliver segment --runtime onnx`` runs where torch is not installed;
- nothing imports deepliver.cli;
- deepliver never imports slicer, qt, ctk or vtk.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "training" / "deepliver"
LIGHT_MODULES = ["deepliver.labels", "deepliver.imaging", "deepliver.imaging.dicom", "deepliver.dataset",
                 "deepliver.postprocess", "deepliver.metrics"]


def _light_submodules():
    names = []
    for sub in ("imaging", "dataset"):
        for path in sorted((PACKAGE / sub).glob("*.py")):
            if path.stem != "__init__":
                names.append(f"deepliver.{sub}.{path.stem}")
    return names


TORCH_FREE_INFERENCE = ["deepliver.inference.segment", "deepliver.inference.cascade", "deepliver.inference.predict",
                        "deepliver.inference.predictor", "deepliver.inference.sliding", "deepliver.inference.runtime",
                        "deepliver.models.bundle"]


@pytest.mark.parametrize("module", LIGHT_MODULES + _light_submodules() + TORCH_FREE_INFERENCE)
def test_light_modules_do_not_import_torch(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'torchvision')); "
            "print(','.join(bad))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


def _imports(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            for alias in node.names:
                yield f"{node.module}.{alias.name}"


def test_nothing_imports_cli_and_no_slicer_imports():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        for name in _imports(path):
            if path.name not in ("cli.py", "__main__.py") and name in ("deepliver.cli", "deepliver.cli.main"):
                problems.append(f"{rel} imports {name}")
            if name.split(".")[0] in ("slicer", "qt", "ctk", "vtk", "slicer_api"):
                problems.append(f"{rel} imports {name}")
    assert problems == []
