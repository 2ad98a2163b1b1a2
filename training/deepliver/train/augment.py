"""Random augmentation, seeded per sample: parameters drawn with numpy, resampling by MONAI's ``AffineTransform``.

Keys ``image`` ``(C, *spatial)`` float32 and ``label`` ``(1, *spatial)`` float32, spatial in numpy order
(2D ``y, x``; 3D ``z, y, x``). With probability ``prob`` one affine resampling does rotation (in the axial
``y, x`` plane, up to ``rotate_deg``, about the patch centre) and zoom (``1 +- zoom`` per axis): the image
and the label resampled together, bilinear with border padding (a structure cut by the patch edge goes on
beyond it, as the image does), the label then thresholded at 0.5. With probability ``prob`` the contrast changes by
``1 +- contrast`` around the image's mean; each axis of ``flip_axes`` flips with ``flip_prob``.

``Augmenter(sample, seed)`` is deterministic in ``seed`` (``draw(seed)`` gives the parameters, ``apply``
uses them), so a sample's augmentation does not depend on which worker draws it. The resampling is one
``monai.networks.layers.AffineTransform`` call on plain tensors (scipy's ``affine_transform`` convention:
the matrix maps output to input indices). MONAI's dictionary transforms (``RandAffined`` +
``RandScaleIntensityFixedMeand``) did the same with about 10 ms of bookkeeping per 256^2 sample around a
1 ms resampling, CPU time that on a 2-core machine the data workers take from the training step
(``benchmarks/train_loader.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deepliver.errors import ConfigError
from deepliver.train.config import AugmentSection

__all__ = ["Augmenter", "AugmentParams", "AXES", "affine_matrix"]

AXES = {2: {"y": 0, "x": 1}, 3: {"z": 0, "y": 1, "x": 2}}
"""Axis names -> spatial axis index (numpy order) for 2D and 3D samples."""


@dataclass(frozen=True)
class AugmentParams:
    """One sample's draw: ``angle`` (radians, in the ``y, x`` plane) and ``zoom`` (per spatial axis, numpy
    order; > 1 enlarges) when ``affine``; ``contrast`` factor (1 = unchanged); ``flips`` (spatial axes)."""
    affine: bool
    angle: float
    zoom: tuple
    contrast: float
    flips: tuple


def affine_matrix(params: AugmentParams, shape) -> np.ndarray:
    """The ``(d+1, d+1)`` homogeneous matrix mapping output indices (numpy order) of a patch of spatial
    ``shape`` to input indices: rotation by ``angle`` in the last two axes and zoom, about the patch centre
    ``(n - 1) / 2`` (scipy's ``affine_transform`` with ``offset = centre - A @ centre``)."""
    d = len(shape)
    a = np.eye(d)
    c, s = math.cos(params.angle), math.sin(params.angle)
    a[d - 2:, d - 2:] = [[c, -s], [s, c]]
    a = a @ np.diag(1.0 / np.asarray(params.zoom, dtype=float))
    centre = (np.asarray(shape, dtype=float) - 1) / 2
    m = np.eye(d + 1)
    m[:d, :d], m[:d, d] = a, centre - a @ centre
    return m


class Augmenter:
    """Callable ``(sample: dict, seed: int) -> dict`` applying the configured random transforms."""

    def __init__(self, options: AugmentSection, spatial_dims: int):
        axes = AXES[spatial_dims]
        unknown = [a for a in options.flip_axes if a not in ("x", "y", "z")]
        if unknown:
            raise ConfigError(f"augment.flip_axes accepts x, y, z; got {unknown}")
        self.options, self.spatial_dims, self.enabled = options, spatial_dims, options.enabled
        self.flip_axes = tuple(axes[a] for a in options.flip_axes if a in axes)
        self._layer = None

    def draw(self, seed: int) -> AugmentParams:
        """The parameters for ``seed`` (every random number is drawn, whether used or not, so that one option
        changing leaves the others' draws alone)."""
        o, rng = self.options, np.random.default_rng(int(seed) % (2**32))
        affine = bool(rng.random() < o.prob)
        angle = float(rng.uniform(-1, 1)) * math.radians(o.rotate_deg)
        zoom = tuple(float(z) for z in 1.0 + rng.uniform(-1, 1, self.spatial_dims) * o.zoom)
        contrast = 1.0 + float(rng.uniform(-1, 1)) * o.contrast if rng.random() < o.prob else 1.0
        flips = tuple(a for a, u in zip(self.flip_axes, rng.random(len(self.flip_axes))) if u < o.flip_prob)
        return AugmentParams(affine, angle, zoom, contrast, flips)

    def apply(self, sample: dict, params: AugmentParams) -> dict:
        """``sample`` with ``params`` applied: float32 arrays, new ones for whatever changed (the caller's
        arrays are never written to)."""
        image = np.asarray(sample["image"], dtype=np.float32)
        label = np.asarray(sample["label"], dtype=np.float32)
        if params.affine and (params.angle != 0 or any(z != 1 for z in params.zoom)):
            image, label = self._resample(image, label, affine_matrix(params, image.shape[1:]))
        if params.contrast != 1.0:
            mean = np.float32(image.mean(dtype=np.float64))
            image = image - mean                                   # a new array: the caller's stays as it was
            image *= np.float32(params.contrast)
            image += mean
        for axis in params.flips:
            image, label = np.flip(image, axis + 1), np.flip(label, axis + 1)
        return {**sample, "image": np.ascontiguousarray(image), "label": np.ascontiguousarray(label)}

    def _resample(self, image: np.ndarray, label: np.ndarray, matrix: np.ndarray):
        import torch
        from monai.networks.layers import AffineTransform

        if self._layer is None:
            # index coordinates [0, n-1] <-> grid_sample's [-1, 1] with align_corners on both sides (MONAI's
            # zero_centered option normalises by n or n - 1 against grid_sample's n - 1 or n: a 1/n zoom error)
            self._layer = AffineTransform(mode="bilinear", padding_mode="border", normalized=False,
                                          reverse_indexing=True, zero_centered=False, align_corners=True)
        both = torch.from_numpy(np.concatenate([image, label]))[None]
        with torch.no_grad():
            out = self._layer(both, torch.as_tensor(matrix, dtype=torch.float32))[0].numpy()
        return out[:-1], (out[-1:] >= 0.5).astype(np.float32)

    def __call__(self, sample: dict, seed: int) -> dict:
        if not self.enabled:
            return sample
        return self.apply(sample, self.draw(seed))
