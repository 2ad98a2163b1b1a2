"""The sizes of ``deepliver demo``: two profiles, ``quick`` (CI: about 3 minutes on 2 CPU cores) and
``default`` (better models, at most 15 minutes; 5 on an idle machine), in this one place.

Training phantoms share one scanner geometry (identity direction, ``train_spacing``); the held-out phantoms
use ``TEST_GEOMETRIES`` in turn: other voxel sizes, flipped and oblique directions, about the same field
of view (so the phantom body keeps its real size, as scans of real patients do). Each model's training
options are ``section.key`` values of ``deepliver.train.config`` applied on the model's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["TestGeometry", "TEST_GEOMETRIES", "RunSpec", "DemoProfile", "PROFILES", "SPLIT"]

SPLIT = (75.0, 25.0, 0.0)
"""Train/val/test percentages of the training phantoms (the test cases are the separate held-out set);
U-Net training and ``deepliver convert`` use it with the same seed, so every model sees the same split."""


@dataclass(frozen=True)
class TestGeometry:
    """A held-out phantom's grid: ``shape`` ``(x, y, z)`` voxels, ``spacing`` ``(x, y, z)`` mm, and its
    direction as 9 numbers (row-major)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...]
    kind: str


_C, _S = 0.9945218953682733, 0.10452846326765347  # cos, sin of 6 degrees
TEST_GEOMETRIES = (
    TestGeometry((160, 160, 40), (2.4, 2.4, 4.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), "flip_xy"),
    TestGeometry((112, 112, 27), (3.4, 3.4, 6.0), (-1, 0, 0, 0, 1, 0, 0, 0, 1), "flip_x"),
    TestGeometry((144, 144, 53), (2.7, 2.7, 3.0), (_C, -_S, 0, _S, _C, 0, 0, 0, 1), "oblique (6 deg about z)"),
    TestGeometry((128, 128, 36), (3.0, 3.0, 4.5), (1, 0, 0, 0, _C, -_S, 0, _S, _C), "oblique (6 deg about x)"),
)


@dataclass(frozen=True)
class RunSpec:
    """One model to train: RUN folder name, ``model`` and ``task``, and config ``values``."""

    name: str
    model: str
    task: str
    values: dict[str, Any] = field(default_factory=dict)


def _unet2d(task: str, channels, steps: int, epochs: int, patch: int) -> RunSpec:
    return RunSpec(f"{task}_unet2d", "unet2d", task, {
        "unet.channels": channels, "unet.strides": (2,) * (len(channels) - 1), "unet.num_res_units": 0,
        "unet.context_slices": 1, "data.target_spacing": (3.0, 3.0, None), "data.patch_size": (patch, patch),
        "optim.steps_per_epoch": steps, "optim.epochs": epochs, "optim.batch_size": 8, "optim.lr": 3e-3,
        "optim.early_stop_patience": 0, "validation.batch_size": 32})


def _unet3d(steps: int, epochs: int, channels) -> RunSpec:
    return RunSpec("tumor_unet3d", "unet3d", "tumor", {
        "unet.channels": channels, "unet.strides": (2,) * (len(channels) - 1), "unet.num_res_units": 0,
        "data.target_spacing": (3.0, 3.0, 5.0), "data.patch_size": (48, 48, 16), "optim.steps_per_epoch": steps,
        "optim.epochs": epochs, "optim.batch_size": 4, "optim.lr": 3e-3, "optim.early_stop_patience": 0,
        "validation.batch_size": 4})


def _detector(model: str, epochs: int) -> RunSpec:
    values: dict[str, Any] = {"optim.epochs": epochs, "optim.early_stop_patience": 0}
    if model == "fasterrcnn":
        values.update({"detector.backbone": "mobilenet_v3_large_fpn", "optim.batch_size": 8,
                       "detector.box_batch_size_per_image": 128})
    else:
        values.update({"optim.batch_size": 16})
    return RunSpec(f"tumor_{model}", model, "tumor", values)


@dataclass(frozen=True)
class DemoProfile:
    """Cohort sizes, training grid, 2D slice size for the detectors (``deepliver convert --size``), and
    the runs (the first is the liver stage)."""

    name: str
    train_cases: int
    test_cases: int
    train_shape: tuple[int, int, int]
    train_spacing: tuple[float, float, float]
    slice_size: int
    runs: tuple[RunSpec, ...]
    minutes: int


PROFILES = {
    "quick": DemoProfile(
        "quick", train_cases=10, test_cases=3, train_shape=(128, 128, 32), train_spacing=(3.0, 3.0, 5.0),
        slice_size=128, minutes=3,
        runs=(_unet2d("liver", (8, 16, 32, 64), 25, 16, 128), _unet2d("tumor", (8, 16, 32, 64), 15, 4, 64),
              _unet3d(8, 2, (8, 16, 32)), _detector("fasterrcnn", 1), _detector("yolo", 2))),
    "default": DemoProfile(
        "default", train_cases=16, test_cases=4, train_shape=(128, 128, 32), train_spacing=(3.0, 3.0, 5.0),
        slice_size=128, minutes=15,
        runs=(_unet2d("liver", (16, 32, 64, 128), 25, 20, 128), _unet2d("tumor", (16, 32, 64, 128), 25, 20, 96),
              _unet3d(20, 12, (16, 32, 64)), _detector("fasterrcnn", 4), _detector("yolo", 20))),
}
"""The demo's profiles by name (``--quick`` picks ``quick``)."""
