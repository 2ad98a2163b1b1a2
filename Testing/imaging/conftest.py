"""Shared helpers for the imaging tests: a small CT with distinctive values and known geometries."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

SIZE = (48, 40, 12)  # x, y, z
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-120.25, 35.5, -410.125)


def rotation_x(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def rotation_z(degrees: float) -> np.ndarray:
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


DIRECTIONS = {
    "identity": np.eye(3),
    # supine, feet first: x and z flipped (right-handed), as scanners write it
    "flipped": np.diag([-1.0, 1.0, -1.0]),
    # flipped rows and columns plus a small oblique tilt about two axes
    "oblique": np.diag([-1.0, -1.0, 1.0]) @ rotation_x(7.0) @ rotation_z(-4.0),
}


def ct_array(size=SIZE, seed: int = 0) -> np.ndarray:
    """A (z, y, x) int16 CT-like array: air, a body disc of soft tissue, a bone bar, random detail, and a
    ramp that makes every slice different (so a wrong slice order shows)."""
    x, y, z = size
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(np.arange(z), np.arange(y), np.arange(x), indexing="ij")
    array = np.full((z, y, x), -1000, dtype=np.int16)
    body = (xx - x / 2) ** 2 / (0.4 * x) ** 2 + (yy - y / 2) ** 2 / (0.4 * y) ** 2 < 1
    array[body] = 40 + 7 * zz[body] + 3 * xx[body] - 2 * yy[body]
    array[(xx > x * 0.45) & (xx < x * 0.55) & (yy > y * 0.6)] = 1200
    array += rng.integers(-20, 21, array.shape).astype(np.int16)
    array[0, 0, 0] = -1024
    array[-1, -1, -1] = 3071
    return array


def ct_image(direction: str | np.ndarray = "identity", size=SIZE, spacing=SPACING, origin=ORIGIN,
             seed: int = 0) -> sitk.Image:
    """The CT of ``ct_array`` with the given geometry (``direction`` a name in DIRECTIONS or a 3x3)."""
    matrix = DIRECTIONS[direction] if isinstance(direction, str) else np.asarray(direction)
    image = sitk.GetImageFromArray(ct_array(size, seed))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(tuple(matrix.ravel()))
    return image


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``python -m deepliver ARGS`` and capture its output."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "deepliver", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


@pytest.fixture
def ct():
    """The identity-direction test CT."""
    return ct_image()


@pytest.fixture
def make_ct():
    """``make_ct(direction="identity", size=..., spacing=..., origin=..., seed=0)`` builds a test CT."""
    return ct_image


@pytest.fixture
def cli():
    """``cli(*args)`` runs ``python -m deepliver`` in a subprocess."""
    return run_cli
