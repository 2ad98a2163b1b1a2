"""Peak memory of a 3D U-Net training step at the default patch size on CPU.

Each measurement runs in a fresh process and reads its peak resident set size (``ru_maxrss``):
- baseline: imports (torch, MONAI, deepliver) and the network built, nothing run;
- inference: one no-grad forward pass of a batch;
- training step: forward + DiceCE loss + backward + Adam step (what ``deepliver train`` does per batch).
Medians of ``--repeats`` processes. The default patch and batch are ``default_config("unet3d")``'s.

    python benchmarks/train_memory.py             # 3 processes per measurement
    python benchmarks/train_memory.py --quick     # 1 process per measurement
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(mode: str, patch: list[int], batch: int) -> None:
    import torch

    from deepliver.models.registry import build_model
    from deepliver.train.config import apply_values, default_config
    from deepliver.train.loop import make_loss
    from deepliver.train.segmentation import model_config

    config = apply_values(default_config("unet3d"), {"data.patch_size": tuple(patch)})
    model = build_model(model_config(config))
    x = torch.rand(batch, 1, *patch[::-1])
    y = (torch.rand(batch, 1, *patch[::-1]) > 0.7).float()
    t0 = time.perf_counter()
    if mode == "inference":
        with torch.inference_mode():
            model.eval()(x)
    elif mode == "train":
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss = make_loss()(model(x), y)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_mb": peak_mb, "seconds": seconds}))


def measure(mode: str, patch: list[int], batch: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--patch", *map(str, patch), "--batch",
                          str(batch)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from deepliver.train.config import default_config

    default = default_config("unet3d")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--patch", type=int, nargs=3, default=list(default.data.patch_size), metavar=("X", "Y", "Z"))
    parser.add_argument("--batch", type=int, default=default.optim.batch_size)
    parser.add_argument("--child", choices=("baseline", "inference", "train"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.patch, args.batch)
    repeats = args.repeats or (1 if args.quick else 3)
    rows = {}
    for mode in ("baseline", "inference", "train"):
        runs = [measure(mode, args.patch, args.batch) for _ in range(repeats)]
        rows[mode] = (statistics.median(r["peak_mb"] for r in runs), statistics.median(r["seconds"] for r in runs))
    base = rows["baseline"][0]
    print(f"3D U-Net {default.unet.channels}, patch {'x'.join(map(str, args.patch))} (x, y, z), batch {args.batch}, "
          f"CPU fp32, medians of {repeats} process(es)\n")
    print("| measurement | peak RSS (MB) | above baseline (MB) | ratio to baseline | time (s) |\n|---|---:|---:|---:|---:|")
    names = {"baseline": "baseline (imports + network)", "inference": "inference forward",
             "train": "training step"}
    for mode, (peak, seconds) in rows.items():
        print(f"| {names[mode]} | {peak:.0f} | {peak - base:.0f} | {peak / base:.2f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
