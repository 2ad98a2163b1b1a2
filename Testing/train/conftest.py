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


# Records and refuses every non-loopback connection and DNS lookup of a child process that imports it as
# its sitecustomize (same text as Testing/models/test_yolo.py's GUARD).
GUARD = '''
import os, socket
_log = os.environ["NETGUARD_LOG"]
def _local(host):
    return host in (None, "", "localhost", "::1") or str(host).startswith("127.")
def _refuse(what):
    with open(_log, "a") as f:
        f.write(what + "\\n")
    raise OSError("network blocked by the test: " + what)
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if isinstance(address, tuple) and not _local(address[0]):
        _refuse("connect %r" % (address,))
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _refuse("getaddrinfo %r" % (host,))
    return _getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
'''


@pytest.fixture
def network_guard(tmp_path, monkeypatch):
    """Child processes started from here on refuse the network and log each attempt; returns the log path."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "network.log"
    monkeypatch.setenv("PYTHONPATH", str(guard))
    monkeypatch.setenv("NETGUARD_LOG", str(log))
    return log
