"""End-to-end small-message rate through the tunnel, compiled codec against pure Python.

Load: 64 connections through one -L mapping, each with one 64-byte request
outstanding at a time, answered by a selectors echo; the load generator and the
echo run in processes of their own (bench/loadgen.py) so neither is the limit.
Each round completes 60,000 round trips.  ``extra_info`` has messages/s and
the CPU microseconds each tunnel process spent per message (from /proc), which
is the steadier figure on a shared 2-core machine.

Run: ``python -m pytest bench/test_small_messages.py --benchmark-columns=median``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reactor_mux.procs import ReactorMuxProcess, cpu_time

HERE = Path(__file__).parent
MESSAGES = 60000
CONNECTIONS = 64


@pytest.fixture(scope="module")
def echo_port():
    echo = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "echo"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert echo.stderr is not None
    port = int(echo.stderr.readline().rsplit(":", 1)[1])
    yield port
    echo.kill()
    echo.wait()


def load(port: int) -> None:
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), "load", str(port), str(CONNECTIONS),
         str(MESSAGES), "64"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert int(out.stdout.split()[1]) >= MESSAGES


@pytest.mark.parametrize("backend", ["python", "c"])
def test_small_messages_through_the_tunnel(benchmark, echo_port, backend):
    env = {"REACTOR_MUX_CODEC": backend}
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0"], env=env)
    client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{server.listening_port()}",
                                "-L", f"0:127.0.0.1:{echo_port}"], env=env)  # fmt: skip
    try:
        port = client.forwards(1)[0][1]
        load(port)  # warm up
        cpu_before = cpu_time(client.pid), cpu_time(server.pid)
        benchmark.pedantic(load, args=(port,), rounds=3)
        cpu_after = cpu_time(client.pid), cpu_time(server.pid)
    finally:
        client.stop()
        server.stop()
    total = 3 * MESSAGES
    benchmark.extra_info["messages/s"] = round(MESSAGES / benchmark.stats.stats.median)
    benchmark.extra_info["client CPU us/msg"] = round(
        (cpu_after[0] - cpu_before[0]) / total * 1e6, 2
    )
    benchmark.extra_info["server CPU us/msg"] = round(
        (cpu_after[1] - cpu_before[1]) / total * 1e6, 2
    )
