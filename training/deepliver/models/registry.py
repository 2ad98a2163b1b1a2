"""Architecture name -> builder. A builder takes a ``ModelConfig`` and returns an untrained ``nn.Module``.

Adding an architecture is one line at the bottom of this file::

    register("fasterrcnn", "deepliver.models.fasterrcnn:build_fasterrcnn")

A target is a callable or a lazy ``"module:function"`` string, so this module imports no torch and a
missing optional dependency only matters when that architecture is built.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Union

from deepliver.errors import ConfigError
from deepliver.models.bundle import ModelConfig

__all__ = ["Builder", "register", "build_model", "build_inference_model", "architectures", "resolve"]

Builder = Callable[[ModelConfig], Any]
_BUILDERS: dict[str, Union[Builder, str]] = {}


def register(name: str, builder: Union[Builder, str]) -> None:
    """Register ``builder`` (callable or ``"module:function"``) under ``name``; a later call replaces it."""
    _BUILDERS[name] = builder


def architectures() -> tuple[str, ...]:
    """The registered architecture names, sorted."""
    return tuple(sorted(_BUILDERS))


def resolve(target: Union[Callable, str], what: str) -> Callable:
    """A callable from a callable or a ``"module:function"`` string; ``ConfigError`` when its module is absent."""
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise ConfigError(f"{what} is not available yet in this deepliver ({module_name} is missing)") from e
        raise ConfigError(f"{what} needs the package {e.name!r}, which is not installed") from e
    return getattr(module, attr)


def build_model(config: ModelConfig):
    """The untrained network for ``config.architecture``; ``ConfigError`` naming the known ones otherwise."""
    target = _BUILDERS.get(config.architecture)
    if target is None:
        raise ConfigError(f"unknown architecture {config.architecture!r}; known: {', '.join(architectures())}")
    return resolve(target, f"architecture {config.architecture!r}")(config)


def _unet_args(config: ModelConfig) -> tuple[int, dict]:
    from deepliver.models.unet import UNET_DEFAULTS

    args = {**UNET_DEFAULTS, **config.arch_args}
    return int(args.pop("out_channels", max(2, len(config.labels)))), args


def _build_unet(config: ModelConfig):
    from deepliver.models.unet import build_unet

    out_channels, args = _unet_args(config)
    return build_unet(config.spatial_dims, config.in_channels, out_channels, **args)


def build_inference_model(config: ModelConfig):
    """The network to load a bundle's weights into for inference: ``build_model``'s, except for U-Nets,
    which are rebuilt without MONAI (``deepliver.models.unet_net``: same state dict, same outputs), so that
    ``deepliver segment`` with torch does not spend seconds importing MONAI."""
    if config.architecture != "unet":
        return build_model(config)
    from deepliver.models.unet import check_unet_args
    from deepliver.models.unet_net import build_unet_net

    out_channels, args = _unet_args(config)
    check_unet_args(config.spatial_dims, config.in_channels, out_channels, args["channels"], args["strides"],
                    args["norm"])
    return build_unet_net(config.spatial_dims, config.in_channels, out_channels, **args)


register("unet", _build_unet)
register("fasterrcnn", "deepliver.models.fasterrcnn:build_fasterrcnn")
register("yolo", "deepliver.models.yolo:build_yolo")
