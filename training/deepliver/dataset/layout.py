"""Where things live in a dataset folder, and its ``dataset.json``.

```
DATASET/dataset.json                      the index (MSD + nnU-Net v2 keys, see dataset_json)
DATASET/.deepliver-key                    the case-id key (secret, see deepliver.dataset.caseid)
DATASET/imagesTr/<case>.nii.gz            CT in Hounsfield units (int16 when the values fit)
DATASET/labelsTr/<case>.nii.gz            the newest label map (uint8, deepliver.labels), image geometry
DATASET/labelsTr/.history/<case>-<UTC>.nii.gz   every previous label of the case, never deleted
DATASET/manifests/<case>.json             provenance, geometry, volumes, checksums (deepliver.dataset.manifest)
```

``dataset.json`` follows the Medical Segmentation Decathlon: ``labels`` maps value -> name
(``{"0": "background", "1": "liver", "2": "tumor"}``) and ``training`` lists ``./imagesTr/<case>.nii.gz``
paths. nnU-Net v2 reads ``channel_names`` and ``file_ending`` (written too) but wants ``labels`` as
name -> value and images named ``<case>_0000.nii.gz``; its ``nnUNetv2_convert_MSD_dataset`` converts this
folder as it is. We keep the MSD form of ``labels`` because both forms cannot share the key.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from deepliver import __version__
from deepliver.labels import LABELS

__all__ = ["NIFTI", "DatasetLayout", "dataset_json", "dataset_lock"]

NIFTI = ".nii.gz"


@dataclass(frozen=True)
class DatasetLayout:
    """The paths of one dataset folder (``root``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def images(self) -> Path:
        return self.root / "imagesTr"

    @property
    def labels(self) -> Path:
        return self.root / "labelsTr"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def history(self) -> Path:
        return self.labels / ".history"

    @property
    def index(self) -> Path:
        return self.root / "dataset.json"

    def image(self, case_id: str) -> Path:
        return self.images / f"{case_id}{NIFTI}"

    def label(self, case_id: str) -> Path:
        return self.labels / f"{case_id}{NIFTI}"

    def manifest(self, case_id: str) -> Path:
        return self.manifests / f"{case_id}.json"

    def relative(self, path: Path) -> str:
        """``path`` relative to the root, with forward slashes (as stored in manifests)."""
        return Path(path).relative_to(self.root).as_posix()

    def manifest_ids(self) -> list[str]:
        """Case ids that have a manifest, sorted."""
        if not self.manifests.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.manifests.iterdir()
                      if p.name.endswith(".json") and not p.name.startswith(".") and p.is_file())

    def make_dirs(self) -> None:
        for folder in (self.images, self.labels, self.manifests, self.history):
            folder.mkdir(parents=True, exist_ok=True)


def dataset_json(case_ids: list[str], name: str = "DeepLiver", description: str | None = None) -> dict[str, Any]:
    """The ``dataset.json`` content for ``case_ids`` (sorted by the caller or here)."""
    ids = sorted(case_ids)
    return {
        "name": name,
        "description": description or "Liver and liver-tumor CT segmentation exported by deepliver "
                                      "(labels: value -> name, as the Medical Segmentation Decathlon)",
        "reference": "",
        "licence": "",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "channel_names": {"0": "CT"},
        "labels": {str(label.value): label.name for label in LABELS},
        "file_ending": NIFTI,
        "numTraining": len(ids),
        "numTest": 0,
        "training": [{"image": f"./imagesTr/{c}{NIFTI}", "label": f"./labelsTr/{c}{NIFTI}"} for c in ids],
        "test": [],
        "deepliver": {"version": __version__},
    }


@contextlib.contextmanager
def dataset_lock(root: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the dataset folder while updating it (POSIX ``flock`` on the folder
    itself, so no lock file appears in the dataset). On systems without ``fcntl`` (Windows) this does
    nothing: run one export at a time there."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(root, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
