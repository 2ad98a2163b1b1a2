"""Synthetic abdominal CT phantoms with liver and tumor labels, and the cohorts ``deepliver phantom`` writes.

``make_phantom(seed)`` draws a scanner geometry (in-plane spacing 0.6-0.9 mm, slices 1-5 mm, a direction
that is the identity, flipped as scanners and converters write them, or a small oblique tilt) and an
abdomen (``phantom_anatomy``) built in physical space, then samples it on the grid, blurs it (partial
volume), adds CT noise and rounds it to int16 HU. The body is scaled to the field of view: at 512 voxels
of 0.75 mm it is a real-size abdomen (liver 1.2-2 L); at the default 160 voxels it is scaled by ~1/3
(liver ~40-80 mL) with the same proportions. The label (0 background, 1 liver, 2 tumor within the liver)
is the tissue map before blur, on exactly the image's grid.

``generate_cohort(out, cases, seed)`` writes ``OUT/phantom_000/`` ... each with ``image.nii.gz`` or an
``image/`` DICOM CT series, ``label.nii.gz`` with the image's geometry and ``phantom.json`` (the info).
Case ``k`` depends only on ``(seed, k)``; the same seed gives the same voxels.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from deepliver.atomic import write_json_atomic
from deepliver.dataset.phantom_anatomy import REAL_WIDTH_MM, draw_anatomy, paint_anatomy
from deepliver.dataset.phantom_canvas import Canvas
from deepliver.dataset.phantom_liver import draw_tumors
from deepliver.dataset.phantom_shapes import Frame
from deepliver.errors import ConfigError
from deepliver.imaging.geometry import Geometry
from deepliver.imaging.volumes import write_label, write_volume
from deepliver.progress import ProgressCallback, track

__all__ = ["DEFAULT_SHAPE", "DIRECTION_KINDS", "FORMATS", "Phantom", "make_phantom", "generate_cohort",
           "case_seed", "case_name", "right_handed"]

DEFAULT_SHAPE = (160, 160, 64)
"""Default grid ``(x, y, z)`` voxels: small enough for fast tests."""
DIRECTION_KINDS = ("identity", "flip_x", "flip_y", "flip_z", "flip_xy", "oblique")
FORMATS = ("nifti", "dicom")
_FLIPS = {"identity": (1, 1, 1), "flip_x": (-1, 1, 1), "flip_y": (1, -1, 1), "flip_z": (1, 1, -1),
          "flip_xy": (-1, -1, 1)}
_TUMOR_COUNT_P = (0.15, 0.2, 0.2, 0.15, 0.12, 0.1, 0.08)  # 0..6 tumors
_SLICE_MM = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)


@dataclass
class Phantom:
    """One synthetic CT: ``image`` (int16 HU) and ``label`` (uint8 0/1/2) share exactly one geometry.

    ``info``: spacing, direction and its kind, scale, number and diameters (mm) of the tumors present in
    the label, liver volume (mL, from the label), HU of liver and spleen, noise and blur.
    """

    image: sitk.Image
    label: sitk.Image
    seed: int
    info: dict = field(default_factory=dict)


def make_phantom(seed: int = 0, shape: Sequence[int] = DEFAULT_SHAPE,
                 spacing: Optional[Sequence[float]] = None, direction: Optional[Sequence[float]] = None,
                 n_tumors: Optional[int] = None) -> Phantom:
    """Generate one phantom CT (int16 HU image and uint8 label on one grid).

    ``shape`` is ``(x, y, z)`` voxels; ``spacing`` (mm, ``(x, y, z)``) and ``direction`` (9 numbers,
    row-major, orthonormal) are drawn from ``seed`` when None. ``n_tumors`` (0-16) tumors are drawn (0-6
    when None); one can end up hidden by another organ or outside the grid, so ``info["n_tumors"]``
    counts those in the label. The anatomy depends on the seed only, not on the spacing or direction.
    Raises ``ConfigError`` for a negative seed, a shape under 8 x 8 x 2, or a bad spacing/direction.
    """
    seed = _check_seed(seed)
    size = _check_shape(shape)
    if n_tumors is not None and not 0 <= n_tumors <= 16:
        raise ConfigError(f"n_tumors must be between 0 and 16, got {n_tumors}")
    rng_geo = np.random.default_rng([seed, 1])
    spacing, direction, kind = _draw_geometry(rng_geo, spacing, direction)
    anatomy = draw_anatomy(np.random.default_rng([seed, 2]))
    geometry, frame, scale = _place_grid(rng_geo, anatomy, size, spacing, direction)

    rng_tumor = np.random.default_rng([seed, 3])
    count = int(rng_tumor.choice(len(_TUMOR_COUNT_P), p=_TUMOR_COUNT_P)) if n_tumors is None else n_tumors
    tumors = draw_tumors(rng_tumor, anatomy.liver.shape, count, 3 * max(spacing[:2]) / scale,
                         anatomy.hu["tumor"], in_view=lambda p: frame.contains(p, margin=1.0))
    canvas = Canvas(frame)
    paint_anatomy(canvas, anatomy, tumors)
    label = canvas.label()
    present = canvas.tumors_present()
    hu, noise_sd, blur_mm = _acquire(canvas.hu, spacing, np.random.default_rng([seed, 4]))
    del canvas

    info = {
        "seed": seed, "shape": list(size), "spacing": list(spacing), "origin": list(geometry.origin),
        "direction": list(geometry.direction), "direction_kind": kind, "scale": scale,
        "n_tumors": len(present), "n_tumors_drawn": count,
        "tumor_diameters_mm": [round(float(2 * tumors[k].radius * scale), 2) for k in present],
        "tumor_kinds": [tumors[k].kind for k in present],
        "liver_volume_ml": float(np.count_nonzero(label)) * geometry.voxel_volume_ml,
        "liver_volume_ml_model": anatomy.liver.shape.volume_ml() * scale ** 3,
        "liver_hu": anatomy.hu["liver"], "spleen_hu": anatomy.hu["spleen"],
        "noise_sd_hu": noise_sd, "blur_mm": blur_mm,
    }
    return Phantom(geometry.image_from_array(hu), geometry.image_from_array(label), seed, info)


def _place_grid(rng, anatomy, size, spacing, direction) -> tuple[Geometry, Frame, float]:
    """The output grid and its frame: the body scaled to the in-plane field of view (at most real size),
    the grid centred near the body axis and, in z, within the liver's span (so every case shows liver);
    the scanner's table position gives the origin a random offset."""
    scale = min(1.0, min(size[0] * spacing[0], size[1] * spacing[1]) / REAL_WIDTH_MM)
    z_lo, z_hi = anatomy.liver.shape.z_range()
    z_mid = (z_lo + z_hi) / 2 + rng.uniform(-0.3, 0.3) * (z_hi - z_lo)
    q_center = np.array([rng.normal(0, 8), rng.normal(0, 8), z_mid])
    center = np.array([rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-400, 100)])
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    origin = center - matrix @ (np.asarray(spacing) * (np.asarray(size) - 1) / 2)
    geometry = Geometry(size, spacing, tuple(origin), direction)
    return geometry, Frame.from_geometry(geometry, center - scale * q_center, scale), scale


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"the phantom seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_shape(shape) -> tuple[int, int, int]:
    values = tuple(shape)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) for v in values):
        raise ConfigError(f"the phantom shape must be 3 integers (x, y, z), got {list(values)}")
    if min(values[:2]) < 8 or values[2] < 2:
        raise ConfigError(f"the phantom shape must be at least 8 x 8 x 2 voxels, got {list(values)}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _draw_geometry(rng, spacing, direction):
    """Spacing (x, y, z mm), direction (9 numbers) and its kind; drawn where not given. Every draw is made
    whatever is given, so the rest of the case does not depend on the arguments."""
    inplane = round(float(rng.uniform(0.6, 0.9)), 4)
    thick = float(rng.choice(_SLICE_MM)) if rng.random() < 0.5 else round(float(rng.uniform(1, 5)), 2)
    kind = DIRECTION_KINDS[rng.choice(len(DIRECTION_KINDS), p=(0.35, 0.1, 0.1, 0.15, 0.15, 0.15))]
    axis, angle = rng.normal(size=3), rng.uniform(2, 9.5)
    if spacing is None:
        spacing = (inplane, inplane, thick)
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ConfigError(f"the phantom spacing must be 3 positive numbers (mm), got {list(spacing)}")
    if direction is not None:
        matrix = np.asarray(direction, dtype=float).reshape(3, 3)
        if not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-6):
            raise ConfigError("the phantom direction must be an orthonormal 3x3 matrix (9 numbers)")
        return spacing, tuple(matrix.ravel()), _kind_of(matrix)
    if kind == "oblique":
        return spacing, tuple(_axis_angle(axis, angle).ravel()), kind
    return spacing, tuple(np.diag(_FLIPS[kind]).astype(float).ravel()), kind


