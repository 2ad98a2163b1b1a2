"""``deepliver compare``: several training runs scored on the same cases, written as the architecture table.

Each RUN's model goes through the cascade ``deepliver segment`` runs (``deepliver.inference.cascade
.segment_image``, the same post-processing) on every chosen case of DATASET, and its output label is
scored against the case's reference with ``deepliver.metrics``:

- a **liver** run segments the liver alone (its column shows liver rows);
- a **tumor** run needs a liver stage: ``liver_model`` (``--liver-model``) when given, else the first liver
  run among the RUNs. Its column shows the tumor rows and the liver rows of the combined label. A detector
  (Faster R-CNN, YOLO) is the tumor stage too: its boxes are rasterized inside the predicted liver.

**Which cases** (``cases``): ``test`` (default) = the ``test`` list of ``DATASET/splits.json`` when that
file exists, else every case of DATASET that none of the runs trained or validated on (each bundle records
its cases; see ``deepliver.compare_runs``); ``val`` = ``splits.json``'s ``val`` list, else the validation
cases all runs share; ``all`` = every case. For ``test`` and ``val`` a run that trained on one of the chosen
cases is refused (``InputError`` naming run and cases); with ``all`` the report notes how many chosen
cases each run trained on. So a separate dataset of new cases (as ``deepliver demo`` makes) is all test.

Output: the report files of ``deepliver.report.write_report`` in OUT, plus each model's labels in
``OUT/predictions/<column>/<case>.nii.gz`` (open them beside the CT to see the differences).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import SimpleITK as sitk

from deepliver.compare_runs import ARCHITECTURE_NAMES, RunInfo, column_names, read_run
from deepliver.dataset.splits import read_splits_file
from deepliver.errors import ConfigError, InputError
from deepliver.postprocess import PostprocessOptions
from deepliver.progress import ProgressCallback
from deepliver.report import ModelResult, Overlay, Report, write_report

__all__ = ["CASE_CHOICES", "CompareOptions", "CompareResult", "select_cases", "compare"]

CASE_CHOICES = ("test", "val", "all")


@dataclass
class CompareOptions:
    """``cases``: one of ``CASE_CHOICES`` (module docstring); ``liver_model``: a liver bundle for the tumor
    runs (default: the first liver run); ``device``: ``auto``, ``cpu`` or ``cuda``; ``postprocess``: the
    cascade's post-processing; ``title``: the report's title; ``notes``: lines added to the report."""

    cases: str = "test"
    liver_model: Optional[Path] = None
    device: str = "cpu"
    postprocess: PostprocessOptions = field(default_factory=PostprocessOptions)
    title: str = "Architecture comparison"
    notes: list[str] = field(default_factory=list)


@dataclass
class CompareResult:
    """The ``Report`` (columns with per-case metrics), the files written, the prediction folders."""

    report: Report
    files: dict[str, Path]
    predictions: dict[str, Path]


def _dataset_cases(dataset: Path) -> dict[str, tuple[Path, Path]]:
    from deepliver.dataset.convert import dataset_cases

    if not (dataset / "dataset.json").is_file():
        raise InputError("not a dataset folder: dataset.json is missing (make one with deepliver export)", dataset)
    return {case: (image, label) for case, image, label in dataset_cases(dataset)}


def select_cases(dataset: Path, runs: list[RunInfo], which: str) -> tuple[list[str], str]:
    """``(case ids, how they were chosen)`` for ``which`` in ``CASE_CHOICES`` (module docstring)."""
    if which not in CASE_CHOICES:
        raise ConfigError(f"--cases must be one of {', '.join(CASE_CHOICES)}, got {which!r}")
    known = sorted(_dataset_cases(dataset))
    splits = dataset / "splits.json"
    if which == "all":
        chosen, how = known, "All cases of the dataset."
    elif splits.is_file():
        chosen, how = getattr(read_splits_file(splits, known)[0], which), f"The '{which}' cases of {splits}."
    else:
        unknown = [str(r.path) for r in runs if r.seen_cases is None]
        if unknown:
            raise InputError(f"{', '.join(unknown)} do(es) not record the cases it trained on, so the {which} cases "
                             f"are unknown: add {splits} (train/val/test lists) or pass --cases all", dataset)
        if which == "test":
            seen = set().union(*(r.seen_cases for r in runs))
            chosen, how = [c for c in known if c not in seen], "The cases none of the runs trained or validated on."
        else:
            shared = set.intersection(*(r.val_cases for r in runs))
            chosen, how = [c for c in known if c in shared], "The validation cases all runs share."
    if not chosen:
        raise InputError(f"no {which} case to evaluate ({len(known)} case(s) in the dataset; {how.rstrip('.')}); "
                         "use another dataset, add DATASET/splits.json, or pass --cases all", dataset)
    return chosen, how


def _check_leaks(runs: list[RunInfo], cases: list[str], which: str, notes: list[str]) -> None:
    for run in runs:
        trained = sorted(set(cases) & (run.train_cases or set()))
        if trained and which != "all":
            raise InputError(f"this run trained on {len(trained)} of the {which} cases ({', '.join(trained[:5])}); "
                             "its scores would be optimistic: evaluate on other cases or pass --cases all", run.path)
        if trained:
            notes.append(f"{run.path} trained on {len(trained)} of the evaluated cases: its scores are optimistic.")


def _liver_stage(runs: list[RunInfo], liver_model: Optional[Path]) -> Optional[RunInfo]:
    from deepliver.models.bundle import check_task

    if liver_model is not None:
        stage = read_run(liver_model)
        check_task(stage.config, "liver", stage.bundle)
        return stage
    tumor_runs = [r for r in runs if r.task == "tumor"]
    liver_runs = [r for r in runs if r.task == "liver"]
    if tumor_runs and not liver_runs:
        raise InputError(f"tumor run(s) {', '.join(str(r.path) for r in tumor_runs)} need a liver stage: pass "
                         "--liver-model BUNDLE or add a liver run to the RUNs")
    return liver_runs[0] if liver_runs else None


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


@dataclass
class _Column:
    run: RunInfo
    name: str
    labels: tuple[str, ...]
    folder: Path
    cases: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def _overlay(image: np.ndarray, ref: np.ndarray, pred: np.ndarray, spacing, case: str, label: str, which: str,
             score: Optional[float]) -> Overlay:
    """The axial slice where the reference (else the prediction) of ``label`` is largest."""
    r, p = (ref >= 1, pred >= 1) if label == "liver" else (ref == 2, pred == 2)
    area = r.sum(axis=(1, 2)) if r.any() else p.sum(axis=(1, 2))
    z = int(np.argmax(area)) if area.any() else image.shape[0] // 2
    return Overlay(case, label, which, score, z, image[z].astype(np.float32), r[z], p[z],
                   (float(spacing[0]), float(spacing[1])))


def _overlays(column: _Column, paths: dict[str, tuple[Path, Path]]) -> list[Overlay]:
    from deepliver.imaging.volumes import read_label, read_volume

    label = column.run.task
    scored = sorted(((c["metrics"][label]["dice"], c["case"]) for c in column.cases), key=lambda t: (-t[0], t[1]))
    picks = [("best", *scored[0])] + ([("worst", *scored[-1])] if len(scored) > 1 else [])
    out = []
    for which, score, case in picks:
        image = read_volume(paths[case][0])
        ref = sitk.GetArrayFromImage(read_label(paths[case][1]))
        pred = sitk.GetArrayFromImage(read_label(column.folder / f"{case}.nii.gz"))
        out.append(_overlay(sitk.GetArrayFromImage(image), ref, pred, image.GetSpacing(), case, label, which, score))
    return out


def compare(runs: list[str | os.PathLike], dataset: str | os.PathLike, out: str | os.PathLike,
            options: Optional[CompareOptions] = None, progress: Optional[ProgressCallback] = None) -> CompareResult:
    """Score every RUN on the chosen cases of ``dataset`` and write the report into ``out`` (module
    docstring). Progress stage ``compare``, one step per case."""
    from deepliver.imaging.volumes import read_label, read_volume, write_label
    from deepliver.inference.cascade import segment_image
    from deepliver.inference.predict import load_model
    from deepliver.metrics import evaluate_pair

    options = options or CompareOptions()
    dataset, out = Path(dataset), Path(out)
    if not runs:
        raise ConfigError("give at least one RUN folder")
    infos = [read_run(r) for r in runs]
    liver = _liver_stage(infos, options.liver_model)
    cases, how = select_cases(dataset, infos, options.cases)
    notes = list(options.notes)
    extra = [liver] if liver is not None and all(liver is not r for r in infos) else []
    _check_leaks(infos + extra, cases, options.cases, notes)
    if liver is not None and any(r.task == "tumor" for r in infos):
        notes.append(f"Liver stage of the tumor columns: {liver.bundle}.")
    paths = _dataset_cases(dataset)
    columns = [_Column(r, name, ("liver",) if r.task == "liver" else ("liver", "tumor"),
                       out / "predictions" / _slug(name)) for r, name in zip(infos, column_names(infos))]
    liver_model = load_model(liver.bundle, device=options.device) if liver is not None else None
    models = {id(c): load_model(c.run.bundle, device=options.device) for c in columns}

    if progress:
        progress("compare", 0, len(cases))
    for number, case in enumerate(cases, 1):
        image = read_volume(paths[case][0])
        reference = read_label(paths[case][1], image)
        for column in columns:
            start = time.perf_counter()
            if column.run.task == "liver":
                result = segment_image(image, models[id(column)], None, options.postprocess)
            else:
                result = segment_image(image, liver_model, models[id(column)], options.postprocess)
            column.seconds.append(time.perf_counter() - start)
            write_label(result.label, column.folder / f"{case}.nii.gz", image)
            metrics = evaluate_pair(result.label, reference, column.name, paths[case][1])
            column.cases.append({"case": case, "metrics": metrics})
        if progress:
            progress("compare", number, len(cases))

    results = []
    for column in columns:
        details = column.run.details()
        details["seconds per case"] = round(float(np.mean(column.seconds)), 2)
        if column.run.task == "tumor" and liver is not None:
            details["liver stage"] = str(liver.bundle)
        results.append(ModelResult(column.name, column.run.architecture, column.run.task, column.cases,
                                   column.labels, column.run.log, _overlays(column, paths), details,
                                   column.run.log_score))
    order = {a: i for i, a in enumerate(ARCHITECTURE_NAMES)}
    results.sort(key=lambda m: (m.task != "liver", order.get(m.architecture, len(order))))
    report = Report(options.title, str(dataset), cases, results, how, notes)
    files = write_report(report, out)
    return CompareResult(report, files, {c.name: c.folder for c in columns})
