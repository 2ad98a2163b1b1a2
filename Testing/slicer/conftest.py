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


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory):
    """A liver and a tumor bundle trained for one tiny epoch by ``deepliver.train`` (via the self-test's
    ``train_tiny_bundles``): ``{"liver": path, "tumor": path}``, both in one models folder."""
    from SlicerDeepLiverLib.selftest import train_tiny_bundles

    return train_tiny_bundles(tmp_path_factory.mktemp("tiny-bundles"))