def _axis_angle(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation by ``degrees`` about ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * K + (1 - np.cos(t)) * K @ K


def _kind_of(matrix: np.ndarray) -> str:
    for kind, flips in _FLIPS.items():
        if np.allclose(matrix, np.diag(flips), atol=1e-9):
            return kind
    return "oblique"


def _acquire(hu: np.ndarray, spacing, rng) -> tuple[np.ndarray, float, float]:
    """Partial-volume blur and correlated CT noise on the painted HU ``(z, y, x)``; int16, clipped."""
    noise_sd = float(rng.uniform(10, 20))
    blur_mm = float(rng.uniform(0.5, 0.9))
    sigma = (max(0.35, blur_mm / spacing[2]), blur_mm / spacing[1], blur_mm / spacing[0])  # voxels, z y x
    norm = float(np.prod([_kernel_norm(s) for s in sigma]))
    noisy = rng.standard_normal(hu.shape, dtype=np.float32)
    noisy *= np.float32(noise_sd / norm)
    noisy += hu
    out = ndimage.gaussian_filter(noisy, sigma, mode="nearest")
    np.rint(out, out=out)
    np.clip(out, -1024, 3071, out=out)
    return out.astype(np.int16), noise_sd, blur_mm


def _kernel_norm(sigma: float) -> float:
    """Root of the summed squared weights of scipy's Gaussian kernel (noise gain of the filter)."""
    radius = int(4 * sigma + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1
    return float(np.sqrt(np.sum(ndimage.gaussian_filter1d(impulse, sigma, mode="constant") ** 2)))


# --- cohorts ------------------------------------------------------------------------------------------
def case_seed(seed: int, index: int) -> int:
    """The seed of case ``index`` of a cohort: depends only on ``(seed, index)``."""
    return int(np.random.SeedSequence([_check_seed(seed), index]).generate_state(1)[0])


def case_name(index: int) -> str:
    """Folder name of case ``index``: ``phantom_000``, ``phantom_001``..."""
    return f"phantom_{index:03d}"


def right_handed(image: sitk.Image) -> sitk.Image:
    """The same voxels in the same physical places, re-indexed along z when the direction is
    left-handed (DICOM stacks slices along row x column, so a series is always right-handed)."""
    geometry = Geometry.from_image(image)
    matrix = geometry.direction_matrix
    if np.linalg.det(matrix) > 0:
        return image
    origin = geometry.index_to_physical((0, 0, geometry.size[2] - 1))
    matrix = matrix * np.array([1, 1, -1])
    flipped = Geometry(geometry.size, geometry.spacing, tuple(origin), tuple(matrix.ravel()))
    return flipped.image_from_array(sitk.GetArrayFromImage(image)[::-1])


def generate_cohort(out: str | os.PathLike, cases: int, seed: int = 0, fmt: str = "nifti",
                    shape: Sequence[int] = DEFAULT_SHAPE, progress: Optional[ProgressCallback] = None
                    ) -> list[Path]:
    """Write ``cases`` phantoms under ``out`` (one folder each, see the module docstring); returns the
    case folders. DICOM series get fake patient names/IDs; a left-handed case is written re-indexed
    along z (``right_handed``), with ``label.nii.gz`` on the written image's grid."""
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise ConfigError(f"the number of cases must be at least 1, got {cases!r}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown phantom format {fmt!r}; use one of {', '.join(FORMATS)}")
    _check_seed(seed)
    _check_shape(shape)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError("the phantom output must be a folder, and this is a file", out)
    folders = []
    for k in track(range(cases), "phantom", cases, progress):
        phantom = make_phantom(case_seed(seed, k), shape)
        folders.append(_write_case(phantom, out / case_name(k), fmt, seed, k))
    return folders


def _write_case(phantom: Phantom, folder: Path, fmt: str, seed: int, index: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = phantom.image
    if fmt == "dicom":
        image = right_handed(image)
        _write_series(image, folder / "image", seed, index, phantom.seed)
    else:
        write_volume(image, folder / "image.nii.gz")
    label = phantom.label if image is phantom.image else right_handed(phantom.label)
    write_label(label, folder / "label.nii.gz", reference=image)
    info = dict(phantom.info, format=fmt, case=folder.name, written_origin=list(image.GetOrigin()),
                written_direction=list(image.GetDirection()))
    write_json_atomic(folder / "phantom.json", info)
    return folder


def _write_series(image: sitk.Image, folder: Path, seed: int, index: int, uid_seed: int) -> None:
    """Write the DICOM series into a fresh sibling folder, then swap it in for ``folder``."""
    from deepliver.imaging.dicom_write import write_dicom_series  # pydicom only when writing DICOM
    if folder.exists():
        foreign = [p.name for p in folder.iterdir() if not (p.is_file() and p.suffix == ".dcm")]
        if foreign:
            raise ConfigError(f"will not replace this folder: it holds files a phantom did not write "
                              f"({', '.join(sorted(foreign)[:3])}); choose another output folder", folder)
    tmp = Path(tempfile.mkdtemp(prefix=".image.", dir=folder.parent))
    try:
        birth_year = 1940 + uid_seed % 50
        write_dicom_series(image, tmp, patient_name=f"PHANTOM^CASE{index:03d}", patient_id=f"PH{seed}-{index:03d}",
                           birth_date=f"{birth_year}0{1 + uid_seed % 9}1{uid_seed % 9}",
                           description="deepliver phantom CT", uid_seed=uid_seed)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
