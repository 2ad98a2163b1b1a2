"""Training samples from cached cases: 2D slices with neighbour channels, or 3D patches.

A sample is ``(image, target)``: float32 ``(C, *patch)`` and float32 ``(1, *patch)`` with 0/1 values of
the task's foreground (spatial axes in numpy order: 2D ``y, x``, 3D ``z, y, x``). With probability
``positive_fraction`` a sample is centred (with jitter) on a foreground voxel of a case that has one:
``positive_sampling`` ``voxel`` draws any foreground voxel alike (a structure is drawn in proportion to its
volume), ``component`` draws a 26-connected component of the foreground first, then one of its voxels (a
5 mm lesion is drawn as often as a 40 mm one, whose volume is 500 times larger). Otherwise a sample is drawn
uniformly (case, then position). With probability ``lesion_paste`` (2D tumour samples) a lesion of another
training case is then pasted into the sample's liver (``SampleSource.paste``). Sample ``i`` of epoch ``e`` is drawn from
``numpy.random.default_rng([seed, e, i])`` and augmented with a seed from the same generator, so the
data of a run depend only on (seed, epoch, index): workers, ranks and resuming do not change them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from deepliver.train.cache import task_mask
from deepliver.train.config import POSITIVE_SAMPLING

__all__ = ["CachedCase", "load_cached", "crop_patch", "SampleSource", "TrainingSamples", "EpochSampler",
           "epoch_loader", "loader_workers",
           "POSITIVE_SAMPLING", "COMPONENT_POINTS", "PASTE_RING"]

COMPONENT_POINTS = 1000
"""Voxels kept per foreground component (evenly spaced through it) for ``component`` sampling."""

PASTE_RING = 2
"""Pixels of the donor's liver pasted around a lesion, so its blurred edge comes with it."""
PASTE_SLACK = 6
"""Pixels added around a lesion's sample points (``component_points``, a subsample) when cutting it out."""


@dataclass
class CachedCase:
    """A cache entry opened read-only (memory-mapped): ``image`` float32 and ``label`` uint8, ``(z, y, x)``."""
    case: str
    image: np.ndarray
    label: np.ndarray
    meta: dict
    _samples: dict = field(default_factory=dict, repr=False, compare=False)
    _components: dict = field(default_factory=dict, repr=False, compare=False)

    def slices(self, task: str) -> list[int]:
        return self.meta["foreground"][task]["slices"]

    def samples(self, task: str) -> np.ndarray:
        """The task's foreground sample points ``(n, 3)`` (converted from ``meta.json`` once per task)."""
        if task not in self._samples:
            points = np.asarray(self.meta["foreground"][task]["samples"], dtype=np.int64).reshape(-1, 3)
            points.flags.writeable = False       # shared by every later draw
            self._samples[task] = points
        return self._samples[task]

    def component_points(self, task: str) -> list[np.ndarray]:
        """The task's foreground per 26-connected component: ``(n, 3)`` voxel indices each, at most
        ``COMPONENT_POINTS`` evenly spaced through the component (computed from the label once per task)."""
        if task not in self._components:
            import cc3d

            components = cc3d.connected_components(task_mask(np.asarray(self.label), task).astype(np.uint8),
                                                   connectivity=26)
            flat = np.flatnonzero(components)
            ids = components.ravel()[flat]
            order = np.argsort(ids, kind="stable")
            flat, ids = flat[order], ids[order]
            bounds = np.searchsorted(ids, np.arange(1, int(ids.max(initial=0)) + 2))
            points = []
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                chosen = flat[lo:hi]
                if len(chosen) > COMPONENT_POINTS:
                    chosen = chosen[np.linspace(0, len(chosen) - 1, COMPONENT_POINTS).astype(np.int64)]
                one = np.stack(np.unravel_index(chosen, components.shape), axis=1).astype(np.int64)
                one.flags.writeable = False
                points.append(one)
            self._components[task] = points
        return self._components[task]


def load_cached(entry: Path) -> CachedCase:
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    return CachedCase(meta["case"], np.load(entry / "image.npy", mmap_mode="r"),
                      np.load(entry / "label.npy", mmap_mode="r"), meta)


