"""Secure tunnels side by side: reactor-mux over TLS against ``ssh -N -L``.

The baseline is what users would run instead: OpenSSH's port forwarding
through a local sshd, with ``aes128-gcm@openssh.com``.  reactor-mux runs
with TLS (a keygen certificate, pinned) and a shared secret, the way
docs/security.md recommends; plain reactor-mux is there for reference.  All
three paths reach the same sink and echo targets in the same run, and the
ratios between them are what to quote (docs/performance.md):

* bulk: 64 MiB one way, MiB/s and both processes' CPU per MiB;
* ping-pong: 64-byte request/response on one connection, the median round trip;
* new connections: connect, one byte there and back, close, per second.

Needs ``sshd`` and ``ssh`` (Debian: openssh-server); skipped without them.
"""

from __future__ import annotations

import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import pytest
from conftest import SinkServer
from local_ssh import LocalSsh, available
from test_tunnel import BULK, push

from reactor_mux.security.keygen import generate, generate_secret
from reactor_mux.tools.procs import ReactorMuxProcess, cpu_time
from reactor_mux.tools.targets import EchoServer

pytestmark = pytest.mark.skipif(not available(), reason="needs sshd and ssh (openssh-server)")

SECURE_PATHS = ["ssh_L", "tls_L", "plain_L"]
ROUND_TRIPS = 3000
NEW_CONNECTIONS = 400


class SecurePaths:
    def __init__(self, sink_port: int, echo_port: int) -> None:
        targets = [sink_port, echo_port]
        self.ssh = LocalSsh(targets)
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-tls-"))
        cert, key, secret = (self.directory / name for name in ("cert.pem", "key.pem", "s"))
        pin = generate(cert, key, ["127.0.0.1"])
        generate_secret(secret)
        forwards = [arg for port in targets for arg in ("-L", f"0:127.0.0.1:{port}")]
        self.tls = self._tunnel(["--tls-cert", str(cert), "--tls-key", str(key),
                                 "--secret-file", str(secret)],
                                ["--tls", "--tls-fingerprint", pin, "--secret-file", str(secret)],
                                forwards)  # fmt: skip
        self.plain = self._tunnel([], [], forwards)
        self.ports = {
            "ssh_L": self.ssh.ports,
            "tls_L": self.tls[2],
            "plain_L": self.plain[2],
        }

    @staticmethod
    def _tunnel(server_args: list[str], client_args: list[str], forwards: list[str]):  # type: ignore[no-untyped-def]
        server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", *server_args])
        client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{server.listening_port()}",
                                    *client_args, *forwards])  # fmt: skip
        ports = [port for _kind, port, _target in client.forwards(len(forwards) // 2)]
        return server, client, ports

    def pids(self, path: str) -> tuple[int, ...]:
        if path == "ssh_L":
            return self.ssh.pids
        server, client, _ = self.tls if path == "tls_L" else self.plain
        return (server.pid, client.pid)

    def close(self) -> None:
        self.ssh.close()
        for server, client, _ in (self.tls, self.plain):
            client.stop()
            server.stop()
        for name in os.listdir(self.directory):
            (self.directory / name).unlink()
        self.directory.rmdir()


@pytest.fixture(scope="module")
def secure_paths():
    sink, echo = SinkServer(), EchoServer()
    paths = SecurePaths(sink.port, echo.port)
    yield paths
    paths.close()
    sink.close()
    echo.close()


@pytest.mark.parametrize("path", SECURE_PATHS)
def test_secure_bulk(benchmark, secure_paths, path):
    port = secure_paths.ports[path][0]
    pids = secure_paths.pids(path)
    push(port)  # warm-up
    before = sum(cpu_time(pid) for pid in pids)
    benchmark.pedantic(push, args=(port,), rounds=5)
    cpu = sum(cpu_time(pid) for pid in pids) - before
    benchmark.extra_info["MiB/s"] = round(BULK / benchmark.stats.stats.median / 2**20, 1)
    benchmark.extra_info["CPU ms/MiB"] = round(cpu / (5 * BULK / 2**20) * 1e3, 3)


def round_trips(port: int, count: int = ROUND_TRIPS) -> list[float]:
    """Seconds per 64-byte round trip on one connection."""
    message = bytes(64)
    times = []
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(message)
            got = 0
            while got < len(message):
                chunk = conn.recv(len(message) - got)
                assert chunk
                got += len(chunk)
            times.append(time.perf_counter() - started)
    return times


@pytest.mark.parametrize("path", SECURE_PATHS)
def test_secure_ping_pong(benchmark, secure_paths, path):
    port = secure_paths.ports[path][1]
    round_trips(port, 200)  # warm-up
    samples: list[float] = []
    benchmark.pedantic(lambda: samples.extend(round_trips(port)), rounds=3)
    benchmark.extra_info["p50 us"] = round(statistics.median(samples) * 1e6, 1)
    benchmark.extra_info["p99 us"] = round(statistics.quantiles(samples, n=100)[98] * 1e6, 1)


def new_connections(port: int, count: int = NEW_CONNECTIONS) -> None:
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"


@pytest.mark.parametrize("path", SECURE_PATHS)
def test_secure_new_connections(benchmark, secure_paths, path):
    port = secure_paths.ports[path][1]
    new_connections(port, 20)  # warm-up
    benchmark.pedantic(new_connections, args=(port,), rounds=3)
    benchmark.extra_info["connections/s"] = round(NEW_CONNECTIONS / benchmark.stats.stats.median)
