"""End-to-end small-message rate through the tunnel: pure Python, the compiled codec
without the data plane (``c-noplane``), and with it (``c``).

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

import pytest
from small_load import echo_target, load_command, tunnel_to

from reactor_mux.tools.procs import cpu_time

MESSAGES = 60000


@pytest.fixture(scope="module")
def echo_port():
    with echo_target() as (_echo, port):
        yield port


def load(port: int) -> None:
    out = subprocess.run(load_command(port, MESSAGES), capture_output=True, text=True,
                         timeout=300, check=True)  # fmt: skip
    assert int(out.stdout.split()[1]) >= MESSAGES


@pytest.mark.parametrize("backend", ["python", "c-noplane", "c"])
def test_small_messages_through_the_tunnel(benchmark, echo_port, backend):
    with tunnel_to(echo_port, backend) as (client, server, port):
        load(port)  # warm up
        cpu_before = cpu_time(client.pid), cpu_time(server.pid)
        benchmark.pedantic(load, args=(port,), rounds=3)
        cpu_after = cpu_time(client.pid), cpu_time(server.pid)
    total = 3 * MESSAGES
    benchmark.extra_info["messages/s"] = round(MESSAGES / benchmark.stats.stats.median)
    benchmark.extra_info["client CPU us/msg"] = round(
        (cpu_after[0] - cpu_before[0]) / total * 1e6, 2
    )
    benchmark.extra_info["server CPU us/msg"] = round(
        (cpu_after[1] - cpu_before[1]) / total * 1e6, 2
    )
