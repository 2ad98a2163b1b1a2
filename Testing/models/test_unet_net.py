"""The MONAI-free U-Net used for inference has MONAI UNet's state-dict keys and gives its outputs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from deepliver.models.unet import build_unet
from deepliver.models.unet_net import build_unet_net


@pytest.mark.parametrize("dims,channels,strides,res,norm,dropout", [
    (2, (16, 32, 64, 128), (2, 2, 2), 1, "instance", 0.0),        # the training default
    (2, (8, 16, 32), (2, 2), 0, "instance", 0.0),
    (2, (8, 16), (2,), 2, "batch", 0.2),
    (3, (8, 16, 32), (2, 2), 1, "instance", 0.1),
    (3, (4, 8, 16, 32), (2, 1, 2), 0, "batch", 0.0),
])
def test_same_keys_and_outputs_as_monai(dims, channels, strides, res, norm, dropout):
    torch.manual_seed(0)
    args = dict(channels=channels, strides=strides, num_res_units=res, norm=norm, dropout=dropout)
    monai_net = build_unet(dims, 3, 2, **args)
    with torch.no_grad():                                # batch norm: statistics other than the defaults
        for m in monai_net.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
            if isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0, 0.5)
    ours = build_unet_net(dims, 3, 2, **args)
    state = monai_net.state_dict()
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict(state, strict=True)
    monai_net.eval()
    ours.eval()
    x = torch.randn((2, 3) + (16,) * dims)
    with torch.no_grad():
        expected, got = monai_net(x), ours(x)
    assert got.shape == expected.shape == (2, 2) + (16,) * dims
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_it_does_not_import_monai():
    code = ("import sys; from deepliver.models.unet_net import build_unet_net; "
            "build_unet_net(2, 3, 2, (8, 16), (2,), 1, 'instance', 0.0); print('monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_bundle_loads_and_predicts_without_monai(tmp_path):
    """load_model (torch runtime) gives the MONAI network's logits for a bundle MONAI's class trained, in a
    process that never imports MONAI."""
    import numpy as np

    from deepliver.models.bundle import ModelConfig, save_bundle
    from deepliver.models.registry import build_model

    config = ModelConfig(architecture="unet", task="liver", spatial_dims=2, in_channels=3,
                         arch_args={"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1})
    torch.manual_seed(1)
    module = build_model(config).eval()
    save_bundle(tmp_path, config, module.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 20)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    code = ("import sys, numpy as np; from deepliver.inference.predict import load_model; "
            f"m = load_model({str(tmp_path)!r}); y = m.predictor(np.load({str(tmp_path / 'x.npy')!r})); "
            f"np.save({str(tmp_path / 'y.npy')!r}, y); print('monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)
