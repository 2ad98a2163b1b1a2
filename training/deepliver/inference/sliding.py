"""Run a predictor over a whole volume in bounded memory: batched 2D slices or a 3D sliding window.

Pure numpy (no torch), so it runs with any ``Predictor``. Arrays are ``(z, y, x)``; channel-first arrays
``(C, z, y, x)``. The 3D window follows MONAI's ``sliding_window_inference``: windows of ``patch`` voxels
start every ``int(patch * (1 - overlap))`` voxels, the last one flush with the end, and overlapping
outputs are averaged with Gaussian (sigma = 0.125 x patch) or constant weights.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Optional, Sequence

import numpy as np

from deepliver.errors import ConfigError
from deepliver.progress import ProgressCallback

__all__ = ["to_probabilities", "window_starts", "blend_weights", "predict_slices", "predict_windows"]

Predict = Callable[[np.ndarray], np.ndarray]


def to_probabilities(logits: np.ndarray) -> np.ndarray:
    """Logits ``(N, K, ...)`` -> probabilities: K = 1 sigmoid (1 channel), K = 2 the softmax foreground channel
    (1 channel), K > 2 the softmax over all K channels."""
    logits = logits.astype(np.float32, copy=False)
    if logits.shape[1] <= 2:  # sigmoid; with 2 channels softmax's p1 = sigmoid(l1 - l0): one exp, no sums
        x = np.negative(logits) if logits.shape[1] == 1 else np.subtract(logits[:, :1], logits[:, 1:2])
        with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as it should
            np.exp(x, out=x)
        x += np.float32(1.0)
        return np.reciprocal(x, out=x)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs = shifted / shifted.sum(axis=1, keepdims=True)
    return probs


def _pad_amounts(shape: Sequence[int], multiple: Sequence[int], minimum: Sequence[int]) -> list[tuple[int, int]]:
    """Symmetric padding so each size reaches ``minimum`` and is a multiple of ``multiple``."""
    pads = []
    for n, m, lo in zip(shape, multiple, minimum):
        target = max(n, lo)
        target = int(math.ceil(target / m) * m)
        before = (target - n) // 2
        pads.append((before, target - n - before))
    return pads


def predict_slices(volume: np.ndarray, predict: Predict, *, context: int = 0, batch_size: int = 16,
                   divisor: int = 1, pad_value: float = 0.0, progress: Optional[ProgressCallback] = None,
                   stage: str = "predict") -> np.ndarray:
    """Probabilities ``(K', z, y, x)`` float32 of a 2D network applied slice by slice to ``volume`` ``(z, y, x)``.

    Each input slice gets ``context`` neighbouring slices on each side as channels, ordered ``z - context``
    ... ``z + context`` (clamped at the ends), so the network sees ``2 * context + 1`` channels. Slices are
    padded (``pad_value``) to a multiple of ``divisor`` and cropped back. Memory: one batch of
    ``batch_size`` slices at a time plus the output.
    """
    if volume.ndim != 3:
        raise ConfigError(f"expected a (z, y, x) volume, got shape {volume.shape}")
    nz = volume.shape[0]
    pads = _pad_amounts(volume.shape[1:], (divisor, divisor), (1, 1))
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, volume.shape[1:]))
    channels = 2 * context + 1
    # one padded batch buffer, reused: its border keeps pad_value, each batch's slices are copied inside it
    buffer = np.full((min(batch_size, nz), channels, *(b + n + a for (b, a), n in zip(pads, volume.shape[1:]))),
                     pad_value, dtype=np.float32)
    out: Optional[np.ndarray] = None
    total = int(math.ceil(nz / batch_size))
    if progress:
        progress(stage, 0, total)
    for b, start in enumerate(range(0, nz, batch_size)):
        zs = range(start, min(nz, start + batch_size))
        for i, z in enumerate(zs):
            for c in range(channels):
                buffer[(i, c, *crop)] = volume[min(max(z + c - context, 0), nz - 1)]
        probs = to_probabilities(np.asarray(predict(buffer[:len(zs)]))[(slice(None), slice(None), *crop)])
        if out is None:
            out = np.empty((probs.shape[1], *volume.shape), dtype=np.float32)
        out[:, start:start + len(zs)] = probs.transpose(1, 0, 2, 3)
        if progress:
            progress(stage, b + 1, total)
    assert out is not None
    return out


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of ``patch`` along an axis of ``size >= patch`` voxels (MONAI's rule)."""
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be >= 0 and < 1, got {overlap}")
    if size <= patch:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = int(math.ceil((size - patch) / step)) + 1
    return sorted({min(i * step, size - patch) for i in range(count)})


def blend_weights(patch: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Weights of a window's voxels: ``"constant"`` ones, or a Gaussian centred on the window (max 1)."""
    if mode == "constant":
        return np.ones(tuple(patch), dtype=np.float32)
    if mode != "gaussian":
        raise ConfigError(f"blend mode must be 'gaussian' or 'constant', got {mode!r}")
    w = np.ones((), dtype=np.float64)
    for n in patch:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        sigma = max(sigma_scale * n, 1e-3)
        w = np.multiply.outer(w, np.exp(-0.5 * (x / sigma) ** 2))
    w = w / w.max()
    return np.maximum(w, 1e-3).astype(np.float32)   # keep every voxel's weight positive (MONAI clamps too)


def predict_windows(volume: np.ndarray, predict: Predict, patch: Sequence[int], *, overlap: float = 0.25,
                    blend: str = "gaussian", batch_size: int = 2, divisor: int = 1, pad_value: float = 0.0,
                    progress: Optional[ProgressCallback] = None, stage: str = "predict") -> np.ndarray:
    """Probabilities ``(K', z, y, x)`` float32 of a 3D network over ``volume`` ``(z, y, x)`` by sliding window.

    ``patch`` is ``(z, y, x)`` voxels (each a multiple of ``divisor``); a volume smaller than the patch on an
    axis is padded with ``pad_value``. Windows run ``batch_size`` at a time; overlaps are averaged with
    ``blend_weights(patch, blend)``.
    """
    if volume.ndim != 3 or len(patch) != 3:
        raise ConfigError(f"expected a (z, y, x) volume and a 3-value patch, got {volume.shape} and {patch}")
    patch = tuple(int(math.ceil(p / divisor) * divisor) for p in patch)
    pads = _pad_amounts(volume.shape, (1, 1, 1), patch)
    padded = np.pad(volume, pads, constant_values=pad_value).astype(np.float32, copy=False)
    starts = list(itertools.product(*(window_starts(n, p, overlap) for n, p in zip(padded.shape, patch))))
    weights = blend_weights(patch, blend)
    out: Optional[np.ndarray] = None
    norm = np.zeros(padded.shape, dtype=np.float32)
    total = int(math.ceil(len(starts) / batch_size))
    if progress:
        progress(stage, 0, total)
    for b in range(total):
        chunk = starts[b * batch_size:(b + 1) * batch_size]
        regions = [tuple(slice(s, s + p) for s, p in zip(start, patch)) for start in chunk]
        batch = np.stack([padded[r][None] for r in regions])                       # (N, 1, z, y, x)
        probs = to_probabilities(np.asarray(predict(batch)))
        if out is None:
            out = np.zeros((probs.shape[1], *padded.shape), dtype=np.float32)
        for r, p in zip(regions, probs):
            out[(slice(None), *r)] += p * weights
            norm[r] += weights
        if progress:
            progress(stage, b + 1, total)
    assert out is not None
    out /= norm
    crop = tuple(slice(b, b + n) for (b, _), n in zip(pads, volume.shape))
    return np.ascontiguousarray(out[(slice(None), *crop)])
