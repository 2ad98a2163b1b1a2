"""Does the data pipeline keep up? Model-only step time vs real step time with the loader, same run.

Real: one epoch of ``--steps`` steps exactly as ``deepliver train`` runs it: ``epoch_loader``'s
``DataLoader`` over ``TrainingSamples`` (cached, memory-mapped cases -> 2D slices with neighbour channels ->
augmentation, one MONAI ``AffineTransform``) with ``--workers`` processes, which persist across epochs as in
``train``, each batch moved to the device and trained on (Adam + DiceCE); the first epoch, which starts the
workers, is reported on its own row, the others are the ``--repeats``.
Model only (the baseline): the same number of steps on one batch already in memory. Loader efficiency =
model-only time / real time (1.0: the loader costs nothing). Real, in-process: the same epoch with the
batches made in the training process between steps (``num_workers=0``, what ``deepliver train`` does on a
CPU whose cores torch's threads all use, ``deepliver.train.data.loader_workers``). Medians of ``--repeats``
(default 3), alternated. Data only: the loader alone, batches per second.

Target (issue 5): efficiency >= 0.9 for 2D at batch 16 x 256^2 on 2 workers. On a CPU the workers compete
with the training step for the same cores, so read CPU figures as a lower bound; the target is for GPUs.

    python benchmarks/train_loader.py                # batch 16 x 256^2, phantoms 256x256x48
    python benchmarks/train_loader.py --quick        # batch 8 x 128^2, phantoms 128x128x24
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.inference.predictor import resolve_device
from deepliver.models.bundle import Intensity
from deepliver.models.registry import build_model
from deepliver.train.augment import Augmenter
from deepliver.train.cache import Preprocessing, build_cache, list_cases
from deepliver.train.config import apply_values, default_config
from deepliver.train.data import SampleSource, TrainingSamples, epoch_loader, load_cached
from deepliver.train.loop import StepOptions, make_loss, train_epoch
from deepliver.train.segmentation import model_config


def setup(root: Path, cases: int, shape, patch: int, batch: int, steps: int):
    for seed in range(cases):
        p = make_phantom(seed, shape=shape)
        export_case(p.image, p.label, root / "dataset")
    config = apply_values(default_config("unet2d"), {"data.target_spacing": (None, None, None),
                                                    "data.patch_size": (patch, patch), "optim.batch_size": batch})
    prep = Preprocessing((None, None, None), Intensity(), "liver", 10.0)
    entries = build_cache(list_cases(root / "dataset"), prep, root / "cache", workers=2)
    source = SampleSource([load_cached(e) for e in entries.values()], "liver", (patch, patch), context=1)
    samples = TrainingSamples(source, steps * batch, seed=0, augmenter=Augmenter(config.augment, 2))
    return config, samples


def timed_epoch(model, batches, optimizer, loss_fn, options) -> float:
    t0 = time.perf_counter()
    train_epoch(model, batches, optimizer, loss_fn, torch.amp.GradScaler("cuda", enabled=False), options)
    if options.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, help="steps per epoch (default 50, quick 10)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    patch, batch, shape, cases = (128, 8, (128, 128, 24), 4) if args.quick else (256, 16, (256, 256, 48), 8)
    steps = args.steps or (10 if args.quick else 50)
    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp(prefix="deepliver-loader-"))
    config, samples = setup(root, cases, shape, patch, batch, steps)
    model = build_model(model_config(config)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn, options = make_loss(), StepOptions(device, args.amp)
    fixed = next(iter(DataLoader(samples, batch_size=batch)))
    fixed = (fixed[0].to(device), fixed[1].to(device))
    timed_epoch(model, [fixed] * 2, optimizer, loss_fn, options)                       # warm-up
    loader = epoch_loader(samples, batch, args.workers, pin_memory=device.startswith("cuda"))
    loader.sampler.set_epoch(0)
    first = timed_epoch(model, loader, optimizer, loss_fn, options)      # starts the workers, as train's first epoch
    own = epoch_loader(samples, batch, 0)                                 # the batches made in this process
    model_only, real, in_process, data_only = [], [], [], []
    for r in range(1, args.repeats + 1):
        loader.sampler.set_epoch(r)
        own.sampler.set_epoch(r)
        model_only.append(timed_epoch(model, [fixed] * steps, optimizer, loss_fn, options))
        real.append(timed_epoch(model, loader, optimizer, loss_fn, options))
        if args.workers:
            in_process.append(timed_epoch(model, own, optimizer, loss_fn, options))
        t0 = time.perf_counter()
        for _ in loader:
            pass
        data_only.append(time.perf_counter() - t0)
    m, rr, d = (statistics.median(v) for v in (model_only, real, data_only))
    print(f"device {device}, batch {batch} x {patch}^2 x 3 channels, {steps} steps/epoch, {args.workers} workers, "
          f"torch threads {torch.get_num_threads()}, medians of {args.repeats}\n")
    print("| measurement | s/epoch | ms/step | slices/s | ratio |\n|---|---:|---:|---:|---:|")
    print(f"| model only (baseline) | {m:.2f} | {1000 * m / steps:.0f} | {steps * batch / m:.0f} | 1.00 |")
    print(f"| real (loader + model) | {rr:.2f} | {1000 * rr / steps:.0f} | {steps * batch / rr:.0f} | "
          f"{m / rr:.2f} efficiency (target >= 0.9) |")
    print(f"| real, first epoch (starts the workers) | {first:.2f} | {1000 * first / steps:.0f} | "
          f"{steps * batch / first:.0f} | {m / first:.2f} |")
    if in_process:
        p = statistics.median(in_process)
        print(f"| real, in-process loader (0 workers) | {p:.2f} | {1000 * p / steps:.0f} | {steps * batch / p:.0f} | "
              f"{m / p:.2f} efficiency |")
    print(f"| data only (loader) | {d:.2f} | {1000 * d / steps:.0f} | {steps * batch / d:.0f} | {m / d:.2f} |")
    if device.startswith("cuda"):
        print(f"\npeak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
