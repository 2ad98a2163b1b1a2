"""``deepliver convert``: a dataset folder -> 2D axial slices with boxes (YOLO, Pascal VOC, COCO).

Output layout under ``OUT`` (see ARCHITECTURE.md):
``images/<split>/<case>_<z:04d>.png`` (canonical orientation, windowed uint8; ``z`` counts canonical slices
inferior -> superior), YOLO ``labels/<split>/<stem>.txt`` + ``data.yaml``, VOC
``annotations/<split>/<stem>.xml``, COCO ``coco_<split>.json``, ``splits.json``; bookkeeping in
``OUT/.convert/`` (``source.json``: the dataset converted; ``<case>.json``: one record per case).

Slices written per case: every slice with a box, plus ``round(background_ratio * positives)`` slices without
one (rounded half up), drawn by seed from the liver's z-range first, then outside it. Splits are by case,
drawn over the cases with liver: a case whose manifest counts no liver or tumor voxel is skipped and reported.
When the dataset folder has its own ``splits.json`` (train/val/test lists, as ``deepliver train`` and
``deepliver compare`` read it), its lists are the splits and ``--split`` is not used; a case it does not
list is skipped and reported, so every model of a comparison sees the same held-out cases.
The same inputs and options give byte-identical files. A rerun skips cases whose record shows the same
source sha256s, the same options and the same split, with all their files present; COCO files,
``data.yaml`` and ``splits.json`` are rebuilt from the records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from deepliver.atomic import write_json_atomic, write_text_atomic
from deepliver.dataset.check import complete_cases, cross_case_problems
from deepliver.dataset.convert_case import (blocking_problems, check_and_plan, record_path, slice_entries,
                                            write_case)
from deepliver.dataset.detection_formats import FORMATS, coco_json, data_yaml, parse_formats
from deepliver.dataset.layout import DatasetLayout
from deepliver.dataset.slices import Window
from deepliver.dataset.splits import SPLIT_NAMES, Splits, parse_ratios, read_splits_file, split_cases
from deepliver.errors import ConfigError, InputError, ProblemsError
from deepliver.labels import LIVER, TUMOR
from deepliver.progress import ProgressCallback

__all__ = ["TASKS", "ConvertOptions", "ConvertResult", "convert_dataset", "dataset_cases"]

TASKS = ("tumor", "liver")
_NO_LIVER = "no liver voxels in its label"
_NOT_LISTED = "not in any list of the dataset's splits.json"
_MANAGED = ("images", "labels", "annotations", ".convert", "data.yaml", "splits.json",
            *(f"coco_{s}.json" for s in SPLIT_NAMES))


@dataclass(frozen=True)
class ConvertOptions:
    """Options of ``convert_dataset`` (the CLI flags of the same names). Validated on construction.

    ``window`` in HU; ``size``: output slices are ``size x size`` pixels (bilinear, boxes scaled), None keeps
    the canonical slice size; ``split``: train/val/test percentages; ``workers``: processes (1 = in-process);
    ``overwrite``: first delete the previous convert outputs in ``OUT`` (required when they come from
    another dataset, or when ``OUT`` holds other files; those are left alone), then convert every case.
    """

    formats: tuple[str, ...] = FORMATS
    task: str = "tumor"
    window: Window = Window()
    size: Optional[int] = None
    split: tuple[float, float, float] = (70.0, 20.0, 10.0)
    seed: int = 0
    background_ratio: float = 0.25
    min_box_pixels: int = 1
    workers: int = 1
    overwrite: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "formats", parse_formats(self.formats))
        object.__setattr__(self, "split", parse_ratios(self.split))
        if self.task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.size is not None and self.size < 8:
            raise ConfigError(f"size must be at least 8 pixels, got {self.size}")
        if not self.background_ratio >= 0:
            raise ConfigError(f"background ratio must be >= 0, got {self.background_ratio}")
        if self.min_box_pixels < 1:
            raise ConfigError(f"min box pixels must be >= 1, got {self.min_box_pixels}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")

    def settings(self) -> dict[str, Any]:
        """The options that decide a case's files (not the split, workers or overwrite), with their hash."""
        data = {"formats": list(self.formats), "task": self.task, "window": [self.window.low, self.window.high],
                "size": self.size, "seed": self.seed, "background_ratio": self.background_ratio,
                "min_box_pixels": self.min_box_pixels}
        key = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        return {**data, "key": key}


