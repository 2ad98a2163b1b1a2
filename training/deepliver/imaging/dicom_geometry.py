"""The 3D geometry of a stack of DICOM slices, checked: one orientation, no gantry tilt, no gaps.

Slices are ordered by ``ImagePositionPatient`` projected on the slice normal ``row x column`` (never by
file name or InstanceNumber). The volume's direction columns are the row direction (x), the column
direction (y) and the normal (z); the origin is the first slice's position; the z spacing is the mean
step between positions. Every check raises a one-line ``GeometryError`` that names the folder and, where
one file is to blame, the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from deepliver.errors import GeometryError, ReadError
from deepliver.imaging.dicom_headers import SliceHeader
from deepliver.imaging.geometry import Geometry

__all__ = ["slice_normal", "sort_slices", "stack_geometry", "ORIENTATION_TOLERANCE"]

ORIENTATION_TOLERANCE = 1e-4
"""Largest difference between direction cosines of slices that count as one orientation."""
DUPLICATE_TOLERANCE = 1e-3
"""Slices closer than this (mm) along the normal are at the same position."""
TILT_FRACTION = 0.05
"""Largest in-plane drift of a slice position, as a fraction of the smallest pixel spacing."""


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """The unit slice normal ``row x column`` of an ImageOrientationPatient (6 numbers)."""
    row, col = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:], dtype=float)
    normal = np.cross(row, col)
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 0 else normal


def sort_slices(slices: Sequence[SliceHeader]) -> tuple[list[SliceHeader], np.ndarray]:
    """Slices sorted along the first slice's normal (ties by file name), and their distances (mm)."""
    normal = slice_normal(slices[0].orientation)
    keyed = sorted(((float(np.dot(s.position, normal)), str(s.path), s) for s in slices), key=lambda t: t[:2])
    return [t[2] for t in keyed], np.array([t[0] for t in keyed])


def stack_geometry(slices: Sequence[SliceHeader], folder: Path) -> tuple[Geometry, list[SliceHeader]]:
    """Check that ``slices`` form one regular 3D grid; return its Geometry and the slices in z order."""
    if not slices:
        raise ReadError("no image slices in this series", folder)
    _check_uniform(slices, folder)
    ordered, distances = sort_slices(slices)
    if len(ordered) == 1:
        raise ReadError(f"the series has a single slice ({ordered[0].path.name}): this is a 2D image; a 3D "
                        "volume needs at least 2 slices", folder)
    steps = np.diff(distances)
    _check_duplicates(ordered, steps, distances, folder)
    _check_tilt(ordered, distances, folder)
    _check_spacing(ordered, steps, distances, folder)
    first = ordered[0]
    row = _unit(first.orientation[:3])
    col = _unit(first.orientation[3:])
    normal = slice_normal(first.orientation)
    direction = np.column_stack([row, col, normal])
    z_spacing = (distances[-1] - distances[0]) / (len(ordered) - 1)
    spacing = (first.pixel_spacing[1], first.pixel_spacing[0], z_spacing)
    return Geometry((first.columns, first.rows, len(ordered)), spacing, first.position,
                    tuple(direction.ravel())), ordered


def _unit(v: Sequence[float]) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def _check_uniform(slices: Sequence[SliceHeader], folder: Path) -> None:
    first = slices[0]
    row, col = np.asarray(first.orientation[:3]), np.asarray(first.orientation[3:])
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise GeometryError(f"ImageOrientationPatient {list(first.orientation)} of {first.path.name} is not "
                            "two orthogonal unit vectors", folder)
    for s in slices[1:]:
        if (s.rows, s.columns) != (first.rows, first.columns):
            raise GeometryError(f"slices of different sizes in one series: {first.path.name} is "
                                f"{first.columns}x{first.rows}, {s.path.name} is {s.columns}x{s.rows}", folder)
        if not np.allclose(s.orientation, first.orientation, rtol=0, atol=ORIENTATION_TOLERANCE):
            angle = np.degrees(np.arccos(np.clip(abs(slice_normal(s.orientation) @ slice_normal(first.orientation)),
                                                 -1, 1)))
            raise GeometryError(f"mixed orientations in one series: {s.path.name} is turned {angle:.2f} degrees "
                                f"from {first.path.name} (ImageOrientationPatient {_fmt(s.orientation)} vs "
                                f"{_fmt(first.orientation)}); split the series by orientation", folder)
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=0, atol=1e-4):
            raise GeometryError(f"mixed pixel spacings in one series: {s.path.name} has {_fmt(s.pixel_spacing)} mm, "
                                f"{first.path.name} has {_fmt(first.pixel_spacing)} mm", folder)


def _check_duplicates(ordered, steps: np.ndarray, distances: np.ndarray, folder: Path) -> None:
    same = np.flatnonzero(steps < DUPLICATE_TOLERANCE)
    if same.size:
        i = int(same[0])
        positions = len(ordered) - same.size
        raise GeometryError(
            f"{len(ordered)} files but only {positions} distinct slice positions (e.g. {ordered[i].path.name} "
            f"and {ordered[i + 1].path.name} both at {distances[i]:.4g} mm along the normal): the series holds "
            "several volumes (time points, phases or echoes: a 4D image); split it into one series per volume",
            folder)


def _check_tilt(ordered, distances: np.ndarray, folder: Path) -> None:
    normal = slice_normal(ordered[0].orientation)
    offsets = np.asarray([s.position for s in ordered]) - np.asarray(ordered[0].position)
    lateral = offsets - np.outer(offsets @ normal, normal)
    drift = np.linalg.norm(lateral, axis=1)
    if drift.max() > TILT_FRACTION * min(ordered[0].pixel_spacing):
        angle = np.degrees(np.arctan2(drift[-1], distances[-1] - distances[0]))
        raise GeometryError(
            f"gantry tilt of {angle:.2f} degrees: slice positions drift {drift[-1]:.3g} mm sideways over "
            f"{distances[-1] - distances[0]:.4g} mm instead of stacking along the slice normal; correct the "
            "tilt first (e.g. dcm2niix or Slicer's acquisition geometry regularization)", folder)


def _check_spacing(ordered, steps: np.ndarray, distances: np.ndarray, folder: Path) -> None:
    base = float(np.median(steps))
    tolerance = max(0.005, 0.01 * base)
    bad = np.flatnonzero(np.abs(steps - base) > tolerance)
    if not bad.size:
        return
    i = int(bad[0])
    ratio = steps[i] / base
    where = (f"between {distances[i]:.4g} and {distances[i + 1]:.4g} mm along the slice normal "
             f"({ordered[i].path.name}, {ordered[i + 1].path.name})")
    if round(ratio) >= 2 and abs(ratio - round(ratio)) < 0.1:
        missing = int(round(ratio)) - 1
        at = ", ".join(f"{distances[i] + base * (k + 1):.4g}" for k in range(min(missing, 3)))
        raise GeometryError(
            f"missing slice(s): a gap of {steps[i]:.4g} mm {where} where the spacing is {base:.4g} mm; about "
            f"{missing} slice(s) missing at {at}{'...' if missing > 3 else ''} mm ({bad.size} gap(s) in all)",
            folder)
    raise GeometryError(f"non-uniform slice spacing: steps from {steps.min():.4g} to {steps.max():.4g} mm "
                        f"(first odd step {steps[i]:.4g} mm {where}); resample to a regular grid first", folder)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"
