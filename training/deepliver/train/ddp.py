"""Distributed data parallel: ``torchrun --nproc_per_node=K -m deepliver train ...``.

``setup`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins the process
group (NCCL on CUDA, gloo on CPU); without it the run is one process and every helper is a no-op. Only
rank 0 (``ctx.is_main``) writes files. ``--batch`` is per process. With ``DEEPLIVER_DDP_HASH_DIR`` set, each
rank writes ``rank<r>.sha256`` (the sha256 of its final state dict) there: a test hook to check that all
ranks end with identical weights.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepliver.atomic import write_text_atomic
from deepliver.inference.predictor import resolve_device

__all__ = ["DistContext", "setup", "teardown", "wrap", "unwrap", "broadcast", "all_mean", "barrier",
           "average_buffers", "state_hash", "write_debug_hash", "HASH_DIR_ENV"]

HASH_DIR_ENV = "DEEPLIVER_DDP_HASH_DIR"


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistContext:
    """The process's rank and device; joins the process group when started by torchrun with K > 1."""
    import torch
    import torch.distributed as dist

    device = resolve_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1:
        if device.startswith("cuda"):
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistContext(rank, world, local, device)


def teardown(ctx: DistContext) -> None:
    import torch.distributed as dist

    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model, ctx: DistContext):
    """``model`` in ``DistributedDataParallel`` when distributed, else itself."""
    if not ctx.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.local_rank] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model):
    return getattr(model, "module", model)


def broadcast(value: Any, ctx: DistContext) -> Any:
    """Rank 0's ``value`` on every rank (any picklable object)."""
    if not ctx.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_mean(value: float, ctx: DistContext) -> float:
    """The mean of ``value`` over ranks."""
    if not ctx.distributed:
        return float(value)
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        import torch.distributed as dist

        dist.barrier()


def average_buffers(model, ctx: DistContext) -> None:
    """Replace every floating-point buffer of ``model`` (batch-norm running means and variances) by its mean
    over ranks. DDP keeps the parameters equal, but each rank's last forward pass updates its running
    statistics with its own batch; call this at the end of an epoch so that every rank (and rank 0's
    checkpoint) holds the same, better estimated, statistics."""
    if not ctx.distributed:
        return
    import torch
    import torch.distributed as dist

    with torch.no_grad():
        for buffer in unwrap(model).buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer)
                buffer.div_(ctx.world_size)


def state_hash(state_dict: dict) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict's tensors (sorted by name)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_debug_hash(model, ctx: DistContext) -> None:
    """With ``DEEPLIVER_DDP_HASH_DIR`` set: write this rank's weights hash there (test hook)."""
    folder = os.environ.get(HASH_DIR_ENV)
    if folder:
        write_text_atomic(Path(folder) / f"rank{ctx.rank}.sha256", state_hash(unwrap(model).state_dict()) + "\n")
