"""Benchmark: ``deepliver segment`` end to end with torch and with onnxruntime, beside the forward passes.

    python benchmarks/segment.py            # 512x512x200 phantom CT, 0.8 x 0.8 x 2.5 mm, 2 threads, 3 repetitions
    python benchmarks/segment.py --quick    # 256x256x100 (same field of view, coarser voxels)

Bundles: two random-init 2D U-Nets with the training defaults (channels 16-128, strides 2-2-2, one residual
unit, 3 slices as channels, 1.5 mm in-plane, batch of 16 slices), exported to ONNX; the timing does not
depend on the weights. Each measurement is a fresh process (imports included) with 2 threads everywhere
(torch or onnxruntime, OpenMP, ITK):

- *end to end*: the cascade as ``deepliver segment`` runs it (read the .nii.gz CT -> liver model ->
  liver post-processing -> tumor model in the found liver's box + margin -> tumor post-processing -> write
  the .nii.gz label). A random-weight liver model calls most of the body "liver", which no trained model
  does and which would make post-processing and the tumor stage run on the whole volume; so the liver
  network runs in full (resampling, every forward pass: timed) and its probabilities on the model grid are
  then replaced by what a good model would have found: the phantom's true liver (resampled there) plus 300
  scattered false-positive voxels; the rest (back to the CT grid, post-processing, tumor stage) runs on
  that (``--random-liver`` keeps the random model's output: the worst case). The time this stand-in takes
  (reading and resampling the true label, about 0.5 s) is taken off the process's wall time. The table says
  how much of the volume the tumor stage's box was. *forward in run*: the time spent inside the two models'
  predictor calls (numpy in, logits out) during that run; overhead = (end to end - forward in run) / end to end.
- *forward only*: the liver model on the whole CT and the tumor model on the phantom's true liver box (a
  realistic ROI), through ``predict_volume``, timing only the predictor calls.

Peak RSS is the process's maximum resident set (``wait4``). Medians of ``--repeat`` runs, taken in turn
(round robin), so a busy machine slows both runtimes alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

THREADS = 2
BUNDLE_ARGS = {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 1, "norm": "instance",
               "dropout": 0.0, "out_channels": 2}


class TimedPredictor:
    """Wraps a predictor and adds up the seconds spent in it."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __call__(self, batch):
        t0 = time.perf_counter()
        out = self.inner(batch)
        self.seconds += time.perf_counter() - t0
        return out


# --- setup (parent process, needs torch) ----------------------------------------------------------------------
def make_inputs(root: Path, shape_xyz, spacing) -> tuple[Path, Path]:
    from deepliver.dataset.phantom import make_phantom
    from deepliver.imaging import write_label, write_volume

    phantom = make_phantom(seed=11, shape=shape_xyz, spacing=spacing, direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                           n_tumors=3)
    return write_volume(phantom.image, root / "ct.nii.gz"), write_label(phantom.label, root / "truth.nii.gz",
                                                                          phantom.image)


def make_bundle(folder: Path, task: str, seed: int) -> Path:
    import torch

    from deepliver.inference.predict import INFERENCE_DEFAULTS
    from deepliver.models.bundle import Intensity, ModelConfig, save_bundle
    from deepliver.models.onnx_export import export_onnx
    from deepliver.models.registry import build_model

    config = ModelConfig(architecture="unet", task=task, spatial_dims=2, arch_args=dict(BUNDLE_ARGS),
                         labels={"background": 0, task: 1}, in_channels=3, target_spacing=(1.5, 1.5, None),
                         patch_size=(160, 160), intensity=Intensity((-100.0, 400.0)),
                         inference={**INFERENCE_DEFAULTS, "batch_size": 16, "divisor": 8})
    torch.manual_seed(seed)
    save_bundle(folder, config, build_model(config).state_dict())
    export_onnx(folder)
    return folder


# --- workers (fresh processes) ----------------------------------------------------------------------------------
def _load(runtime: str, liver: str, tumor: str):
    from deepliver.inference.predict import load_model

    if runtime == "torch":
        import torch
        torch.set_num_threads(THREADS)
    models = [load_model(b, device="cpu", runtime=runtime, threads=THREADS) for b in (liver, tumor)]
    for m in models:
        m.predictor = TimedPredictor(m.predictor)
    return models


def worker_end_to_end(args) -> dict:
    """What ``deepliver segment`` does for one file (``segment()`` with its predictors timed)."""
    import numpy as np

    from deepliver.atomic import write_json_atomic
    from deepliver.imaging.volumes import read_volume, write_label
    from deepliver.inference.cascade import segment_image
    from deepliver.inference.predict import roi_box

    liver, tumor = _load(args.runtime, args.liver, args.tumor)
    image = read_volume(args.ct)
    oracle = {"seconds": 0.0}
    if not args.random_liver:
        _oracle_liver(image, args.truth, oracle)
    result = segment_image(image, liver, tumor)
    write_label(result.label, args.out, image)
    write_json_atomic(Path(args.out).with_suffix("").with_suffix(".json"), result.info)
    import SimpleITK as sitk
    label = sitk.GetArrayFromImage(result.label)
    box = roi_box(label > 0, image.GetSpacing(), tumor.config.crop_margin_mm)
    roi = 0.0 if box is None else float(np.prod([s.stop - s.start for s in box])) / label.size
    return {"forward_s": liver.predictor.seconds + tumor.predictor.seconds, "liver_ml": result.info["liver_ml"],
            "roi_fraction": roi, "timings": result.info["timings"], "oracle_s": oracle["seconds"]}


