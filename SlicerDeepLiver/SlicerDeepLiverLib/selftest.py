"""Data and checks for the module's Slicer self-test: a small phantom CT, liver / tumor sphere masks to
paint, and the comparison of a label map with the expected voxel counts and geometry.

Pure Python (numpy, SimpleITK, deepliver) except ``paint_spheres``, which imports ``slicer`` when called,
so the data and the checks are tested with pytest outside Slicer too. Arrays are
``(z, y, x)``; distances in mm, measured in the image's physical space (spacing, origin, direction).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

SIZE = (64, 56, 24)
"""Test volume size, x, y, z."""

SPACING = (0.9, 0.8, 2.5)
"""Anisotropic spacing (mm), x, y, z: a geometry bug that swaps axes changes the voxel counts."""


def phantom_image(seed: int = 7) -> sitk.Image:
    """A phantom CT (``deepliver.dataset.phantom.make_phantom``, int16 HU) of ``SIZE`` voxels with
    ``SPACING`` and an oblique direction (10 degrees about z), so every conversion must carry the geometry."""
    from deepliver.dataset.phantom import make_phantom

    angle = np.deg2rad(10.0)
    direction = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    return make_phantom(seed, shape=SIZE, spacing=SPACING, direction=direction, n_tumors=0).image


def physical_grid(image: sitk.Image) -> np.ndarray:
    """Physical LPS coordinates (mm) of every voxel center, shape ``(z, y, x, 3)``."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(float) * np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return index @ direction.T + np.asarray(image.GetOrigin())


def sphere_masks(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(liver, tumor)`` boolean ``(z, y, x)`` masks: a liver sphere at the volume center and a tumor
    sphere inside it (off center), radii 14 and 5 mm."""
    points = physical_grid(image)
    center = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    tumor_center = center + np.array([4.0, -3.0, 2.5])
    liver = np.linalg.norm(points - center, axis=-1) <= 14.0
    tumor = np.linalg.norm(points - tumor_center, axis=-1) <= 5.0
    return liver, tumor & liver


def paint_spheres(logic, volumeNode, segmentationNode, image: sitk.Image) -> dict[str, int]:
    """Paint the ``sphere_masks`` into the liver and tumor segments (in Slicer), put the tumor first in
    segment order (saved values must come from the label table, not the order), and return the voxel
    counts a saved label must have: ``{label name: count}``, the tumor overwriting the liver."""
    import slicer
    from deepliver.labels import LIVER, TUMOR

    ids = {s.value: i for i, s in logic.structures(segmentationNode) if s is not None}
    liver, tumor = sphere_masks(image)
    for mask, value in ((liver, LIVER.value), (tumor, TUMOR.value)):
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentationNode, ids[value],
                                                         volumeNode)
    segmentationNode.GetSegmentation().SetSegmentIndex(ids[TUMOR.value], 0)
    return {LIVER.name: int((liver & ~tumor).sum()), TUMOR.name: int(tumor.sum())}


def label_differences(label: sitk.Image, image: sitk.Image, expected: dict[str, int],
                      tol: float = 1e-4) -> list[str]:
    """What differs between ``label`` and the expectation: voxel count per label name, size, spacing,
    origin (mm, within ``tol``) and direction (within ``tol``) of ``image``. Empty when all agree."""
    from deepliver.labels import label_by_name

    problems = []
    array = sitk.GetArrayFromImage(label)
    for name, count in expected.items():
        found = int(np.count_nonzero(array == label_by_name(name).value))
        if found != count:
            problems.append(f"{name}: {found} voxels, expected {count}")
    if label.GetSize() != image.GetSize():
        problems.append(f"size {label.GetSize()}, expected {image.GetSize()}")
    for what in ("Spacing", "Origin", "Direction"):
        got, want = getattr(label, f"Get{what}")(), getattr(image, f"Get{what}")()
        if not np.allclose(got, want, rtol=0, atol=tol):
            problems.append(f"{what.lower()} {got}, expected {want}")
    return problems


TINY_TRAINING = {"unet.channels": (4, 8, 16), "unet.strides": (2, 2), "unet.num_res_units": 0,
                 "data.workers": 0, "data.target_spacing": (1.5, 1.5, None), "data.patch_size": (32, 32),
                 "optim.epochs": 1, "optim.steps_per_epoch": 2, "optim.batch_size": 4, "validation.batch_size": 8}
"""A 2D U-Net small enough to train one epoch in seconds on a CPU (the model is useless, the bundle real)."""


def train_tiny_bundles(folder, cases: int = 3, shape: tuple[int, int, int] = (48, 48, 16)) -> dict:
    """Train a liver and a tumor bundle with ``deepliver.train.run.train`` (one tiny epoch each) on
    ``cases`` phantoms of ``shape`` (x, y, z) exported into ``folder/dataset``; returns
    ``{"liver": bundle folder, "tumor": bundle folder}`` (``folder/models/<task>``)."""
    import shutil
    from pathlib import Path

    from deepliver.dataset import export_case
    from deepliver.dataset.phantom import make_phantom
    from deepliver.train.config import apply_values, default_config
    from deepliver.train.run import train

    folder = Path(folder)
    dataset = folder / "dataset"
    for seed in range(cases):
        phantom = make_phantom(seed, shape=shape, n_tumors=2)
        export_case(phantom.image, phantom.label, dataset)
    bundles = {}
    for task in ("liver", "tumor"):
        run = folder / "runs" / task
        bundle = train(dataset, run, apply_values(default_config("unet2d", task), TINY_TRAINING))
        bundles[task] = Path(shutil.copytree(bundle, folder / "models" / f"tiny-{task}"))
    return bundles
