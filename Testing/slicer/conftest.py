"""Shared paths and fixtures for the Slicer module tests (no Slicer needed).

``SlicerDeepLiver/`` goes on ``sys.path`` the way Slicer puts a scripted module's folder there, so the
pure-Python helpers import as ``SlicerDeepLiverLib.<name>``.
"""

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "SlicerDeepLiver"

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))


@pytest.fixture(scope="session")
def phantom():
    """One small phantom (image int16 HU, label 0/1/2), x, y, z = 48, 40, 12."""
    from deepliver.dataset.phantom import make_phantom

    return make_phantom(5, shape=(48, 40, 12), n_tumors=2)
