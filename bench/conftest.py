"""Benchmark fixtures: one set of processes per session, every path measured in the same run.

Paths: ``direct`` (straight to the target), ``relay1``/``relay2`` (one or two
chained plain relays, see plain_relay.py), ``tunnel_L``/``tunnel_R`` (a
reactor-mux client and server).  Ratios between them are what to quote; the
absolute figures depend on the machine and its load.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from reactor_mux.tools.procs import ReactorMuxProcess
from reactor_mux.tools.targets import EchoServer, ThreadedTCPServer

HERE = Path(__file__).parent
PATHS = ["direct", "relay1", "relay2", "tunnel_L", "tunnel_R"]


class SinkServer(ThreadedTCPServer):
    """Reads to EOF, then answers with the byte count (8 bytes, big-endian)."""

    def handle(self, conn: socket.socket) -> None:
        buffer = bytearray(1 << 20)
        total = 0
        while count := conn.recv_into(buffer):
            total += count
        conn.sendall(struct.pack(">Q", total))


def start_relay(target_port: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "plain_relay.py"), "0", "127.0.0.1", str(target_port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    return proc, int(line.rsplit(":", 1)[1])


class Paths:
    """The same target reached directly, through plain relays and through the tunnel."""

    def __init__(self, target_port: int, window: str = "256K") -> None:
        relay1, port1 = start_relay(target_port)
        relay_outer, port_outer = start_relay(port1)
        self.relays = [relay1, relay_outer]
        self.server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--window", window])
        self.client = ReactorMuxProcess(
            [
                "client",
                "--server",
                f"127.0.0.1:{self.server.listening_port()}",
                "--window",
                window,
                "-L",
                f"0:127.0.0.1:{target_port}",
                "-R",
                f"0:127.0.0.1:{target_port}",
            ]
        )
        forwards = {kind: port for kind, port, _ in self.client.forwards(2)}
        self.ports = {
            "direct": target_port,
            "relay1": port1,
            "relay2": port_outer,
            "tunnel_L": forwards["L"],
            "tunnel_R": forwards["R"],
        }

    def close(self) -> None:
        for proc in self.relays:
            proc.kill()
            proc.wait()
        self.client.stop()
        self.server.stop()


@pytest.fixture(scope="session")
def sink_paths():
    sink = SinkServer()
    paths = Paths(sink.port)
    yield paths
    paths.close()
    sink.close()


@pytest.fixture(scope="session")
def echo_paths():
    echo = EchoServer()
    paths = Paths(echo.port)
    yield paths
    paths.close()
    echo.close()
