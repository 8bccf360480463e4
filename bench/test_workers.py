"""One server across cores (issue 25): 8 clients, each forwarding small messages
(an -L to an echo) and bulk (an -L to a sink), through one server started with
``--workers 1`` and with ``--workers 2``, in the same run.

The load comes from a process of its own (bench/loadgen.py): 32 request/response
connections of 64-byte messages spread over the 8 clients (``small``), or 8 bulk
connections, one per client (``bulk``), for ``SECONDS`` per round (each load
alone: together, bulk takes the machine and says nothing about the server).  ``extra_info`` has the
aggregate messages/s and MB/s, and the CPU seconds the server (supervisor and
workers), the clients and the load spent, from /proc: on this 2-core machine
the clients and the load need about as much CPU as the server, so what a second
worker gains is bounded by the core the rest leaves it (docs/operations.md,
"Sizing", has the figures and the arithmetic).  So the server also runs on the
pure-Python path (``codec=python``, the clients staying compiled): a server that
costs several times what the rest does per message, where the second core is
the server's to take.

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
def server_with(
    workers: int, echo: int, sink: int, codec: str
) -> Iterator[tuple[list[int], list[int], dict]]:
    """The server and 8 clients: yields each client's echo and sink ports, and the
    pids to measure."""
    control = Path(tempfile.mkdtemp()) / "server.sock"
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--workers", str(workers),
                                "--control", str(control)],
                               env={"REACTOR_MUX_CODEC": codec})  # fmt: skip
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
        echo_ports = [next(p for _, p, t in f if t.endswith(f":{echo}")) for f in forwards]
        sink_ports = [next(p for _, p, t in f if t.endswith(f":{sink}")) for f in forwards]
        yield echo_ports, sink_ports, pids
    finally:
        for client in clients:
            client.stop()
        server.stop()


def one_round(kind: str, ports: list[int]) -> float:
    """Messages/s (``small``) or MB/s (``bulk``) through every client at once."""
    joined = ",".join(map(str, ports))
    if kind == "small":
        words = ["load", joined, str(MESSAGE_CONNECTIONS), f"{SECONDS}s", str(SIZE)]
    else:
        words = ["push", joined, str(CLIENTS), str(SECONDS)]
    out = subprocess.run([sys.executable, str(LOADGEN), *words], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()  # fmt: skip
    rate = int(out[1]) / float(out[3])
    return rate if kind == "small" else rate / 1e6


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["small", "bulk"])
@pytest.mark.parametrize("codec", ["c", "python"])
def test_eight_clients_through_one_server(benchmark, codec, kind, workers):
    rates: list[float] = []
    with (
        target("echo") as echo,
        target("sink") as sink,
        server_with(workers, echo, sink, codec) as (echo_ports, sink_ports, pids),
    ):
        ports = echo_ports if kind == "small" else sink_ports
        one_round(kind, ports)  # warm up
        before = {role: sum(cpu_time(pid) for pid in group) for role, group in pids.items()}
        benchmark.pedantic(lambda: rates.append(one_round(kind, ports)), rounds=3)
        after = {role: sum(cpu_time(pid) for pid in group) for role, group in pids.items()}
    rates.sort()
    benchmark.extra_info["messages/s" if kind == "small" else "MB/s"] = round(rates[1], 1)
    seconds = 3 * SECONDS
    for role in pids:
        benchmark.extra_info[f"{role} CPU cores"] = round((after[role] - before[role]) / seconds, 2)
