"""Fixtures shared by every test folder."""

import pytest

import deepliver  # noqa: F401  first, before any test module runs torch: it sets MKL_CBWR (see its __init__)

# Records and refuses every non-loopback connection and DNS lookup of a child process that imports it as
# its sitecustomize.
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
