"""The dataset folder (no torch): cases with manifests, ``dataset.json``, integrity checks.

Layout (Medical Segmentation Decathlon / nnU-Net v2 compatible; see ``deepliver.dataset.layout``)::

    DATASET/dataset.json  imagesTr/<case>.nii.gz  labelsTr/<case>.nii.gz  manifests/<case>.json
    DATASET/.deepliver-key   (secret: the key of the case ids and patient keys; do not share it)

Public API: ``export_case``, ``export_folder``, ``ExportResult``, ``find_case``, ``case_id_for``,
``load_case``, ``read_manifest``, ``dataset_key``, ``update_dataset_json``, ``check_dataset``,
``check_dataset_or_raise``.
"""

from deepliver.dataset.batch import export_folder
from deepliver.dataset.caseid import KEY_FILE, dataset_key
from deepliver.dataset.check import check_dataset, check_dataset_or_raise
from deepliver.dataset.export import (ExportResult, case_id_for, export_case, find_case, load_case,
                                      update_dataset_json)
from deepliver.dataset.layout import DatasetLayout
from deepliver.dataset.manifest import read_manifest

__all__ = [
    # export and read back (deepliver.dataset.export, .batch)
    "ExportResult", "export_case", "export_folder", "find_case", "case_id_for", "load_case",
    "read_manifest", "update_dataset_json",
    # the folder and its key (deepliver.dataset.layout, .caseid)
    "DatasetLayout", "KEY_FILE", "dataset_key",
    # integrity (deepliver.dataset.check)
    "check_dataset", "check_dataset_or_raise",
]
