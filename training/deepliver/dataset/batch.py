"""Export a whole folder of cases (the phantom layout) into a dataset, in parallel processes.

Layout read: ``SOURCE/<case>/image.nii.gz`` (or ``image.nii``/``.nrrd``/``.mha``, or an ``image/`` DICOM
folder) with ``SOURCE/<case>/label.nii.gz`` (or another volume extension). Sub-folders with neither are
skipped; one with only one of the two is an error reported before anything is written.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from deepliver.dataset import caseid
from deepliver.dataset.export import ExportResult, update_dataset_json, write_case
from deepliver.dataset.layout import DatasetLayout
from deepliver.dataset.sources import read_case_input
from deepliver.errors import ConfigError, InputError
from deepliver.imaging.volumes import VOLUME_EXTENSIONS
from deepliver.progress import ProgressCallback

__all__ = ["SourceCase", "find_source_cases", "export_folder"]


@dataclass(frozen=True)
class SourceCase:
    """One case of a source folder: its folder name, image (file or DICOM folder) and label file."""

    name: str
    image: Path
    label: Path


def _find(folder: Path, stem: str, allow_dir: bool) -> Optional[Path]:
    if allow_dir and (folder / stem).is_dir():
        return folder / stem
    for ext in VOLUME_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return None


def find_source_cases(source_dir: str | os.PathLike) -> list[SourceCase]:
    """The cases of ``source_dir`` (sorted by folder name); ``InputError`` naming the folder when it holds
    none, or naming each sub-folder that has an image without a label or a label without an image."""
    source = Path(source_dir)
    if not source.is_dir():
        raise InputError("no such folder; expected a folder of <case>/image.nii.gz + <case>/label.nii.gz",
                         source)
    cases, broken = [], []
    for folder in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image, label = _find(folder, "image", True), _find(folder, "label", False)
        if image and label:
            cases.append(SourceCase(folder.name, image, label))
        elif image or label:
            broken.append(f"{folder.name} ({'label' if image else 'image'} missing)")
    if broken:
        raise InputError(f"incomplete case folder(s): {', '.join(broken)}; each needs image.nii.gz (or an "
                         "image/ DICOM folder) and label.nii.gz", source)
    if not cases:
        raise InputError("no case folders here; expected <case>/image.nii.gz (or <case>/image/ with DICOM) "
                         "and <case>/label.nii.gz", source)
    return cases


def export_folder(source_dir: str | os.PathLike, dataset: str | os.PathLike, *, annotator: Optional[str] = None,
                  workers: int = 1, progress: Optional[ProgressCallback] = None) -> list[ExportResult]:
    """Export every case of ``source_dir`` (see ``find_source_cases``) into ``dataset``; results in the
    source's order. ``workers`` > 1 runs cases in that many processes; ``dataset.json`` is rewritten once
    at the end. Progress stage ``export``, one step per case. On a failure the cases already written
    stay (each one complete), ``dataset.json`` lists them, and the error names the source case.
    """
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    cases = find_source_cases(source_dir)
    caseid.dataset_key(dataset, create=True)  # once, before any worker needs it
    if progress is not None:
        progress("export", 0, len(cases))
    try:
        if workers == 1 or len(cases) == 1:
            results = _run_serial(cases, dataset, annotator, progress)
        else:
            results = _run_parallel(cases, dataset, annotator, min(workers, len(cases)), progress)
    finally:
        if DatasetLayout(Path(dataset)).manifests.is_dir():
            update_dataset_json(dataset)
    return results


def _export_one(case: SourceCase, dataset: str, annotator: Optional[str]) -> ExportResult:
    """One case without touching dataset.json (the parent rewrites it once)."""
    key = caseid.dataset_key(dataset)
    try:
        prepared = read_case_input(case.image, case.label, key=key)
        return write_case(DatasetLayout(Path(dataset)), prepared, key, annotator=annotator, update_index=False)
    except InputError as e:
        raise InputError(f"case {case.name}: {e}") from e


def _run_serial(cases, dataset, annotator, progress) -> list[ExportResult]:
    results = []
    for i, case in enumerate(cases, 1):
        results.append(_export_one(case, os.fspath(dataset), annotator))
        if progress is not None:
            progress("export", i, len(cases))
    return results


def _run_parallel(cases, dataset, annotator, workers, progress) -> list[ExportResult]:
    context = multiprocessing.get_context("spawn")  # no fork of a process holding ITK threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_export_one, case, os.fspath(dataset), annotator): i
                   for i, case in enumerate(cases)}
        results: list[Optional[ExportResult]] = [None] * len(cases)
        pending, done_count = set(futures), 0
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                results[futures[future]] = future.result()
                done_count += 1
                if progress is not None:
                    progress("export", done_count, len(cases))
    return [r for r in results if r is not None]

