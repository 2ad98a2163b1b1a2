"""The models folder of the AI segmentation: the bundles found there, the pair to run, and what the case
manifest records about them.

Pure Python (tested with pytest outside Slicer). Bundles are read with ``deepliver.models.bundle`` (this
module keeps no copy of ``model.json``'s fields); ``deepliver`` is imported inside the functions, so
Slicer lists the module before the package is installed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

MODELS_FOLDER_NAME = "DeepLiverModels"
"""Name of the default models folder, inside the folder of Slicer's user settings file."""

HOW_TO_GET = ("Train one with 'deepliver train DATASET --model unet2d --task liver --out RUN' (and --task tumor "
              "for tumors), then copy RUN/model into this folder as a sub-folder, or unpack a downloaded "
              "bundle there (a bundle is a folder with model.json and weights.safetensors).")
"""The advice given whenever no usable bundle is found."""

BUNDLE_COLUMNS = ("Name", "Task", "Architecture", "Validation Dice", "Date")
"""Column titles of the bundle table (translated by the caller)."""


class NoBundleError(ValueError):
    """No usable model bundle: the message says where we looked and how to get one."""


@dataclass(frozen=True)
class BundleInfo:
    """One bundle of the models folder, as the bundle table shows it.

    ``dice`` is the validation Dice from ``model.json`` (None when the bundle has none); ``created`` is
    the ISO 8601 time the bundle was written; ``version`` the deepliver version that wrote it.
    """

    path: Path
    task: str
    architecture: str
    dice: Optional[float]
    created: str
    version: str

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def date(self) -> str:
        """``YYYY-MM-DD`` of ``created`` (empty when unknown)."""
        return self.created[:10]

    def row(self) -> tuple[str, str, str, str, str]:
        """The cells of the bundle table, in ``BUNDLE_COLUMNS`` order."""
        dice = "" if self.dice is None else f"{self.dice:.3f}"
        return self.name, self.task, self.architecture, dice, self.date

    def provenance(self) -> dict[str, Any]:
        """What the case manifest records about this bundle."""
        return {"task": self.task, "bundle": self.name, "architecture": self.architecture,
                "deepliver_version": self.version, "created": self.created, "validation_dice": self.dice}


def default_models_folder(settings_file: str | os.PathLike) -> Path:
    """``<folder of Slicer's user settings file>/DeepLiverModels``."""
    return Path(settings_file).parent / MODELS_FOLDER_NAME


def _dice(validation: dict[str, Any]) -> Optional[float]:
    value = validation.get("dice")
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def bundle_info(path: Path, config) -> BundleInfo:
    """A ``BundleInfo`` from a bundle folder and its ``deepliver.models.bundle.ModelConfig``."""
    return BundleInfo(Path(path), config.task, f"{config.architecture} {config.spatial_dims}D",
                      _dice(config.validation or {}), str(config.created or ""), str(config.deepliver_version))


def list_bundles(folder: str | os.PathLike) -> list[BundleInfo]:
    """The readable bundles in ``folder`` or one level below: liver first, then tumor; within a task the
    best validation Dice first, then the newest. Unreadable bundles are left out."""
    from deepliver.models.bundle import find_bundles

    bundles = [bundle_info(path, config) for path, config in find_bundles(folder)]
    newest_first = sorted(bundles, key=lambda b: (b.created, b.name), reverse=True)
    return sorted(newest_first, key=lambda b: (b.task != "liver", -b.dice if b.dice is not None else 1.0))


def choose_bundles(bundles: Sequence[BundleInfo], folder: str | os.PathLike, liver: Optional[str] = None,
                   tumor: Optional[str] = None, use_tumor: bool = True) -> tuple[BundleInfo, Optional[BundleInfo]]:
    """The liver bundle and the tumor bundle (None: liver only) to run.

    ``liver`` / ``tumor`` are bundle names the user picked (None: the first of that task in
    ``list_bundles`` order). Raises ``NoBundleError`` when ``folder`` holds no bundle or no liver bundle
    (the cascade starts with the liver), or when a picked name is not a bundle of that task.
    """
    if not bundles:
        raise NoBundleError(f"No model bundle found in {Path(folder)} (searched the folder and its "
                            f"sub-folders). {HOW_TO_GET}")
    chosen = []
    for task, name, needed in (("liver", liver, True), ("tumor", tumor, use_tumor)):
        of_task = [b for b in bundles if b.task == task]
        if not needed or (not of_task and task == "tumor"):
            chosen.append(None)
            continue
        if not of_task:
            found = ", ".join(f"{b.name} ({b.task})" for b in bundles)
            raise NoBundleError(f"{Path(folder)} holds no liver model, only: {found}. The segmentation needs a "
                                f"liver model first. {HOW_TO_GET}")
        match = [b for b in of_task if name in (None, b.name)]
        if not match:
            wrong = [b for b in bundles if b.name == name]
            what = f"a {wrong[0].task} model" if wrong else "not in the folder any more"
            raise NoBundleError(f"The {task} model {name!r} is {what}; pick one of: "
                                f"{', '.join(b.name for b in of_task)}.")
        chosen.append(match[0])
    return chosen[0], chosen[1]


def check_bundle_tasks(liver: str | os.PathLike, tumor: Optional[str | os.PathLike] = None) -> None:
    """Read both ``model.json`` files and check their tasks, as ``deepliver segment`` does first.

    Raises ``deepliver.models.bundle.BundleError`` (the message names the folder and the fix)."""
    from deepliver.models.bundle import check_task, read_bundle_config

    check_task(read_bundle_config(liver), "liver", liver)
    if tumor is not None:
        check_task(read_bundle_config(tumor), "tumor", tumor)


def model_provenance(liver: BundleInfo, tumor: Optional[BundleInfo], device: str = "") -> dict[str, Any]:
    """The ``started_from`` record of a label that began as this model result (see
    ``summary.annotation_provenance``): ``{"kind": "model", "bundle", "version", "models", "device"}``."""
    models = [b for b in (liver, tumor) if b is not None]
    return {"kind": "model", "bundle": " + ".join(b.name for b in models),
            "version": liver.version, "models": [b.provenance() for b in models], "device": device}


def bundles_without_onnx(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The bundle folders among ``paths`` that have no usable ``model.onnx`` (what the CPU run needs)."""
    from deepliver.inference.runtime import onnx_file
    from deepliver.models.bundle import read_bundle_config

    return [Path(p) for p in paths if onnx_file(p, read_bundle_config(p)) is None]


def check_onnx(paths: Sequence[str | os.PathLike]) -> None:
    """Raise ``NoBundleError`` naming each bundle without ``model.onnx`` and the one-line fix: the CPU run
    uses ONNX Runtime (``--runtime onnx``) so that Slicer's Python needs no PyTorch."""
    missing = bundles_without_onnx(paths)
    if missing:
        fixes = "\n".join(f"  deepliver bundle export-onnx \"{p}\"" for p in missing)
        raise NoBundleError(
            f"The CPU segmentation runs the models with ONNX Runtime, but {', '.join(p.name for p in missing)} "
            f"has no model.onnx (bundles trained before ONNX export). Add it with:\n{fixes}\n(this needs PyTorch: "
            "run it where the model was trained, or after pip install 'slicer-deepliver[train]'), or choose the "
            "GPU.")
