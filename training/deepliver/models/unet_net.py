"""MONAI's ``UNet`` rebuilt from torch layers alone, for inference: the same module tree (so the same
state-dict keys and shapes) and the same forward pass, without importing MONAI.

``import monai`` loads every MONAI submodule (about 3 s on a laptop CPU, more than the networks' whole
forward pass on a CT with onnxruntime), and ``deepliver segment --runtime torch`` needs only the network.
Training keeps building MONAI's class (``deepliver.models.unet.build_unet``); a bundle's weights load into
this one with ``strict=True``, and ``Testing/models/test_unet_net.py`` checks both give the same outputs
for 2D/3D, 0-2 residual units, instance/batch norm and dropout. Layer by layer, as MONAI 1.x builds it:
``Convolution`` = ``conv`` then ``adn`` (norm ``N``, dropout ``D``, PReLU ``A``; ``conv`` only at the top
of the decoder), ``ResidualUnit`` = ``conv`` (``unit0``...) + ``residual`` (a convolution when the stride or
channel count changes), ``SkipConnection`` = ``cat([x, submodule(x)])``.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["build_unet_net"]


def build_unet_net(spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                   strides: Sequence[int], num_res_units: int, norm: str, dropout: float):
    """The ``torch.nn.Module`` with MONAI ``UNet``'s structure for these arguments (kernel 3, up-kernel 3,
    PReLU, bias, ``NDA`` ordering: the values ``build_unet`` leaves at MONAI's defaults)."""
    import torch
    from torch import nn

    conv_nd = {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]
    deconv_nd = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]
    norm_nd = {("instance", 2): nn.InstanceNorm2d, ("instance", 3): nn.InstanceNorm3d,
               ("batch", 2): nn.BatchNorm2d, ("batch", 3): nn.BatchNorm3d}[(norm, spatial_dims)]

    def convolution(cin: int, cout: int, stride: int, conv_only: bool = False, transposed: bool = False):
        block = nn.Sequential()
        if transposed:
            block.add_module("conv", deconv_nd(cin, cout, 3, stride=stride, padding=1, output_padding=stride - 1))
        else:
            block.add_module("conv", conv_nd(cin, cout, 3, stride=stride, padding=1))
        if not conv_only:
            adn = nn.Sequential()
            adn.add_module("N", norm_nd(cout))
            adn.add_module("D", nn.Dropout(float(dropout)))
            adn.add_module("A", nn.PReLU())
            block.add_module("adn", adn)
        return block

    class ResidualUnit(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, subunits: int, last_conv_only: bool = False):
            super().__init__()
            self.conv = nn.Sequential()
            c, s = cin, stride
            for k in range(max(1, subunits)):
                last = last_conv_only and k == subunits - 1
                self.conv.add_module(f"unit{k}", convolution(c, cout, s, conv_only=last))
                c, s = cout, 1
            self.residual = nn.Identity()
            if stride != 1 or cin != cout:
                self.residual = conv_nd(cin, cout, 3 if stride != 1 else 1, stride, 1 if stride != 1 else 0)

        def forward(self, x):
            return self.conv(x) + self.residual(x)

    class SkipConnection(nn.Module):
        def __init__(self, submodule):
            super().__init__()
            self.submodule = submodule

        def forward(self, x):
            return torch.cat([x, self.submodule(x)], dim=1)

    def down(cin: int, cout: int, stride: int):
        if num_res_units > 0:
            return ResidualUnit(cin, cout, stride, num_res_units)
        return convolution(cin, cout, stride)

    def up(cin: int, cout: int, stride: int, top: bool):
        conv = convolution(cin, cout, stride, conv_only=top and num_res_units == 0, transposed=True)
        if num_res_units > 0:
            return nn.Sequential(conv, ResidualUnit(cout, cout, 1, 1, last_conv_only=top))
        return conv

    def block(cin: int, cout: int, chans: Sequence[int], strs: Sequence[int], top: bool):
        c, s = chans[0], strs[0]
        if len(chans) > 2:
            sub, upc = block(c, c, chans[1:], strs[1:], False), 2 * c
        else:
            sub, upc = down(c, chans[1], 1), c + chans[1]
        return nn.Sequential(down(cin, c, s), SkipConnection(sub), up(upc, cout, s, top))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = block(int(in_channels), int(out_channels), [int(c) for c in channels],
                               [int(s) for s in strides], True)

        def forward(self, x):
            return self.model(x)

    return UNet()
