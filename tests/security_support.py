"""Shared by the security tests: a test PKI, secrets, and a good client."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from certs import Authority, secret_file
from support import MuxProcess, Tunnel, address_ports

SECRET = "good secret, long enough to count"
FAST = ("--reconnect-min", "0.2", "--reconnect-max", "2")


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    class PKI:
        ca = Authority(tmp_path, "ca")
        other_ca = Authority(tmp_path, "other")
        server = ca.issue("server")
        expired = ca.issue("server", expired=True)
        client = ca.issue("alice", client=True)
        stranger = other_ca.issue("mallory", client=True)
        dir = tmp_path

    return PKI


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return secret_file(tmp_path, "secret", SECRET)


def good_client(tunnel: Tunnel, target_port: int, *extra: str) -> int:
    """A client that authenticates properly; returns its -L port."""
    _proc, forwards = tunnel.client("-L", f"0:127.0.0.1:{target_port}", extra=(*extra, *FAST))
    return forwards[0][1]


def listen_port(proc: MuxProcess) -> int:
    """The port of a client's first -L or -D."""
    listening = proc.wait_event("listening", mapping=lambda mapping: mapping is not None)
    return address_ports(listening["address"])[0]


@pytest.fixture
def tunnel_with_secret(secret):  # type: ignore[no-untyped-def]
    tunnel = Tunnel(server_args=("--secret-file", str(secret)))
    yield tunnel, secret
    tunnel.close()


def tls_server(pki, *extra: str, cert=None) -> Tunnel:  # type: ignore[no-untyped-def]
    issued = cert or pki.server
    return Tunnel(server_args=("--tls-cert", str(issued.cert), "--tls-key", str(issued.key),
                               *extra))  # fmt: skip


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor_mux", *args], capture_output=True,
                          text=True, timeout=20)  # fmt: skip
