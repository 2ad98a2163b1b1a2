"""The U-Net: one factory for 2D and 3D networks (MONAI ``UNet``).

Input ``(N, in_channels, *spatial)`` float32, output ``(N, out_channels, *spatial)`` logits, spatial axes in
numpy order (2D: ``y, x``; 3D: ``z, y, x``). Every spatial size must be divisible by ``divisor(strides)``
(the product of the strides); inference pads to it.
"""

from __future__ import annotations

import math
from typing import Sequence

from deepliver.errors import ConfigError

__all__ = ["UNET_DEFAULTS", "build_unet", "check_unet_args", "divisor"]

UNET_DEFAULTS = {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": 1,
                 "norm": "instance", "dropout": 0.0}
"""Small and quick to train on a CPU. ``instance`` normalisation has no running statistics, so DDP ranks
end with identical state dicts and whole-slice inference does not depend on the training batch."""


def divisor(strides: Sequence[int]) -> int:
    """The number every spatial size must be a multiple of for ``strides``."""
    return int(math.prod(int(s) for s in strides))


def build_unet(spatial_dims: int, in_channels: int, out_channels: int,
               channels: Sequence[int] = UNET_DEFAULTS["channels"], strides: Sequence[int] = UNET_DEFAULTS["strides"],
               num_res_units: int = UNET_DEFAULTS["num_res_units"], norm: str = UNET_DEFAULTS["norm"],
               dropout: float = UNET_DEFAULTS["dropout"]):
    """A MONAI ``UNet`` (``torch.nn.Module``) for ``spatial_dims`` 2 or 3.

    ``channels`` are the feature maps per level; ``strides`` (one fewer than ``channels``) the
    down-sampling factors between levels; ``norm`` ``"instance"`` or ``"batch"``.
    """
    check_unet_args(spatial_dims, in_channels, out_channels, channels, strides, norm)
    from monai.networks.nets import UNet

    return UNet(spatial_dims=spatial_dims, in_channels=int(in_channels), out_channels=int(out_channels),
                channels=tuple(int(c) for c in channels), strides=tuple(int(s) for s in strides),
                num_res_units=int(num_res_units), norm=norm, dropout=float(dropout))


def check_unet_args(spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                    strides: Sequence[int], norm: str) -> None:
    """``ConfigError`` (one line) for U-Net arguments MONAI's ``UNet`` would refuse or misread."""
    if spatial_dims not in (2, 3):
        raise ConfigError(f"U-Net spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise ConfigError(f"U-Net needs at least 2 channel levels and one stride fewer than channels; got "
                          f"channels {list(channels)}, strides {list(strides)}")
    if norm not in ("instance", "batch"):
        raise ConfigError(f"U-Net norm must be 'instance' or 'batch', got {norm!r}")
    if in_channels < 1 or out_channels < 1:
        raise ConfigError(f"U-Net needs >= 1 input and output channel, got {in_channels} and {out_channels}")
