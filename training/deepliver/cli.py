"""``deepliver <verb>``: parses arguments, calls one library function, maps errors to exit codes.

Exit codes: 0 success, 2 bad input (``InputError``), 1 internal failure. Errors print one line on stderr;
``--debug`` adds the traceback. Nothing imports this module.

Each verb is a pair ``_add_<verb>(subparsers)`` / ``_run_<verb>(args) -> int`` registered in ``VERBS``.
"""

from __future__ import annotations

import argparse
import json
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
    _common(p)


def _run_series(args) -> int:
    from deepliver.imaging import list_series
    series = list_series(args.folder)
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
    _common(p)


def _run_export(args) -> int:
    raise DeepLiverError("'deepliver export' is not implemented yet")


# --- check ---------------------------------------------------------------------------------------
def _add_check(sub) -> None:
    p = sub.add_parser("check", help="check a dataset folder's integrity, listing every problem")
    _common(p)


def _run_check(args) -> int:
    raise DeepLiverError("'deepliver check' is not implemented yet")


# --- convert -------------------------------------------------------------------------------------
def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="cut a dataset into 2D slices with boxes (YOLO, Pascal VOC, COCO)")
    _common(p)


def _run_convert(args) -> int:
    raise DeepLiverError("'deepliver convert' is not implemented yet")


# --- train ---------------------------------------------------------------------------------------
def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a U-Net 2D/3D, Faster R-CNN or YOLO model into a bundle")
    _common(p)


def _run_train(args) -> int:
    raise DeepLiverError("'deepliver train' is not implemented yet")


# --- segment -------------------------------------------------------------------------------------
def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="liver then tumor segmentation of a CT (the cascade)")
    _common(p)


def _run_segment(args) -> int:
    raise DeepLiverError("'deepliver segment' is not implemented yet")


# --- postprocess ---------------------------------------------------------------------------------
def _add_postprocess(sub) -> None:
    p = sub.add_parser("postprocess", help="clean an existing label map (components, closing, holes)")
    _common(p)


def _run_postprocess(args) -> int:
    raise DeepLiverError("'deepliver postprocess' is not implemented yet")


# --- evaluate ------------------------------------------------------------------------------------
def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="overlap, distance and lesion-wise metrics of predictions against references")
    _common(p)


def _run_evaluate(args) -> int:
    raise DeepLiverError("'deepliver evaluate' is not implemented yet")


# --- compare -------------------------------------------------------------------------------------
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="the architecture comparison table and report")
    _common(p)


def _run_compare(args) -> int:
    raise DeepLiverError("'deepliver compare' is not implemented yet")


# --- demo ----------------------------------------------------------------------------------------
def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on generated data, offline, on CPU")
    _common(p)


def _run_demo(args) -> int:
    raise DeepLiverError("'deepliver demo' is not implemented yet")


# --- registry -----------------------------------------------------------------------------------------
VERBS: list[tuple[str, Callable, Callable]] = [
    ("phantom", _add_phantom, _run_phantom),
    ("series", _add_series, _run_series),
    ("export", _add_export, _run_export),
    ("check", _add_check, _run_check),
    ("convert", _add_convert, _run_convert),
    ("train", _add_train, _run_train),
    ("segment", _add_segment, _run_segment),
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


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
