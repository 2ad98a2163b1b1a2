"""``deepliver <verb>``: parses arguments, calls one library function, maps errors to exit codes.

Exit codes: 0 success, 2 bad input (``InputError``), 1 internal failure. Errors print one line on stderr;
``--debug`` adds the traceback. Nothing imports this module.

Each verb is a pair ``_add_<verb>(subparsers)`` / ``_run_<verb>(args) -> int`` registered in ``VERBS``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from deepliver import __version__
from deepliver.errors import ConfigError, DeepLiverError
from deepliver.progress import PROGRESS_MODES, Reporter


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line (its default prints usage too, which is fine, but keep it short)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default=argparse.SUPPRESS,
                        help="progress display: bar on stderr (default), json lines on stdout, none")


def _reporter(args: argparse.Namespace) -> Reporter:
    return Reporter(getattr(args, "progress", "bar"))


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


# --- phantom ------------------------------------------------------------------------------------------
def _add_phantom(sub) -> None:
    p = sub.add_parser("phantom", help="write a synthetic abdominal CT cohort (DICOM or NIfTI) with labels")
    p.add_argument("out", type=Path, help="output folder; one sub-folder per case")
    p.add_argument("--cases", type=int, default=4, help="number of cases (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same voxels")
    p.add_argument("--format", choices=("dicom", "nifti"), default="nifti", help="image format (default nifti)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="voxels per axis (default 160 160 64)")
    _common(p)


def _run_phantom(args) -> int:
    from deepliver.dataset.phantom import DEFAULT_SHAPE, generate_cohort
    if args.cases < 1:
        raise ConfigError(f"--cases must be at least 1, got {args.cases}")
    reporter = _reporter(args)
    try:
        cases = generate_cohort(args.out, cases=args.cases, seed=args.seed, fmt=args.format,
                                shape=tuple(args.shape) if args.shape else DEFAULT_SHAPE, progress=reporter)
    finally:
        reporter.close()
    print(f"wrote {len(cases)} case(s) to {args.out}", file=sys.stderr)
    return 0


# --- series -------------------------------------------------------------------------------------------
def _add_series(sub) -> None:
    p = sub.add_parser("series", help="list the DICOM series in a folder (headers only)")
    p.add_argument("folder", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--series", default=None, metavar="ID",
                   help="only this series (its id from the listing, or its SeriesInstanceUID)")
    p.add_argument("--check", action="store_true",
                   help="also read each listed series as a volume and check its geometry (gaps, tilt...)")
    _common(p)


def _run_series(args) -> int:
    from deepliver.imaging import list_series
    from deepliver.imaging.dicom import read_dicom_series, skipped_summary
    series = list_series(args.folder)
    skipped = series.skipped
    if args.series is not None:
        chosen = [s for s in series if s.matches(args.series)]
        if not chosen:
            raise ConfigError(f"--series {args.series}: no such series in {args.folder}; it holds "
                              + "; ".join(s.label() for s in series))
        series = chosen
    if args.check:
        for s in series:
            read_dicom_series(args.folder, series=s.series_id)
    if skipped:  # DICOMDIRs, reports, damaged files...: one line on stderr, not an error
        print(skipped_summary(skipped), file=sys.stderr)
    rows = [s.to_dict() for s in series]
    if args.json:
        _print_json(rows)
        return 0
    header = f"{'series':<16} {'patient':<12} {'modality':<8} {'slices':>6}  {'size':<14} {'spacing (mm)':<20} description"
    print(header)
    for s in series:
        size = "x".join(str(v) for v in s.size)
        spacing = "x".join(f"{v:.3g}" for v in s.spacing)
        print(f"{s.short_id:<16} {s.patient_key[:12]:<12} {s.modality:<8} {s.num_slices:>6}  {size:<14} "
              f"{spacing:<20} {s.description}")
    return 0


# --- export --------------------------------------------------------------------------------------
def _add_export(sub) -> None:
    p = sub.add_parser("export", help="add or update cases in a dataset folder from images and label maps")
    p.add_argument("--image", type=Path, help="CT image: DICOM folder, .nii/.nii.gz, .nrrd or .mha")
    p.add_argument("--label", type=Path, help="label map on the image's grid (0 background, 1 liver, 2 tumor)")
    p.add_argument("--series", help="SeriesInstanceUID or short id when the DICOM folder holds several series")
    p.add_argument("--from", dest="source", type=Path, metavar="DIR",
                   help="export every <case>/image(.nii.gz|/) + <case>/label.nii.gz of DIR instead")
    p.add_argument("--dataset", type=Path, required=True, help="dataset folder (created when missing)")
    p.add_argument("--annotator", help="who drew or corrected the label (recorded in the manifest)")
    p.add_argument("--workers", type=int, default=1, help="processes for --from (default 1)")
    _common(p)


def _run_export(args) -> int:
    from deepliver.dataset import export_case, export_folder
    if args.source is not None:
        if args.image or args.label or args.series:
            raise ConfigError("--from exports a whole folder; drop --image, --label and --series")
        reporter = _reporter(args)
        try:
            results = export_folder(args.source, args.dataset, annotator=args.annotator, workers=args.workers,
                                    progress=reporter)
        finally:
            reporter.close()
    else:
        if args.image is None or args.label is None:
            raise ConfigError("give --image and --label (or --from DIR for a folder of cases)")
        results = [export_case(args.image, args.label, args.dataset, annotator=args.annotator,
                               series=args.series)]
    for r in results:
        print(f"{r.case_id}  liver {r.volumes_ml.get('liver', 0.0):.1f} mL  tumor "
              f"{r.volumes_ml.get('tumor', 0.0):.1f} mL  {r.lesion_count} lesion(s)  "
              f"{'new' if r.created else 'updated'}")
    return 0


# --- check ---------------------------------------------------------------------------------------
def _add_check(sub) -> None:
    p = sub.add_parser("check", help="check a dataset folder's integrity, listing every problem")
    p.add_argument("dataset", type=Path, help="dataset folder")
    p.add_argument("--json", action="store_true", help="print {dataset, cases, problems} as JSON")
    _common(p)


def _run_check(args) -> int:
    from deepliver.dataset import DatasetLayout, check_dataset
    from deepliver.errors import ProblemsError
    problems = check_dataset(args.dataset)
    cases = DatasetLayout(args.dataset).manifest_ids()
    if args.json:
        _print_json({"dataset": str(args.dataset), "cases": len(cases), "problems": problems})
    else:
        for problem in problems:
            print(problem)
    if problems:
        raise ProblemsError("dataset check failed", problems, args.dataset)
    if not args.json:
        print(f"{len(cases)} cases OK")
    return 0


# --- convert -------------------------------------------------------------------------------------
def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="cut a dataset into 2D slices with boxes (YOLO, Pascal VOC, COCO)")
    p.add_argument("dataset", type=Path, help="dataset folder (dataset.json, imagesTr, labelsTr, manifests)")
    p.add_argument("out", type=Path, help="output folder (images/, labels/, annotations/, coco_*.json ...)")
    p.add_argument("--formats", default="yolo,voc,coco", help="comma-separated: yolo, voc, coco (default all)")
    p.add_argument("--task", choices=("tumor", "liver"), default="tumor",
                   help="boxes of tumor (label 2, default) or liver (label >= 1)")
    p.add_argument("--window", default="-100,400",
                   help="intensity window LOW,HIGH in HU (default -100,400)")
    p.add_argument("--size", type=int, default=None, help="resize slices to SIZE x SIZE pixels (default: keep)")
    p.add_argument("--split", default="70,20,10", help="train,val,test percentages by case (default 70,20,10); "
                   "a dataset with its own splits.json uses its lists instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and background slices (default 0)")
    p.add_argument("--background-ratio", type=float, default=0.25,
                   help="slices without a box per slice with one, per case (default 0.25)")
    p.add_argument("--min-box-pixels", type=int, default=1,
                   help="drop components with fewer pixels (default 1: keep all)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes over cases (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="delete previous convert outputs in OUT first (needed when they come from another dataset)")
    _common(p)


def _run_convert(args) -> int:
    from deepliver.dataset.convert import ConvertOptions, convert_dataset
    from deepliver.dataset.slices import Window
    options = ConvertOptions(formats=args.formats, task=args.task, window=Window.parse(args.window),
                             size=args.size, split=args.split, seed=args.seed,
                             background_ratio=args.background_ratio, min_box_pixels=args.min_box_pixels,
                             workers=args.workers, overwrite=args.overwrite)
    reporter = _reporter(args)
    try:
        result = convert_dataset(args.dataset, args.out, options, progress=reporter)
    finally:
        reporter.close()
    print(result.summary(), file=sys.stderr if getattr(args, "progress", "bar") == "json" else sys.stdout)
    return 0


# --- train ---------------------------------------------------------------------------------------
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-Net 2D/3D, Faster R-CNN or YOLO model into a bundle",
                       description="Train a model on a dataset folder into RUN (config.json, checkpoints/, "
                                   "log.csv, model/). Multi-GPU: torchrun --nproc_per_node=K -m deepliver train ...")
    p.add_argument("dataset", type=Path, nargs="?", help="dataset folder (dataset.json, imagesTr/, labelsTr/)")
    p.add_argument("--model", choices=("unet2d", "unet3d", "fasterrcnn", "yolo"),
                   help="architecture (default: from --config, else unet2d; taken from RUN when resuming)")
    p.add_argument("--task", choices=("liver", "tumor"), help="what the model segments (default liver)")
    p.add_argument("--out", type=Path, help="RUN folder to create (or to continue with --resume)")
    p.add_argument("--config", type=Path, help="JSON or YAML config; see --write-config for every key")
    p.add_argument("--epochs", type=int, help="number of epochs (optim.epochs)")
    p.add_argument("--batch", type=int, help="batch size per process (optim.batch_size)")
    p.add_argument("--lr", type=float, help="learning rate (optim.lr)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto)")
    p.add_argument("--amp", action="store_true", default=None, help="mixed precision")
    p.add_argument("--resume", action="store_true", help="continue RUN from checkpoints/last.pt")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--workers", type=int, help="data processes (data.workers, default 2): cache building and, on a "
                   "GPU or where torch leaves CPU cores spare, the batch loader (on a CPU whose cores torch uses, "
                   "batches are made between steps)")
    p.add_argument("--val-fraction", type=float, help="validation share of the cases, no test split "
                   "(default: the 70/20/10 split of deepliver convert, or the dataset's splits.json)")
    p.add_argument("--write-config", type=Path, metavar="FILE",
                   help="write the full config (defaults + --config + flags) to FILE (.json/.yaml) and exit")
    _common(p)


def _train_overrides(args) -> dict:
    flags = {"optim.epochs": args.epochs, "optim.batch_size": args.batch, "optim.lr": args.lr,
             "device": args.device, "amp": args.amp, "seed": args.seed, "data.workers": args.workers}
    if args.val_fraction is not None:
        if not 0 < args.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
        flags["data.split"] = (100 * (1 - args.val_fraction), 100 * args.val_fraction, 0.0)
    return {k: v for k, v in flags.items() if v is not None}


def _run_train(args) -> int:
    from deepliver.train.config import config_from_dict, read_config, write_config
    from deepliver.train.run import train

    if args.config:
        config = read_config(args.config, model=args.model, task=args.task)
    else:
        config = config_from_dict({}, model=args.model, task=args.task)
    overrides = _train_overrides(args)
    if args.write_config:
        from deepliver.train.config import apply_values
        write_config(apply_values(config, overrides), args.write_config)
        print(f"wrote {args.write_config}", file=sys.stderr)
        return 0
    if args.dataset is None or args.out is None:
        raise ConfigError("DATASET and --out RUN are required (unless --write-config)")
    if args.resume:
        for flag, value in (("--model", args.model), ("--task", args.task), ("--config", args.config)):
            if value is not None:
                raise ConfigError(f"{flag} cannot be given with --resume: the run's config.json is used")
    reporter = _reporter(args)
    try:
        bundle = train(args.dataset, args.out, None if args.resume else config, resume=args.resume,
                       overrides=overrides, progress=reporter)
    finally:
        reporter.close()
    if os.environ.get("RANK", "0") == "0":        # under torchrun, rank 0 wrote it
        print(f"wrote {bundle}", file=sys.stderr)
    return 0


# --- segment -------------------------------------------------------------------------------------
def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="liver then tumor segmentation of a CT (the cascade)")
    p.add_argument("input", type=Path, help="DICOM folder, .nii.gz/.nrrd/.mha file, or a folder of them")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output file (.nii.gz, .nrrd, .seg.nrrd, .mha) or folder (folder input, dicom-seg)")
    p.add_argument("--liver-model", type=Path, required=True, help="liver model bundle folder")
    p.add_argument("--tumor-model", type=Path, default=None, help="tumor model bundle folder (optional)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx"),
                   help="inference runtime: auto (torch with a CUDA GPU, else onnxruntime when installed and the "
                        "bundles have model.onnx, else torch on CPU), torch, or onnx (onnxruntime, no torch needed)")
    p.add_argument("--format", dest="output_format", default=None,
                   choices=("nii.gz", "nii", "nrrd", "seg.nrrd", "mha", "dicom-seg"),
                   help="output format (default: from the output's extension; nii.gz for a folder)")
    p.add_argument("--series", default=None, help="SeriesInstanceUID when a DICOM folder holds several")
    p.add_argument("--shard", default=None, help="i/n: process every n-th case starting at i (cluster arrays)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the runtime (default: the runtime's)")
    _common(p)


def _run_segment(args) -> int:
    from deepliver.inference.segment import SegmentOptions, parse_shard, segment
    options = SegmentOptions(device=args.device, runtime=args.runtime, output_format=args.output_format,
                             shard=parse_shard(args.shard) if args.shard is not None else (0, 1),
                             series=args.series, threads=args.threads,
                             on_runtime=lambda choice: print(f"runtime: {choice.describe()}", file=sys.stderr))
    reporter = _reporter(args)
    try:
        outcomes = segment(args.input, args.output, args.liver_model, args.tumor_model, options, reporter)
    finally:
        reporter.close()
    for o in outcomes:
        if not o.info.get("liver_found"):
            print(f"{o.case}: no liver found; wrote an all-zero label to {o.output}", file=sys.stderr)
        else:
            print(f"{o.case}: liver {o.info['liver_ml']:.1f} mL, tumor {o.info['tumor_ml']:.1f} mL, "
                  f"{o.info['lesion_count']} lesion(s) -> {o.output}", file=sys.stderr)
    return 0


# --- bundle --------------------------------------------------------------------------------------
def _add_bundle(sub) -> None:
    p = sub.add_parser("bundle", help="model bundle tools (export-onnx)")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    e = actions.add_parser("export-onnx", help="write model.onnx into a U-Net bundle (checked against torch)",
                           description="Export a U-Net bundle's network to BUNDLE/model.onnx (dynamic batch and "
                                       "spatial axes) for `deepliver segment --runtime onnx`; refused unless "
                                       "onnxruntime and torch agree on a sample input. Needs torch and onnxruntime.")
    e.add_argument("bundle", type=Path, help="model bundle folder (model.json + weights.safetensors)")
    e.add_argument("--opset", type=int, default=None, help="ONNX opset (default: deepliver's, 17)")
    _common(e)


def _run_bundle(args) -> int:
    from deepliver.models.onnx_export import ONNX_OPSET, export_onnx
    record = export_onnx(args.bundle, opset=args.opset or ONNX_OPSET)
    print(f"wrote {args.bundle / record['file']} (opset {record['opset']}, input {record['input_shape']}, "
          f"max |onnxruntime - torch| {record['max_abs_diff']:.2g})", file=sys.stderr)
    return 0


# --- postprocess ---------------------------------------------------------------------------------
def _add_postprocess(sub) -> None:
    p = sub.add_parser(
        "postprocess", help="clean an existing label map (components, closing, holes)",
        description="Clean a label map (0 background, 1 liver, 2 tumor). Liver (every label >= 1): largest "
                    "26-connected component, closing with a ball in mm, hole filling per axial slice and in 3D. "
                    "Tumor (label 2): kept inside the dilated liver, components under a volume dropped, closing. "
                    "Writes OUT with the input's geometry and OUT's sidecar JSON (out.nii.gz -> out.json) with "
                    "the options and what each step added or removed. A radius or volume of 0 skips its step.")
    p.add_argument("label", type=Path, metavar="LABEL", help="label map (.nii.gz, .nrrd, .mha ...)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="output label file")
    p.add_argument("--reference", type=Path, default=None, metavar="IMAGE",
                   help="image the label belongs to; refuse when the geometries differ")
    p.add_argument("--no-largest-component", action="store_true",
                   help="keep every liver component (default: only the largest)")
    p.add_argument("--closing-mm", type=float, default=None, metavar="MM",
                   help="liver closing radius in mm (default 3.0)")
    p.add_argument("--no-fill-holes", action="store_true", help="no liver hole filling (2D nor 3D)")
    p.add_argument("--no-fill-holes-2d", action="store_true", help="no per-axial-slice liver hole filling")
    p.add_argument("--no-fill-holes-3d", action="store_true", help="no 3D liver hole filling")
    p.add_argument("--no-tumor-inside-liver", action="store_true",
                   help="keep tumor voxels outside the liver (default: drop them)")
    p.add_argument("--tumor-dilation-mm", type=float, default=None, metavar="MM",
                   help="how far outside the liver a tumor voxel may lie, mm (default 2.0)")
    p.add_argument("--tumor-min-mm3", type=float, default=None, metavar="MM3",
                   help="drop tumor components smaller than this volume, mm³ (default 10.0)")
    p.add_argument("--tumor-closing-mm", type=float, default=None, metavar="MM",
                   help="tumor closing radius in mm (default 1.0)")
    _common(p)


def _run_postprocess(args) -> int:
    from deepliver.imaging import read_volume
    from deepliver.postprocess import PostprocessOptions, postprocess_file, sidecar_path
    changes = {"liver_largest_component": not args.no_largest_component,
               "liver_fill_holes_2d": not (args.no_fill_holes or args.no_fill_holes_2d),
               "liver_fill_holes_3d": not (args.no_fill_holes or args.no_fill_holes_3d),
               "tumor_inside_liver": not args.no_tumor_inside_liver,
               "liver_closing_mm": args.closing_mm, "tumor_liver_dilation_mm": args.tumor_dilation_mm,
               "tumor_min_volume_mm3": args.tumor_min_mm3, "tumor_closing_mm": args.tumor_closing_mm}
    options = PostprocessOptions(**{k: v for k, v in changes.items() if v is not None})
    reference = read_volume(args.reference) if args.reference else None
    info = postprocess_file(args.label, args.output, options, reference)
    before, after = info["voxels"]["before"], info["voxels"]["after"]
    print(f"wrote {args.output}: liver {before['liver']} -> {after['liver']} voxels, tumor {before['tumor']} -> "
          f"{after['tumor']} voxels; steps in {sidecar_path(args.output)}", file=sys.stderr)
    return 0


# --- evaluate ------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="overlap, distance and lesion-wise metrics of predictions against references",
        description="Score predicted label maps against references: per case and label (liver = labels >= 1, "
                    "tumor = label 2) dice, iou, precision, recall, accuracy, specificity, hd, hd95, assd (mm) "
                    "and tumor lesion detection (IoU > 0.5 matching, by size). P and R are two files or two "
                    "folders (cases matched by file name without extension). Prints a table; exit 2 when a "
                    "case could not be scored (the others are still written).")
    p.add_argument("--pred", type=Path, required=True, metavar="P", help="predicted label file or folder")
    p.add_argument("--ref", type=Path, required=True, metavar="R", help="reference label file or folder")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="write per-case metrics, summary and definitions as JSON")
    p.add_argument("--csv", type=Path, default=None, metavar="FILE", help="write one row per case and label")
    _common(p)


def _run_evaluate(args) -> int:
    from deepliver.atomic import write_json_atomic
    from deepliver.metrics import evaluate_files, format_table, write_csv
    reporter = _reporter(args)
    try:
        result = evaluate_files(args.pred, args.ref, progress=reporter)
    finally:
        reporter.close()
    if args.json:
        write_json_atomic(args.json, result)
    if args.csv:
        write_csv(result, args.csv)
    if result["cases"]:
        print(format_table(result))
    for problem in result["problems"]:
        print(f"deepliver evaluate: problem: {problem}", file=sys.stderr)
    return 2 if result["problems"] else 0


# --- compare -------------------------------------------------------------------------------------
def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare", help="the architecture comparison table and report",
        description="Score training runs on the same cases of a dataset through the segment cascade and write "
                    "REPORT/report.md, report.html (self-contained), report.csv, cases.csv, report.json, figures/ "
                    "and predictions/. Tumor runs need a liver stage: --liver-model, else the first liver run "
                    "among the RUNs. --cases test: DATASET/splits.json's test list, else the cases no run trained "
                    "or validated on (runs that trained on a chosen case are refused).")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="deepliver train --out folders (or bundles)")
    p.add_argument("--data", type=Path, required=True, metavar="DATASET", help="dataset folder to evaluate on")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="REPORT", help="report folder")
    p.add_argument("--liver-model", type=Path, default=None, metavar="BUNDLE",
                   help="liver bundle (or liver RUN) for the tumor runs' liver stage")
    p.add_argument("--cases", choices=("test", "val", "all"), default="test",
                   help="which cases of DATASET (default test)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--title", default="Architecture comparison", help="the report's title")
    _common(p)


def _run_compare(args) -> int:
    from deepliver.compare import CompareOptions, compare
    from deepliver.report import table_cells
    from deepliver.report.tables import markdown_table
    options = CompareOptions(cases=args.cases, liver_model=args.liver_model, device=args.device, title=args.title)
    reporter = _reporter(args)
    try:
        result = compare(args.runs, args.data, args.output, options, reporter)
    finally:
        reporter.close()
    print(markdown_table(*table_cells(result.report)),
          file=sys.stderr if getattr(args, "progress", "bar") == "json" else sys.stdout)
    print(f"wrote {result.files['report.html']} ({len(result.report.cases)} case(s), "
          f"{len(result.report.models)} model(s))", file=sys.stderr)
    return 0


# --- demo ----------------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser(
        "demo", help="the whole pipeline on generated data, offline, on CPU",
        description="Phantom CTs -> dataset -> 2D slices and boxes -> train U-Net 2D (liver and tumor), U-Net 3D, "
                    "Faster R-CNN and YOLO (when ultralytics is installed) -> segment held-out DICOM phantoms of "
                    "other spacing and orientation -> evaluate -> compare. Writes DIR/report.html and "
                    "DIR/summary.json. Nothing is downloaded. About 15 minutes on 2 CPU cores (--quick: 3).")
    p.add_argument("--out", type=Path, default=Path("deepliver-demo"), metavar="DIR",
                   help="output folder: absent, empty, or an earlier demo's (default ./deepliver-demo)")
    p.add_argument("--quick", action="store_true", help="small profile: fewer phantoms and epochs (CI)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantoms and the training (default 0)")
    p.add_argument("--device", choices=("cpu", "auto", "cuda"), default="cpu", help="where to train (default cpu)")
    p.add_argument("--no-yolo", action="store_true", help="skip YOLO even when ultralytics is installed")
    _common(p)


def _run_demo(args) -> int:
    from deepliver.demo import DemoOptions, demo
    options = DemoOptions(out=args.out, quick=args.quick, seed=args.seed, device=args.device,
                          yolo=False if args.no_yolo else None)
    reporter = _reporter(args)

    def notify(message: str) -> None:
        reporter.close()
        print(f"deepliver demo: {message}", file=sys.stderr, flush=True)

    try:
        result = demo(options, reporter, notify)
    finally:
        reporter.close()
    s = result.summary
    seg = s["segment"]
    lines = [f"report: {result.report}", f"summary: {result.out / 'summary.json'}",
             f"segment (liver U-Net 2D + tumor U-Net 2D) on {len(seg['cases'])} held-out DICOM phantoms: "
             f"liver Dice {_pct(seg['liver_dice_mean'])}, tumor Dice {_pct(seg['tumor_dice_mean'])}"]
    lines += [f"  {name:<22} liver Dice {_pct(m['liver_dice_mean'])}   tumor Dice {_pct(m['tumor_dice_mean'])}"
              for name, m in s["models"].items()]
    lines += [f"  {name}: skipped ({reason})" for name, reason in s["skipped"].items()]
    lines.append(f"done in {s['seconds'] / 60:.1f} min ({s['profile']} profile)")
    print("\n".join(lines), file=sys.stderr)
    return 0


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


# --- registry -----------------------------------------------------------------------------------------
VERBS: list[tuple[str, Callable, Callable]] = [
    ("phantom", _add_phantom, _run_phantom),
    ("series", _add_series, _run_series),
    ("export", _add_export, _run_export),
    ("check", _add_check, _run_check),
    ("convert", _add_convert, _run_convert),
    ("train", _add_train, _run_train),
    ("segment", _add_segment, _run_segment),
    ("bundle", _add_bundle, _run_bundle),
    ("postprocess", _add_postprocess, _run_postprocess),
    ("evaluate", _add_evaluate, _run_evaluate),
    ("compare", _add_compare, _run_compare),
    ("demo", _add_demo, _run_demo),
]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="deepliver", description="Liver and liver-tumor segmentation from DICOM to report.")
    parser.add_argument("--version", action="version", version=f"deepliver {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="bar")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    sub.required = True
    for _, add, _ in VERBS:
        add(sub)
    return parser


_NEGATIVE_VALUE = re.compile(r"^-\d[\d.]*(,-?\d[\d.]*)*$")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--window -100,400`` -> ``--window=-100,400``: argparse takes a value starting with '-' for an
    option unless it is a plain negative number, and HU windows often start below zero."""
    out: list[str] = []
    for token in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE_VALUE.match(token):
            out[-1] = f"{out[-1]}={token}"
        else:
            out.append(token)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else list(argv)))
    run = {name: run for name, _, run in VERBS}[args.verb]
    try:
        return int(run(args) or 0)
    except DeepLiverError as e:
        if args.debug:
            traceback.print_exc()
        print(f"deepliver {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"deepliver {args.verb}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an internal failure: one line unless --debug
        if args.debug:
            traceback.print_exc()
        print(f"deepliver {args.verb}: internal error: {type(e).__name__}: {e} (run with --debug for the "
              "traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
