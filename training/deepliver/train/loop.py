"""One training epoch: forward, Dice + cross-entropy loss, backward, step; AMP optional.

Stops with ``TrainingError`` on a non-finite loss and ``ResourceError`` (saying what to lower) when memory
runs out. Progress goes to ``progress(stage, done, total)`` once per step (the CLI shows a tqdm bar).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from deepliver.errors import DeepLiverError, InputError
from deepliver.progress import ProgressCallback

__all__ = ["TrainingError", "ResourceError", "StepOptions", "make_loss", "train_epoch", "is_out_of_memory"]


class TrainingError(DeepLiverError):
    """Training cannot go on (e.g. the loss became NaN or infinite)."""


class ResourceError(InputError):
    """Not enough memory for the requested batch / patch size."""


@dataclass
class StepOptions:
    """``device`` a torch device string; ``amp``: autocast (float16 + GradScaler on CUDA, bfloat16 on CPU)."""
    device: str = "cpu"
    amp: bool = False
    grad_clip: float = 0.0
    describe: str = ""      # e.g. "batch 16, patch 160x160": named in the out-of-memory message


def make_loss():
    """MONAI ``DiceCELoss`` for a softmax network and an integer target ``(N, 1, ...)``, with the Dice term
    over the whole batch (``batch=True``, as nnU-Net does): patches without foreground do not each add a
    Dice of 0 or 1, which learns small structures faster (measured on phantoms: validation Dice 0.34 vs 0.07
    after 15 steps, together with lr 3e-3 instead of 1e-3)."""
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error).lower()
    return isinstance(error, (RuntimeError, MemoryError)) and (
        "out of memory" in text or "can't allocate memory" in text or isinstance(error, MemoryError))


def train_epoch(model, loader, optimizer, loss_fn, scaler, options: StepOptions, *, stage: str = "train",
                progress: Optional[ProgressCallback] = None) -> float:
    """Train ``model`` on every batch of ``loader`` once; returns the mean loss of the epoch."""
    import torch

    model.train()
    device_type = "cuda" if options.device.startswith("cuda") else "cpu"
    amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    total, count, n = 0.0, 0, len(loader)
    if progress:
        progress(stage, 0, n)
    for step, (image, target) in enumerate(loader, 1):
        try:
            image = image.to(options.device, non_blocking=True)
            target = target.to(options.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type, dtype=amp_dtype, enabled=options.amp):
                loss = loss_fn(model(image), target)
            value = float(loss.detach())
            if not math.isfinite(value):
                lr = optimizer.param_groups[0]["lr"]
                raise TrainingError(f"the loss became {value} at {stage} step {step}/{n}; lower --lr (now {lr:g})"
                                    f"{' or drop --amp' if options.amp else ''}, then --resume from the last "
                                    "good checkpoint")
            scaler.scale(loss).backward()
            if options.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), options.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        except (RuntimeError, MemoryError) as e:
            if is_out_of_memory(e):
                raise ResourceError(f"out of memory on {options.device} ({options.describe}): lower --batch or "
                                    "data.patch_size in the config" + ("" if options.amp else ", or add --amp on a GPU")
                                    ) from e
            raise
        total += value
        count += 1
        if progress:
            progress(stage, step, n)
    return total / max(count, 1)
