"""One server across cores (issue 25): 8 clients, each forwarding small messages
(an -L to an echo) and a bulk stream (an -L to a sink) at once, through one
server started with ``--workers 1`` and with ``--workers 2``, in the same run.

The load comes from two processes of their own (bench/loadgen.py: 32 request/
response connections of 64-byte messages spread over the 8 clients, and 8 bulk
connections, one per client), for ``SECONDS`` per round.  ``extra_info`` has the
aggregate messages/s and MB/s, and the CPU seconds the server (supervisor and
workers), the clients and the load spent, from /proc: on this 2-core machine
the clients and the load need about as much CPU as the server, so what a second
worker gains is bounded by the core the rest leaves it (docs/operations.md,
"Sizing", has the figures and the arithmetic).

Run: ``python -m pytest bench/test_workers.py --benchmark-columns=median``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reactor_mux.tools.procs import ReactorMuxProcess, cpu_time

LOADGEN = Path(__file__).parent / "loadgen.py"
CLIENTS = 8
SECONDS = 4.0
MESSAGE_CONNECTIONS = 32
SIZE = 64


@contextmanager
def target(mode: str) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, str(LOADGEN), mode], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        yield int(proc.stderr.readline().rsplit(":", 1)[1])
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def server_with(workers: int, echo: int, sink: int) -> Iterator[tuple[list[int], list[int], dict]]:
    """The server and 8 clients: yields each client's echo and sink ports, and the
    pids to measure."""
    control = Path(tempfile.mkdtemp()) / "server.sock"
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--workers", str(workers),
                                "--control", str(control)])  # fmt: skip
    port = server.listening_port()
    clients = []
    try:
        for _ in range(CLIENTS):
            clients.append(ReactorMuxProcess(["client", "--server", f"127.0.0.1:{port}", "-L",
                                              f"0:127.0.0.1:{echo}", "-L",
                                              f"0:127.0.0.1:{sink}"]))  # fmt: skip
        forwards = [client.forwards(2) for client in clients]
        status = subprocess.run([sys.executable, "-m", "reactor_mux", "status", "--json",
                                 "--control", str(control)], capture_output=True, text=True,
                                check=True)  # fmt: skip
        report = json.loads(status.stdout)
        server_pids = [server.pid] + [w["pid"] for w in report.get("workers", [])]
        pids = {"server": server_pids, "clients": [client.pid for client in clients]}
        echo_ports = [next(p for _, p, t in f if t[1] == echo) for f in forwards]
        sink_ports = [next(p for _, p, t in f if t[1] == sink) for f in forwards]
        yield echo_ports, sink_ports, pids
    finally:
        for client in clients:
            client.stop()
        server.stop()


def one_round(echo_ports: list[int], sink_ports: list[int]) -> tuple[float, float]:
    """Messages/s and MB/s, both loads at once."""
    echoes, sinks = ",".join(map(str, echo_ports)), ",".join(map(str, sink_ports))
    small = subprocess.Popen([sys.executable, str(LOADGEN), "load", echoes,
                              str(MESSAGE_CONNECTIONS), f"{SECONDS}s", str(SIZE)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    bulk = subprocess.Popen([sys.executable, str(LOADGEN), "push", sinks, str(CLIENTS),
                             str(SECONDS)], stdout=subprocess.PIPE, text=True)  # fmt: skip
    small_out, _ = small.communicate(timeout=120)
    bulk_out, _ = bulk.communicate(timeout=120)
    messages, message_seconds = small_out.split()[1], small_out.split()[3]
    sent, bulk_seconds = bulk_out.split()[1], bulk_out.split()[3]
    return int(messages) / float(message_seconds), int(sent) / float(bulk_seconds) / 1e6


@pytest.mark.parametrize("workers", [1, 2])
def test_eight_clients_through_one_server(benchmark, workers):
    rates: list[tuple[float, float]] = []
    with target("echo") as echo, target("sink") as sink, server_with(workers, echo, sink) as (
        echo_ports, sink_ports, pids,
    ):  # fmt: skip
        one_round(echo_ports, sink_ports)  # warm up
        before = {role: sum(cpu_time(pid) for pid in group) for role, group in pids.items()}
        benchmark.pedantic(lambda: rates.append(one_round(echo_ports, sink_ports)), rounds=3)
        after = {role: sum(cpu_time(pid) for pid in group) for role, group in pids.items()}
    rates.sort()
    messages, megabytes = rates[len(rates) // 2]
    benchmark.extra_info["messages/s"] = round(messages)
    benchmark.extra_info["bulk MB/s"] = round(megabytes, 1)
    seconds = 3 * SECONDS
    for role in pids:
        benchmark.extra_info[f"{role} CPU cores"] = round((after[role] - before[role]) / seconds, 2)
