"""Session-wide test settings: offline, one thread, offscreen Qt, and a guard against the network."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# derived files (the CLIP vocabulary) go to a per-session folder, never into the user's ~/.cache
os.environ.setdefault("CONCEPT_ERASER_CACHE", tempfile.mkdtemp(prefix="concept-eraser-cache-"))

import pytest  # noqa: E402


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple) or not address:
        return True  # AF_UNIX paths and the like
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that would need DNS: not loopback


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to open a non-loopback connection to {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to open a non-loopback connection to {address!r}")
    return _real_connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    try:
        import torch
    except ImportError:  # spec/GUI-only environments
        yield
        return
    torch.set_num_threads(1)
    yield
