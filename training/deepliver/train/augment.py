"""Random augmentation with MONAI dictionary transforms, seeded per sample.

Keys ``image`` ``(C, *spatial)`` float32 and ``label`` ``(1, *spatial)`` float32, spatial in numpy order
(2D ``y, x``; 3D ``z, y, x``). One ``RandAffined`` does rotation (in the axial ``y, x`` plane, up to
``rotate_deg``) and zoom (``1 +- zoom`` per axis) in a single resampling (bilinear image with border
padding, nearest label with zeros); ``RandScaleIntensityFixedMeand`` changes contrast by ``1 +- contrast``
around the mean; ``RandFlipd`` flips along each of ``flip_axes``. ``Augmenter(sample, seed)`` is
deterministic in ``seed``, so a sample's augmentation does not depend on which worker draws it.
"""

from __future__ import annotations

import math

import numpy as np

from deepliver.errors import ConfigError
from deepliver.train.config import AugmentSection

__all__ = ["Augmenter", "AXES"]

AXES = {2: {"y": 0, "x": 1}, 3: {"z": 0, "y": 1, "x": 2}}
"""Axis names -> spatial axis index (numpy order) for 2D and 3D samples."""


class Augmenter:
    """Callable ``(sample: dict, seed: int) -> dict`` applying the configured random transforms."""

    def __init__(self, options: AugmentSection, spatial_dims: int):
        from monai.transforms import Compose, RandAffined, RandFlipd, RandScaleIntensityFixedMeand

        axes = AXES[spatial_dims]
        unknown = [a for a in options.flip_axes if a not in ("x", "y", "z")]
        if unknown:
            raise ConfigError(f"augment.flip_axes accepts x, y, z; got {unknown}")
        angle = math.radians(options.rotate_deg)
        rotate = (angle,) if spatial_dims == 2 else (angle, 0.0, 0.0)   # 3D: about z, i.e. in the y-x plane
        transforms = [
            RandAffined(keys=("image", "label"), prob=options.prob, rotate_range=rotate,
                        scale_range=(options.zoom,) * spatial_dims, mode=("bilinear", "nearest"),
                        padding_mode=("border", "zeros")),
            RandScaleIntensityFixedMeand(keys="image", factors=options.contrast, prob=options.prob),
        ]
        transforms += [RandFlipd(keys=("image", "label"), prob=options.flip_prob, spatial_axis=axes[a])
                       for a in options.flip_axes if a in axes]
        self.compose = Compose(transforms)
        self.enabled = options.enabled

    def __call__(self, sample: dict, seed: int) -> dict:
        if not self.enabled:
            return sample
        self.compose.set_random_state(seed=int(seed) % (2**32))
        out = self.compose(sample)
        return {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
                for k, v in out.items()}
