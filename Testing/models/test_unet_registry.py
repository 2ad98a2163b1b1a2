"""The U-Net factory and the architecture registry."""

from __future__ import annotations

import pytest
import torch

from deepliver.errors import ConfigError
from deepliver.models.bundle import ModelConfig
from deepliver.models.registry import architectures, build_model, register
from deepliver.models.unet import build_unet, divisor


@pytest.mark.parametrize("dims,shape", [(2, (3, 1, 40, 24)), (3, (2, 1, 16, 24, 8))])
def test_unet_output_matches_input_grid(dims, shape):
    net = build_unet(dims, shape[1], 2, channels=(4, 8, 16), strides=(2, 2))
    assert divisor((2, 2)) == 4
    out = net(torch.zeros(shape))
    assert tuple(out.shape) == (shape[0], 2, *shape[2:])


def test_registry_builds_unet_from_model_config_and_reports_unknown_names():
    config = ModelConfig(architecture="unet", task="tumor", spatial_dims=2, in_channels=5,
                         arch_args={"channels": [4, 8], "strides": [2], "num_res_units": 0, "out_channels": 2})
    net = build_model(config)
    assert net(torch.zeros(1, 5, 8, 8)).shape == (1, 2, 8, 8)
    assert {"unet", "fasterrcnn", "yolo"} <= set(architectures())
    with pytest.raises(ConfigError, match="unknown architecture 'vnet'; known: "):
        build_model(ModelConfig(architecture="vnet", task="liver", spatial_dims=3))
    register("later", "deepliver.models.not_written_yet:build")
    with pytest.raises(ConfigError, match="architecture 'later' is not available yet"):
        build_model(ModelConfig(architecture="later", task="liver", spatial_dims=2))


def test_bad_unet_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="one stride fewer than channels"):
        build_unet(2, 1, 2, channels=(4, 8, 16), strides=(2,))
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        build_unet(4, 1, 2)
