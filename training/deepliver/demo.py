"""``deepliver demo``: the whole pipeline on generated data, offline, on the CPU.

Stages (each reported through ``notify`` and ``progress``; nothing is downloaded):

1. **phantoms**: training phantoms on one scanner grid (NIfTI) and held-out phantoms written as DICOM
   series with other voxel sizes and flipped / oblique directions (``demo_profiles.TEST_GEOMETRIES``);
2. **export** both into dataset folders (``DIR/dataset``, ``DIR/test_dataset``);
3. **convert** the training dataset into 2D slices and tumor boxes (``DIR/detection``);
4. **train** the liver U-Net 2D (the liver stage) and the tumor models: U-Net 2D, U-Net 3D, Faster R-CNN,
   and YOLO when ``ultralytics`` is installed (``DIR/runs/<name>``);
5. **segment** the held-out DICOM series with the liver and tumor U-Net 2D bundles (``DIR/segmentations``),
6. **evaluate** them against their reference labels (``DIR/evaluation.json``);
7. **compare** every run on the held-out dataset: ``DIR/report.html`` (and report.md, report.csv ...).

``DIR/summary.json`` is the machine-readable result: the report's path, the liver and tumor Dice of the
segment stage and of every model, the stages' wall times, and what was skipped and why.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from deepliver.atomic import write_json_atomic, write_text_atomic
from deepliver.demo_profiles import PROFILES, SPLIT, TEST_GEOMETRIES, DemoProfile, RunSpec
from deepliver.errors import ConfigError
from deepliver.progress import ProgressCallback

REQUIRED_RUNS = ("liver_unet2d", "tumor_unet2d")
"""The runs ``segment`` uses: a training failure there ends the demo; any other run that fails (a diverged
loss) is left out of the comparison and named in the report's notes and ``summary.json``'s ``skipped``."""

__all__ = ["DemoOptions", "DemoResult", "demo", "MARKER"]

MARKER = ".deepliver-demo"
"""File that marks a folder as a demo output, so a later demo may replace what it wrote there."""
_OWNED = ("phantoms", "dataset", "test_dataset", "detection", "runs", "segmentations", "predictions", "figures",
          "evaluation.json", "summary.json", "report.md", "report.html", "report.csv", "cases.csv", "report.json")
Notify = Callable[[str], None]


@dataclass
class DemoOptions:
    """``out``: the demo folder (absent, empty, or an earlier demo's); ``quick``: the small profile;
    ``seed``: phantoms and training; ``device``: ``cpu`` (default), ``auto`` or ``cuda``; ``yolo``: None =
    train YOLO when ultralytics is installed, False = skip it."""

    out: Path = Path("deepliver-demo")
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    yolo: Optional[bool] = None

    @property
    def profile(self) -> DemoProfile:
        return PROFILES["quick" if self.quick else "default"]


@dataclass
class DemoResult:
    """Where the report is, and ``summary`` (the content of ``DIR/summary.json``)."""

    out: Path
    report: Path
    summary: dict[str, Any] = field(default_factory=dict)


def _prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError("the demo output must be a folder, and this is a file", out)
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise ConfigError("this folder is not empty and was not written by deepliver demo; choose another "
                              "--out (or an empty folder)", out)
        for name in _OWNED:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / MARKER, "written by deepliver demo; a later demo may replace this folder's outputs\n")


def _seeded_keys(out: Path, seed: int) -> None:
    """The demo's dataset keys (``deepliver.dataset.caseid``) come from the seed: phantoms are not patients,
    and with a random key each run got other case ids, so other splits and other models (liver Dice 92.4%
    vs 92.9% from the same seed)."""
    import hashlib

    from deepliver.dataset.caseid import KEY_FILE

    for name in ("dataset", "test_dataset"):
        (out / name).mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / name / KEY_FILE,
                          hashlib.sha256(f"deepliver demo {seed} {name}".encode()).hexdigest() + "\n")


def _write_phantoms(out: Path, profile: DemoProfile, seed: int, progress: Optional[ProgressCallback]):
    """Training phantoms (NIfTI) and held-out phantoms (DICOM); returns the held-out geometry facts."""
    from deepliver.dataset.phantom import case_seed, make_phantom, right_handed
    from deepliver.imaging.dicom_write import write_dicom_series
    from deepliver.imaging.volumes import write_label, write_volume

    total = profile.train_cases + profile.test_cases
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    for k in range(profile.train_cases):
        p = make_phantom(case_seed(seed, k), profile.train_shape, profile.train_spacing, identity)
        folder = out / "phantoms" / "train" / f"phantom_{k:03d}"
        write_volume(p.image, folder / "image.nii.gz")
        write_label(p.label, folder / "label.nii.gz", p.image)
        if progress:
            progress("phantoms", k + 1, total)
    facts = []
    for k in range(profile.test_cases):
        g = TEST_GEOMETRIES[k % len(TEST_GEOMETRIES)]
        index = 1000 + k
        p = make_phantom(case_seed(seed, index), g.shape, g.spacing, g.direction)
        folder = out / "phantoms" / "test" / f"heldout_{k:03d}"
        image, label = right_handed(p.image), right_handed(p.label)
        write_dicom_series(image, folder / "image", patient_name=f"DEMO^HELDOUT{k:03d}", patient_id=f"DEMO{k:03d}",
                           description="deepliver demo held-out phantom", uid_seed=case_seed(seed, index))
        write_label(label, folder / "label.nii.gz", image)
        facts.append({"case": folder.name, "shape": list(g.shape), "spacing_mm": list(g.spacing),
                      "direction": g.kind, "tumors": p.info["n_tumors"]})
        if progress:
            progress("phantoms", profile.train_cases + k + 1, total)
    return facts


def _train_config(spec: RunSpec, out: Path, options: DemoOptions, profile: DemoProfile):
    from deepliver.train.config import apply_values, default_config

    values = {"seed": options.seed, "device": options.device, "data.workers": 0, "data.split": SPLIT,
              "data.split_seed": options.seed, **spec.values}
    if spec.model in ("fasterrcnn", "yolo"):
        values.update({"detector.convert_dir": str(out / "detection"), "detector.image_size": profile.slice_size,
                       "detector.min_size": profile.slice_size, "detector.max_size": profile.slice_size})
    return apply_values(default_config(spec.model, spec.task), values)


def _yolo_skip_reason(options: DemoOptions) -> Optional[str]:
    if options.yolo is False:
        return "not asked for"
    if importlib.util.find_spec("ultralytics") is None:
        from deepliver.models.yolo import INSTALL_HINT
        return f"ultralytics is not installed (optional, AGPL-3.0): {INSTALL_HINT}"
    return None


def _mean_dice(cases: list[dict], label: str) -> Optional[float]:
    values = [c["metrics"][label]["dice"] for c in cases if c["metrics"][label]["dice"] is not None]
    return float(np.mean(values)) if values else None


def _segment_and_evaluate(out: Path, liver: Path, tumor: Path, device: str, progress) -> dict[str, Any]:
    """``deepliver segment`` on the held-out DICOM series, then ``evaluate`` against their labels."""
    from deepliver import __version__
    from deepliver.imaging.volumes import read_label
    from deepliver.inference.segment import SegmentOptions, segment
    from deepliver.metrics import DEFINITIONS, evaluate_pair, summarize

    outcomes = segment(out / "phantoms" / "test", out / "segmentations", liver, tumor,
                       SegmentOptions(device=device), progress)
    cases = []
    for o in outcomes:
        ref_path = out / "phantoms" / "test" / o.case / "label.nii.gz"
        cases.append({"case": o.case, "pred": str(o.output), "ref": str(ref_path),
                      "metrics": evaluate_pair(read_label(o.output), read_label(ref_path), o.output, ref_path)})
    result = {"pred": str(out / "segmentations"), "ref": str(out / "phantoms" / "test"), "cases": cases,
              "summary": summarize(cases), "problems": [], "definitions": DEFINITIONS,
              "deepliver": {"version": __version__}}
    write_json_atomic(out / "evaluation.json", result)
    return {"liver_model": str(liver), "tumor_model": str(tumor), "liver_dice_mean": _mean_dice(cases, "liver"),
            "tumor_dice_mean": _mean_dice(cases, "tumor"),
            "cases": {c["case"]: {"liver_dice": c["metrics"]["liver"]["dice"],
                                  "tumor_dice": c["metrics"]["tumor"]["dice"]} for c in cases}}


class _Clock:
    """Wall and CPU seconds (this process; YOLO's child process not counted) per stage."""

    def __init__(self, notify: Optional[Notify]):
        self.notify, self.wall, self.cpu = notify, {}, {}
        self.start = time.perf_counter()

    def stage(self, name: str, message: str) -> "_Timer":
        if self.notify:
            self.notify(f"[{time.perf_counter() - self.start:6.0f} s] {message}")
        return _Timer(self, name)


class _Timer:
    def __init__(self, clock: _Clock, name: str):
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()

    def __exit__(self, *exc) -> None:
        c = self.clock
        c.wall[self.name] = round(c.wall.get(self.name, 0.0) + time.perf_counter() - self.t0, 1)
        c.cpu[self.name] = round(c.cpu.get(self.name, 0.0) + time.process_time() - self.c0, 1)


def demo(options: Optional[DemoOptions] = None, progress: Optional[ProgressCallback] = None,
         notify: Optional[Notify] = None) -> DemoResult:
    """Run the demo (module docstring) into ``options.out``; ``notify(message)`` receives one line per stage
    (the CLI prints it). Returns the report path and the summary also written to ``DIR/summary.json``."""
    from deepliver.compare import CompareOptions, compare
    from deepliver.dataset.batch import export_folder
    from deepliver.dataset.convert import ConvertOptions, convert_dataset
    from deepliver.train.loop import TrainingError
    from deepliver.train.run import train

    options = options or DemoOptions()
    profile, out = options.profile, Path(options.out)
    _prepare_out(out)
    clock = _Clock(notify)
    if notify:
        notify(f"{profile.name} profile into {out}: about {profile.minutes} minutes on 2 CPU cores")
    with clock.stage("phantoms", f"phantoms: {profile.train_cases} for training, {profile.test_cases} held out "
                                 "(DICOM, other spacing and orientation)"):
        geometry = _write_phantoms(out, profile, options.seed, progress)
    with clock.stage("export", "export: dataset folders"):
        _seeded_keys(out, options.seed)
        export_folder(out / "phantoms" / "train", out / "dataset", annotator="deepliver demo", progress=progress)
        export_folder(out / "phantoms" / "test", out / "test_dataset", annotator="deepliver demo", progress=progress)
    with clock.stage("convert", "convert: 2D slices and tumor boxes for the detectors"):
        convert_dataset(out / "dataset", out / "detection", ConvertOptions(
            formats=("yolo", "coco"), task="tumor", size=profile.slice_size, split=SPLIT, seed=options.seed,
            background_ratio=1.0), progress)
    skipped, runs = {}, []
    yolo_reason = _yolo_skip_reason(options)
    for spec in profile.runs:
        if spec.model == "yolo" and yolo_reason:
            skipped["yolo"] = yolo_reason
            if notify:
                notify(f"skipping YOLO: {yolo_reason}")
            continue
        with clock.stage("train", f"train: {spec.model} {spec.task} ({len(runs) + 1}/{len(profile.runs)})"):
            try:
                train(out / "dataset", out / "runs" / spec.name, _train_config(spec, out, options, profile),
                      progress=progress)
            except TrainingError as e:       # a diverged comparison model: reported, the rest goes on
                if spec.name in REQUIRED_RUNS:
                    raise
                skipped[spec.name] = f"training failed: {e.message}"
                if notify:
                    notify(f"{spec.name}: training failed ({e.message}); the comparison goes on without it")
                continue
        runs.append(out / "runs" / spec.name)
    liver_run, tumor_run = (out / "runs" / name for name in REQUIRED_RUNS)
    with clock.stage("segment", "segment + evaluate: held-out DICOM series, liver U-Net 2D + tumor U-Net 2D"):
        segmented = _segment_and_evaluate(out, liver_run / "model", tumor_run / "model", options.device, progress)
    with clock.stage("compare", "compare: every model on the held-out cases"):
        result = compare(runs, out / "test_dataset", out, CompareOptions(
            cases="test", device=options.device, title=f"deepliver demo ({profile.name} profile): architecture "
            "comparison on held-out phantoms", notes=_notes(profile, geometry, skipped)), progress)
    models = {m.name: {"architecture": m.architecture, "task": m.task, "run": m.details.get("run"),
                       "liver_dice_mean": m.summary["liver"]["dice"]["mean"],
                       "tumor_dice_mean": m.summary["tumor"]["dice"]["mean"] if "tumor" in m.labels else None}
              for m in result.report.models}
    summary = {"report": str(out / "report.html"), "profile": profile.name, "seed": options.seed,
               "seconds": round(time.perf_counter() - clock.start, 1), "stages_s": clock.wall,
               "stages_cpu_s": clock.cpu,
               "train_cases": profile.train_cases, "test_cases": geometry, "segment": segmented, "models": models,
               "skipped": skipped, "threads": _threads()}
    write_json_atomic(out / "summary.json", summary)
    return DemoResult(out, out / "report.html", summary)


def _notes(profile: DemoProfile, geometry: list[dict], skipped: dict[str, str]) -> list[str]:
    train = "x".join(str(v) for v in profile.train_shape)
    spacing = " x ".join(f"{v:g}" for v in profile.train_spacing)
    notes = [f"Synthetic phantoms, not patients. Training: {profile.train_cases} phantoms of {train} voxels, "
             f"{spacing} mm, identity direction ({SPLIT[0]:g}/{SPLIT[1]:g} train/validation).",
             "Held out: " + "; ".join(f"{g['case']} {'x'.join(map(str, g['shape']))} voxels, "
                                      f"{' x '.join(f'{v:g}' for v in g['spacing_mm'])} mm, {g['direction']}"
                                      for g in geometry) + "."]
    notes += [f"{name} skipped: {reason}" for name, reason in skipped.items()]
    ran = [spec for spec in profile.runs if spec.name not in skipped and spec.model not in skipped]
    notes.append(f"Training budgets: {'; '.join(_budget(spec) for spec in ran)}. Minutes of CPU on "
                 f"{profile.train_cases} phantoms are enough for the liver, not for the phantoms' small, faint "
                 "lesions (5-40 mm across, 9-55 HU from the liver): a tumor model that finds none scores Dice 0 "
                 f"(precision n/a); on {spacing} mm voxels the median lesion (14 mm) is a few voxels wide. "
                 "The tumor columns show the pipeline working end to end, not what the architectures reach when "
                 "trained longer, on more cases, on thinner slices (benchmarks/learn.py: a 2D U-Net trained on "
                 "1.2 x 1.2 x 2.5 mm phantoms reaches a pooled tumor Dice of 0.52 on 64 of them, 0.69 on 384, "
                 "0.75 on 768).")
    return notes


def _budget(spec: RunSpec) -> str:
    """``U-Net 2D tumor: 20 epochs x 25 steps of 8``, or ``YOLO tumor: 20 epochs`` (detectors: whole epochs)."""
    from deepliver.compare_runs import ARCHITECTURE_NAMES

    values = spec.values
    name = f"{ARCHITECTURE_NAMES.get(spec.model, spec.model)} {spec.task}: {values.get('optim.epochs', '?')} epochs"
    if values.get("optim.steps_per_epoch"):
        name += f" x {values['optim.steps_per_epoch']} steps of {values.get('optim.batch_size', '?')}"
    return name


def _threads() -> int:
    try:
        import torch
        return int(torch.get_num_threads())
    except ImportError:  # pragma: no cover - torch is a dependency
        return os.cpu_count() or 1
