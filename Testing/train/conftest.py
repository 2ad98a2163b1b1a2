"""Shared fixtures for the training tests: a tiny phantom dataset and a tiny training config."""

from __future__ import annotations

import pytest

from deepliver.dataset.export import export_case
from deepliver.dataset.phantom import make_phantom
from deepliver.train.config import apply_values, default_config

SHAPE = (48, 48, 16)


def make_dataset(folder, seeds, n_tumors=None):
    for seed in seeds:
        p = make_phantom(seed, shape=SHAPE, n_tumors=n_tumors)
        export_case(p.image, p.label, folder)
    return folder


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Five 48x48x16 phantoms with tumors (read-only for the tests: caches go under each RUN)."""
    return make_dataset(tmp_path_factory.mktemp("dataset"), range(5), n_tumors=3)


def _tiny_config(model="unet2d", task="liver", **values):
    """Small network, few steps, no loader workers: a training epoch takes about a second."""
    config = default_config(model, task)
    base = {"unet.channels": (4, 8, 16), "unet.strides": (2, 2), "unet.num_res_units": 0, "data.workers": 0,
            "optim.steps_per_epoch": 3, "optim.batch_size": 4, "optim.epochs": 1,
            "data.target_spacing": (1.5, 1.5, None) if model == "unet2d" else (2.0, 2.0, 4.0),
            "data.patch_size": (32, 32) if model == "unet2d" else (16, 16, 8), "validation.batch_size": 8}
    return apply_values(config, {**base, **values})


@pytest.fixture
def tiny_config():
    """``tiny_config(model, task, **{"section.key": value})`` -> a small ``TrainConfig``."""
    return lambda model="unet2d", task="liver", values=None: _tiny_config(model, task, **(values or {}))


@pytest.fixture
def dataset_factory():
    """``dataset_factory(folder, seeds, n_tumors)`` writes phantoms into a new dataset folder."""
    return make_dataset