def _oracle_liver(image, truth_path: str, cost: dict) -> None:
    """Make the liver stage find the true liver (+ false-positive specks) after running the real network in
    full (see the module docstring): its probabilities on the model grid are replaced by the true label
    resampled there (linear), with 300 voxels set to 1 at random places. ``cost["seconds"]`` adds up the
    time this stand-in takes (reading the truth, resampling it), which ``segment`` itself never spends."""
    import numpy as np
    import SimpleITK as sitk

    from deepliver.imaging.resample import resample_to_geometry
    from deepliver.imaging.volumes import read_label
    from deepliver.inference import predict

    t0 = time.perf_counter()
    truth = sitk.Cast(read_label(truth_path, image), sitk.sitkFloat32)
    cost["seconds"] += time.perf_counter() - t0
    real = predict.model_probabilities

    def model_probabilities(image, model, *args, stage=None, **kwargs):
        out = real(image, model, *args, stage=stage, **kwargs)
        if stage != "liver":
            return out
        t1 = time.perf_counter()
        found = sitk.GetArrayFromImage(resample_to_geometry(truth, out.model_grid, is_label=False))
        rng = np.random.default_rng(0)
        found.flat[rng.integers(0, found.size, 300)] = 1.0
        out.probs = found[None].astype(out.probs.dtype)
        cost["seconds"] += time.perf_counter() - t1
        return out

    predict.model_probabilities = model_probabilities


def worker_forward(args) -> dict:
    """The two models' predictor time alone: liver on the whole CT, tumor on the true liver's box."""
    from deepliver.imaging.volumes import read_label, read_volume
    from deepliver.inference.predict import predict_volume

    liver, tumor = _load(args.runtime, args.liver, args.tumor)
    image = read_volume(args.ct)
    import SimpleITK as sitk
    truth = sitk.GetArrayFromImage(read_label(args.truth, image)) > 0
    predict_volume(image, liver, stage="liver")
    predict_volume(image, tumor, roi_mask=truth, stage="tumor")
    return {"forward_s": liver.predictor.seconds + tumor.predictor.seconds}


def run_worker(kind: str, runtime: str, paths: dict, flags: tuple = ()) -> dict:
    env = {**os.environ, **{k: str(THREADS) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                        "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")}}
    cmd = [sys.executable, __file__, "--worker", kind, "--runtime", runtime,
           *[x for k, v in paths.items() for x in (f"--{k}", str(v))], *flags]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} {runtime} failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    # the process's wall time, less the oracle liver's own cost (end to end = what `deepliver segment` spends)
    return {**result, "wall_s": wall - result.get("oracle_s", 0.0), "rss_gb": usage.ru_maxrss / 2 ** 20}


# --- main -------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="256x256x100 instead of 512x512x200")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--random-liver", action="store_true",
                        help="keep the random liver model's output (tumor stage on nearly the whole volume)")
    parser.add_argument("--worker", choices=("end_to_end", "forward"), help=argparse.SUPPRESS)
    for name in ("runtime", "ct", "truth", "liver", "tumor", "out"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (worker_end_to_end if args.worker == "end_to_end" else worker_forward)(args)
        print(json.dumps(result))
        return

    shape, spacing = ((256, 256, 100), (1.6, 1.6, 5.0)) if args.quick else ((512, 512, 200), (0.8, 0.8, 2.5))
    with tempfile.TemporaryDirectory(prefix="bench_segment_") as tmp:
        root = Path(tmp)
        ct, truth = make_inputs(root, shape, spacing)
        paths = {"ct": ct, "truth": truth, "liver": make_bundle(root / "liver", "liver", 1),
                 "tumor": make_bundle(root / "tumor", "tumor", 2)}
        runs = {(kind, rt): [] for kind in ("end_to_end", "forward") for rt in ("torch", "onnx")}
        for _ in range(args.repeat):
            for (kind, rt), results in runs.items():
                results.append(run_worker(kind, rt, {**paths, "out": root / f"label_{rt}.nii.gz"},
                                          ("--random-liver",) if args.random_liver else ()))
    report(runs, shape, spacing, args.repeat, args.random_liver)


def report(runs: dict, shape, spacing, repeat: int, random_liver: bool) -> None:
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    print(f"\nsegment, {shape[0]}x{shape[1]}x{shape[2]} phantom CT ({spacing[0]} x {spacing[1]} x {spacing[2]} mm), "
          f"2D U-Net bundles, {THREADS} threads, median of {repeat}\n")
    print("| runtime | end to end s | peak RSS GB | forward in run s | overhead | forward only s (tumor on true liver) |")
    print("|---|---|---|---|---|---|")
    e2e = {}
    for rt in ("torch", "onnx"):
        rows, fwd = runs[("end_to_end", rt)], runs[("forward", rt)]
        e2e[rt] = med(rows, "wall_s")
        overhead = statistics.median((r["wall_s"] - r["forward_s"]) / r["wall_s"] for r in rows)
        print(f"| {'onnxruntime' if rt == 'onnx' else 'torch'} | {e2e[rt]:.2f} | {max(r['rss_gb'] for r in rows):.2f} | "
              f"{med(rows, 'forward_s'):.2f} | {100 * overhead:.0f} % | {med(fwd, 'forward_s'):.2f} |")
    last = runs[("end_to_end", "onnx")][-1]
    print(f"\nonnxruntime / torch, end to end: {e2e['onnx'] / e2e['torch']:.2f}x (target <= 1.1); targets: end to end "
          f"<= 20 s, peak RSS <= 3 GB, overhead <= 25 %.")
    found = "the random liver model's 'liver'" if random_liver else "the true liver + 300 specks after the real liver stage"
    print(f"Liver stage output: {found}, {last['liver_ml']:.0f} mL after post-processing; the tumor stage ran on "
          f"{100 * last['roi_fraction']:.0f} % of the volume. Stage seconds (onnxruntime, last run): "
          f"{json.dumps(last['timings'])}")


if __name__ == "__main__":
    main()