def crop_patch(array: np.ndarray, center: Sequence[int], size: Sequence[int], pad: float) -> np.ndarray:
    """The ``size`` window of ``array``'s last ``len(size)`` axes around ``center`` (kept inside the array when
    it is large enough, centred with ``pad`` padding when it is smaller)."""
    lead = array.ndim - len(size)
    src, dst = [slice(None)] * lead, [slice(None)] * lead
    for n, c, s in zip(array.shape[lead:], center, size):
        start = min(max(int(c) - s // 2, 0), n - s) if n >= s else -((s - n) // 2)
        lo, hi = max(start, 0), min(start + s, n)
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out = np.full(array.shape[:lead] + tuple(size), pad, dtype=np.float32)
    out[tuple(dst)] = array[tuple(src)]
    return out


class SampleSource:
    """Draws un-augmented samples from cached cases for one task.

    ``patch`` is numpy order (2D ``(y, x)``, 3D ``(z, y, x)``); ``context`` neighbouring slices per side are
    stacked as channels in 2D (clamped at the volume's ends). ``lesion_paste``: the probability of ``paste``
    (2D, tumour task only).
    """

    def __init__(self, cases: list[CachedCase], task: str, patch: Sequence[int], context: int = 0,
                 positive_fraction: float = 0.5, positive_sampling: str = "voxel", lesion_paste: float = 0.0):
        if positive_sampling not in POSITIVE_SAMPLING:
            raise ValueError(f"positive_sampling must be one of {', '.join(POSITIVE_SAMPLING)}, "
                             f"got {positive_sampling!r}")
        self.cases, self.task, self.patch = cases, task, tuple(int(p) for p in patch)
        self.context, self.positive_fraction = context, positive_fraction
        self.positive_sampling = positive_sampling
        self.positive = [i for i, c in enumerate(cases) if len(c.slices(task))]
        self.spatial_dims = len(self.patch)
        if lesion_paste and (task != "tumor" or self.spatial_dims != 2):
            raise ValueError("lesion_paste applies to 2D samples of the tumor task")
        self.lesion_paste = float(lesion_paste)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.positive and rng.random() < self.positive_fraction:
            case = self.cases[self.positive[rng.integers(len(self.positive))]]
            if self.positive_sampling == "component":
                components = case.component_points(self.task)
                samples = components[rng.integers(len(components))]
            else:
                samples = case.samples(self.task)
            center = samples[rng.integers(len(samples))]
            jitter = [int(rng.integers(-(p // 4), p // 4 + 1)) for p in self.patch]
            center = center.copy()
            center[-len(self.patch):] += jitter
        else:
            case = self.cases[rng.integers(len(self.cases))]
            center = np.array([rng.integers(n) for n in case.image.shape])
        image, target = self._extract(case, center)
        if self.lesion_paste and self.positive and rng.random() < self.lesion_paste:
            image, target = self.paste(case, center, image, target, rng)
        return image, target

    def paste(self, case: CachedCase, center: np.ndarray, image: np.ndarray, target: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Copy-paste augmentation (as TumorCP): a lesion of a random training case with a tumour, its
        ``2 * context + 1`` slices and ``PASTE_RING`` pixels of liver around it, randomly mirrored in-plane, goes
        at a random place of the sample's liver, shifted by the difference of the two livers' median values
        (so it keeps its contrast to the liver it lands on); only the sample's liver (not its tumours) is
        overwritten, and the pasted lesion pixels of the centre slice join ``target``. A lesion wider than the
        patch, or one that would land on no liver, leaves the sample as it was. The same lesion on other livers,
        places and noise makes a network learn what a lesion looks like rather than where each one was."""
        from scipy import ndimage

        zs = self._slices(case, center[0])
        liver = crop_patch(case.label[zs], center[1:], self.patch, 0) == 1     # (channels, y, x): liver, no tumour
        mid = self.context
        ys, xs = np.nonzero(liver[mid])
        donor = self.cases[self.positive[rng.integers(len(self.positive))]]
        components = donor.component_points(self.task)
        points = components[rng.integers(len(components))]
        dz = int(points[rng.integers(len(points)), 0])
        reach = PASTE_RING + PASTE_SLACK                # the points are a subsample: the lesion may reach further
        lo = np.maximum(points[:, 1:].min(axis=0) - reach, 0)
        hi = np.minimum(points[:, 1:].max(axis=0) + reach + 1, donor.image.shape[1:])
        size = hi - lo
        if not len(ys) or np.any(size > self.patch):
            return image, target
        box = (self._slices(donor, dz), slice(lo[0], hi[0]), slice(lo[1], hi[1]))
        values, labels = np.asarray(donor.image[box], np.float32), np.asarray(donor.label[box])
        for axis in (1, 2):
            if rng.random() < 0.5:
                values, labels = np.flip(values, axis), np.flip(labels, axis)
        lesion = task_mask(labels, self.task)
        ring = np.ones((1, 2 * PASTE_RING + 1, 2 * PASTE_RING + 1), dtype=bool)
        region = ndimage.binary_dilation(lesion, ring) & (labels >= 1)
        k = rng.integers(len(ys))
        top = int(np.clip(ys[k] - size[0] // 2, 0, self.patch[0] - size[0]))
        left = int(np.clip(xs[k] - size[1] // 2, 0, self.patch[1] - size[1]))
        window = (slice(top, top + size[0]), slice(left, left + size[1]))
        where = region & liver[(slice(None), *window)]
        donor_liver = labels == 1
        if not (where[mid] & lesion[mid]).any() or not donor_liver.any():
            return image, target
        shift = np.float32(np.median(image[liver]) - np.median(values[donor_liver]))
        image, target = image.copy(), target.copy()
        image[(slice(None), *window)][where] = values[where] + shift
        target[(0, *window)][where[mid] & lesion[mid]] = 1.0
        return image, target

    def _slices(self, case: CachedCase, z) -> np.ndarray:
        """The slice indices of a 2D sample at ``z`` (clamped into the volume): ``z`` and ``context`` on each
        side, clamped at the volume's ends."""
        nz = case.image.shape[0]
        z = int(np.clip(z, 0, nz - 1))
        return np.clip(np.arange(z - self.context, z + self.context + 1), 0, nz - 1)

    def _extract(self, case: CachedCase, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pad = float(case.meta["pad_value"])
        if self.spatial_dims == 2:
            zs = self._slices(case, center[0])
            image = crop_patch(case.image[zs], center[1:], self.patch, pad)
            label = crop_patch(case.label[zs[self.context]][None], center[1:], self.patch, 0)
        else:
            image = crop_patch(case.image[None], center, self.patch, pad)
            label = crop_patch(case.label[None], center, self.patch, 0)
        return image, task_mask(label, self.task).astype(np.float32)


class TrainingSamples:
    """A map-style dataset of ``length`` samples per epoch (``torch.utils.data.Dataset`` protocol).

    An index is ``(epoch, i)`` (what ``epoch_loader``'s sampler yields, so that worker processes can live
    through all epochs) or a plain ``i`` of the epoch ``set_epoch`` last set; items are ``(image, target)``
    torch tensors.
    """

    def __init__(self, source: SampleSource, length: int, seed: int, augmenter=None):
        self.source, self.length, self.seed, self.augmenter = source, int(length), int(seed), augmenter
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        import torch

        epoch, i = index if isinstance(index, tuple) else (self.epoch, index)
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        image, target = self.source.draw(rng)
        if self.augmenter is not None:
            out = self.augmenter({"image": image, "label": target}, int(rng.integers(2**31)))
            image, target = out["image"], out["label"]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.from_numpy(np.ascontiguousarray(target))


class EpochSampler:
    """A sampler that yields ``(epoch, index)``: ``inner``'s indices (a ``DistributedSampler``) tagged with
    the epoch ``set_epoch`` set, so the samples of an epoch do not depend on the workers' copy of the dataset."""

    def __init__(self, inner):
        self.inner, self.epoch = inner, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.inner.set_epoch(self.epoch)

    def __iter__(self):
        return ((self.epoch, int(i)) for i in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def epoch_loader(samples: TrainingSamples, batch_size: int, workers: int, *, world_size: int = 1, rank: int = 0,
                 seed: int = 0, pin_memory: bool = False):
    """The training ``DataLoader`` of ``samples``, built once per run: ``loader.sampler.set_epoch(e)`` before
    iterating epoch ``e`` (shuffled per epoch; this rank's share under DDP, torch's ``DistributedSampler``).

    Its worker processes persist across epochs: forked afresh each epoch, they gave a loader efficiency of
    0.88-0.90 where persisting ones give 0.93-0.96 (2 workers beside a step on the same 2 CPU cores,
    ``benchmarks/train_loader.py``; their first epoch, which forks them, 0.69-0.74)."""
    from torch.utils.data import DataLoader, DistributedSampler

    sampler = EpochSampler(DistributedSampler(samples, world_size, rank, shuffle=True, seed=seed, drop_last=True))
    return DataLoader(samples, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=pin_memory)


def loader_workers(configured: int, device: str, threads: Optional[int] = None, cores: Optional[int] = None) -> int:
    """The training ``DataLoader``'s worker processes for ``data.workers = configured`` on ``device``.

    On a CPU device whose cores torch's intra-op threads all use (``threads`` >= ``cores``; defaults: torch's
    thread count and the cores this process may run on), 0: the batches are made in the training process
    between steps, where worker processes could only take the step's cores: on 2 cores, batches of 16 x 256^2
    (1.5 ms of CPU per sample) gave a loader efficiency of 0.86-0.99 made in the training process, 0.93-0.96
    with 2 persistent workers (0.79-0.90 with workers forked afresh each epoch; ``benchmarks/train_loader.py``),
    without the workers' memory. Otherwise (a GPU, or spare cores) ``configured``. The samples do not depend
    on it (``TrainingSamples``)."""
    if configured <= 0 or not device.startswith("cpu"):
        return max(int(configured), 0)
    if threads is None:
        import torch
        threads = torch.get_num_threads()
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if threads >= cores else int(configured)
