"""Checkpoints: ``RUN/checkpoints/last.pt`` (everything needed to resume) and ``best.pt`` (weights).

A checkpoint is a dict of tensors and primitive containers only (no pickled classes), written atomically
with ``torch.save`` and read with ``torch.load(weights_only=True)``. ``last.pt`` holds ``epoch`` (epochs
completed), ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``callbacks`` and ``rng`` (python, numpy,
torch, CUDA generator states); the samplers need nothing more, since their draws are a function of
(seed, epoch, index) (``deepliver.train.data``).
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from deepliver.atomic import atomic_path
from deepliver.errors import InputError

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "seed_everything", "determinism", "rng_state", "set_rng_state",
           "training_state", "restore_training_state", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = 1


class CheckpointError(InputError):
    """A checkpoint is missing, corrupted or of another format."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism(deterministic: bool = True) -> Iterator[None]:
    """Within the block, with ``deterministic``: torch's deterministic kernels (CPU: indexing backward
    without parallel atomic adds; oneDNN's deterministic mode; GPU: no cuDNN autotuning, deterministic
    cuBLAS); the previous settings come back on exit. Ops that have no deterministic version only warn.
    Together with ``MKL_CBWR`` (set by ``import deepliver``) a resumed CPU run ends bit-exact with an
    uninterrupted one; ``False`` is a few percent faster on GPU."""
    import torch

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark, torch.backends.mkldnn.deterministic)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # required by cuBLAS in this mode
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.mkldnn.deterministic = bool(deterministic)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark, torch.backends.mkldnn.deterministic = before[2:]


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch (and CUDA) random generator states as primitive containers."""
    import torch

    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, list(internal), gauss],
             "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and primitive containers) to ``path`` atomically."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; ``CheckpointError`` (one line) when it cannot be used."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no checkpoint here; start without --resume", path)
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # pickle/zip/EOF errors differ by torch version; all mean "unreadable"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"cannot read checkpoint ({reason}); it is corrupted or truncated: delete it to "
                              "start over, or copy a good one in its place", path) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a deepliver checkpoint of format {CHECKPOINT_FORMAT}", path)
    return state


def training_state(epoch: int, *, weights: dict[str, Any], optimizer, scheduler, scaler,
                   callbacks: dict[str, Any]) -> dict[str, Any]:
    """What ``last.pt`` holds after ``epoch`` epochs (``restore_training_state`` reads it back): the model
    ``weights`` (a state dict), optimizer, scheduler, AMP scaler, each callback's ``state_dict()`` by name,
    and the RNG states."""
    return {"epoch": int(epoch), "model": weights, "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "callbacks": {name: callback.state_dict() for name, callback in callbacks.items()}, "rng": rng_state()}


def restore_training_state(state: dict[str, Any], *, model, optimizer, scheduler, scaler,
                           callbacks: dict[str, Any]) -> int:
    """Load a checkpoint ``state`` (from ``load_checkpoint``) into the training objects: model, optimizer,
    scheduler, AMP scaler, each callback of ``callbacks`` (name in ``state["callbacks"]`` -> object with
    ``load_state_dict``) and the RNG states. Returns the epoch to continue from."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    for name, callback in callbacks.items():
        callback.load_state_dict(state["callbacks"][name])
    set_rng_state(state["rng"])
    return int(state["epoch"])
