"""The small-message setup shared by test_small_messages.py and small_message_cpu.py.

An echo target and the load generator run as processes of their own
(loadgen.py); the tunnel is a reactor-mux server and client with one -L
mapping to the echo, on the codec backend asked for.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from reactor_mux.tools.procs import ReactorMuxProcess

Proc = ReactorMuxProcess
LOADGEN = Path(__file__).parent / "loadgen.py"
CONNECTIONS = 64
SIZE = 64


@contextmanager
def echo_target() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A running echo process and its port."""
    echo = subprocess.Popen([sys.executable, str(LOADGEN), "echo"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert echo.stderr is not None
        yield echo, int(echo.stderr.readline().rsplit(":", 1)[1])
    finally:
        echo.kill()
        echo.wait()


@contextmanager
def tunnel_to(port: int, backend: str) -> Iterator[tuple[Proc, Proc, int]]:
    """Server and client (REACTOR_MUX_CODEC=backend; ``c-noplane``: the compiled codec
    without the data plane) forwarding a local port to ``port``: yields (client,
    server, local port)."""
    env = {"REACTOR_MUX_CODEC": backend}
    if backend == "c-noplane":  # the compiled codec, the streams' bytes moved by Python
        env = {"REACTOR_MUX_CODEC": "c", "REACTOR_MUX_DATA_PLANE": "python"}
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0"], env=env)
    client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{server.listening_port()}",
                                "-L", f"0:127.0.0.1:{port}"], env=env)  # fmt: skip
    try:
        yield client, server, client.forwards(1)[0][1]
    finally:
        client.stop()
        server.stop()


def load_command(port: int, limit: int | str) -> list[str]:
    """loadgen.py's command line: CONNECTIONS connections of SIZE-byte round trips."""
    return [sys.executable, str(LOADGEN), "load", str(port), str(CONNECTIONS), str(limit),
            str(SIZE)]  # fmt: skip