@dataclass
class ConvertResult:
    """What ``convert_dataset`` did. ``slices`` / ``boxes`` / ``cases_per_split`` are per split name."""

    out: Path
    converted: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    cases_per_split: dict[str, int] = field(default_factory=dict)
    slices: dict[str, int] = field(default_factory=dict)
    negatives: dict[str, int] = field(default_factory=dict)
    boxes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"{len(self.converted) + len(self.reused)} case(s) in {self.out} "
                 f"({len(self.converted)} converted, {len(self.reused)} unchanged since the last run), "
                 f"{len(self.skipped)} skipped"]
        for name in SPLIT_NAMES:
            lines.append(f"  {name:<5}: {self.cases_per_split.get(name, 0)} case(s), {self.slices.get(name, 0)} "
                         f"slice(s) ({self.negatives.get(name, 0)} without a box), {self.boxes.get(name, 0)} box(es)")
        lines += [f"  skipped {case}: {reason}" for case, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def dataset_cases(dataset: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """``(case, image path, label path)`` of each case of the dataset folder, sorted by case id."""
    layout = DatasetLayout(Path(dataset))
    return [(case, layout.image(case), layout.label(case)) for case in layout.manifest_ids()]


def convert_dataset(dataset: str | os.PathLike, out: str | os.PathLike, options: ConvertOptions = ConvertOptions(),
                    progress: Optional[ProgressCallback] = None) -> ConvertResult:
    """Convert the dataset folder ``dataset`` into 2D detection data in ``out`` (see the module docstring).

    Raises ``ProblemsError`` (every dataset problem, the checks of ``deepliver check``) or ``InputError``
    (``out`` holds another dataset's outputs and ``overwrite`` is off) before writing anything.
    A case without liver voxels is skipped and listed in ``ConvertResult.skipped``.
    With ``workers > 1`` one pool of processes does both the per-case checks (each case's label is read
    once, for its check and its boxes) and the conversion.
    """
    dataset, out = Path(dataset), Path(out)
    cases, problems = complete_cases(dataset)
    settings = options.settings()
    with _Workers(min(options.workers, len(cases))) as run:
        checked = run(check_and_plan, [(str(dataset), case, settings, _read_record(out, case)) for case in cases],
                      "check", progress)
        problems += [p for c in checked for p in c["problems"]]
        problems = blocking_problems(problems + cross_case_problems(
            dataset, {case: c["manifest"] for case, c in zip(cases, checked)}))
        if problems:
            raise ProblemsError(f"missing or inconsistent dataset (run 'deepliver check {dataset}'): "
                                f"{'; '.join(problems)}", problems, dataset)
        identity = {"dataset": str(dataset.resolve()),
                    "name": json.loads((dataset / "dataset.json").read_text(encoding="utf-8")).get("name")}
        skipped = {case: _NO_LIVER for case, c in zip(cases, checked) if not _has_liver(c["manifest"])}
        usable = [case for case in cases if case not in skipped]
        if (dataset / "splits.json").is_file():       # the dataset's own lists, as training and compare use
            splits, unlisted = read_splits_file(dataset / "splits.json", usable, options.seed)
            skipped.update({case: _NOT_LISTED for case in unlisted})
        else:
            splits = split_cases(usable, options.split, options.seed)
        _prepare_out(out, identity, options.overwrite)
        result = ConvertResult(out)
        result.skipped = skipped
        plans = {case: c["plan"] for case, c in zip(cases, checked)}
        records, jobs = _reuse_or_schedule(out, DatasetLayout(dataset), plans, splits, settings, result)
        for record in run(write_case, jobs, "convert", progress):
            records[record["case"]] = record
            result.converted.append(record["case"])
    _drop_stale_records(out, set(records))
    _finish(out, records, splits, options, result)
    return result


def _reuse_or_schedule(out: Path, layout: DatasetLayout, plans: dict[str, dict], splits: Splits, settings: dict,
                       result: ConvertResult) -> tuple[dict[str, dict], list[tuple]]:
    """Records of the cases whose outputs are up to date (listed in ``result.reused``), and the
    ``write_case`` jobs of the others (their previous files removed first). A case whose label turns out to
    have no liver voxel (its manifest said otherwise) is added to ``result.skipped``."""
    records, jobs = {}, []
    for case, plan in plans.items():
        if case in result.skipped:
            continue
        if not plan["liver"]:
            result.skipped[case] = _NO_LIVER
            continue
        old, split = _read_record(out, case), splits.of(case)
        if old and _up_to_date(out, old, plan, settings, split):
            records[case] = old
            result.reused.append(case)
        else:
            _remove_files(out, old)
            jobs.append((str(out), str(layout.image(case)), plan, split, settings))
    return records, jobs


def _has_liver(manifest: dict[str, Any]) -> bool:
    """Whether the manifest counts liver or tumor voxels in the label (assumed when it does not say)."""
    labels = manifest.get("labels") or {}
    voxels = [(labels.get(name) or {}).get("voxels") for name in (LIVER.name, TUMOR.name)]
    return any(v is None for v in voxels) or sum(voxels) > 0


def _prepare_out(out: Path, identity: dict, overwrite: bool) -> None:
    """Refuse an output that is a file, overlaps the dataset, or holds other outputs (unless ``overwrite``:
    then remove the previous convert outputs, and only those); then record the dataset in source.json."""
    if out.exists() and not out.is_dir():
        raise InputError("output exists and is not a folder; give a folder path", out)
    dataset, target = Path(identity["dataset"]), out.resolve()
    if target == dataset or dataset in target.parents or target in dataset.parents:
        raise InputError(f"output folder overlaps the dataset folder {dataset}; write it elsewhere", out)
    source = out / ".convert" / "source.json"
    foreign = None
    if source.is_file():
        try:
            recorded = json.loads(source.read_text(encoding="utf-8"))
        except ValueError:
            recorded = None
        if recorded != identity:
            foreign = f"holds the outputs of another dataset ({(recorded or {}).get('dataset')})"
    elif out.is_dir() and any(out.iterdir()):
        foreign = "is not empty and holds no 'deepliver convert' outputs"
    if foreign and not overwrite:
        raise InputError(f"output folder {foreign}; choose another folder or pass --overwrite", out)
    if overwrite:
        for name in _MANAGED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    write_json_atomic(source, identity)


class _Workers:
    """``run(function, jobs, stage, progress)``: ``[function(*job) for job in jobs]`` in job order, in a pool
    of ``workers`` processes (started once, shared by every call) when ``workers > 1``, else in-process."""

    def __init__(self, workers: int) -> None:
        self._pool = ProcessPoolExecutor(max_workers=workers) if workers > 1 else None

    def __enter__(self) -> "_Workers":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)  # after a failure no new case starts

    def __call__(self, function: Callable, jobs: list[tuple], stage: str,
                 progress: Optional[ProgressCallback]) -> list:
        progress = progress if jobs else None  # no empty progress bar
        if progress:
            progress(stage, 0, len(jobs))
        if self._pool is None or len(jobs) < 2:
            results = []
            for job in jobs:
                results.append(function(*job))
                if progress:
                    progress(stage, len(results), len(jobs))
            return results
        futures = [self._pool.submit(function, *job) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if progress:
                progress(stage, done, len(jobs))
        return [f.result() for f in futures]


def _read_record(out: Path, case: str) -> Optional[dict]:
    try:
        return json.loads(record_path(out, case).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _up_to_date(out: Path, old: dict, plan: dict, settings: dict, split: str) -> bool:
    same = all(old.get(k) == plan[k] for k in ("image_sha256", "label_sha256")) \
        and old.get("settings_key") == settings["key"]
    return same and old.get("split") == split and all((out / f).is_file() for f in old.get("files", []))


def _remove_files(out: Path, record: Optional[dict]) -> None:
    for relative in (record or {}).get("files", []):
        (out / relative).unlink(missing_ok=True)


def _drop_stale_records(out: Path, keep: set[str]) -> None:
    """Remove the files and records of cases not converted now (skipped, or gone from the dataset)."""
    for path in sorted((out / ".convert").glob("*.json")):
        if path.name != "source.json" and path.stem not in keep:
            _remove_files(out, _read_record(out, path.stem))
            path.unlink()


def _finish(out: Path, records: dict, splits: Splits, options: ConvertOptions, result: ConvertResult) -> None:
    """Folders, COCO files, ``data.yaml`` and ``splits.json`` from the records; counts into ``result``."""
    for name in SPLIT_NAMES:
        for folder in ("images",) + (("labels",) if "yolo" in options.formats else ()) \
                + (("annotations",) if "voc" in options.formats else ()):
            (out / folder / name).mkdir(parents=True, exist_ok=True)
        members = [case for case in getattr(splits, name) if case in records]
        entries = [e for case in members for e in slice_entries(records[case])]
        result.cases_per_split[name] = len(members)
        result.slices[name] = len(entries)
        result.negatives[name] = sum(1 for e in entries if not e.boxes)
        result.boxes[name] = sum(len(e.boxes) for e in entries)
        coco = out / f"coco_{name}.json"
        if "coco" in options.formats:
            write_text_atomic(coco, coco_json(entries, options.task))
        else:
            coco.unlink(missing_ok=True)
    if "yolo" in options.formats:
        write_text_atomic(out / "data.yaml", data_yaml(str(out.resolve()), options.task))
    else:
        (out / "data.yaml").unlink(missing_ok=True)
    write_text_atomic(out / "splits.json", json.dumps(splits.to_dict(), sort_keys=True, indent=2) + "\n")
