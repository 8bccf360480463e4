"""What resume costs: the same tunnel with ``--resume-timeout 0`` and with resume on.

Resume keeps every sent byte until the peer has it and logs every command
(docs/protocol.md §9); issue 13 asks that bulk and small-message rates with it
stay at or above 0.95x of the same tunnel without it.  Both tunnels run in one
session against the same targets, and the tests alternate, so the ratio of
their medians is the figure to quote::

    python -m pytest bench/test_resume_cost.py --benchmark-columns=median

The steadier figure on a shared machine is instruction counts:
``python bench/compare_checkouts.py . . --instructions [--round-trips 2000]
--old-args="--resume-timeout 0"``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from conftest import SinkServer
from test_tunnel import BULK, ROUND_TRIPS, ping_pong, push

from reactor_mux.tools.procs import ReactorMuxProcess, cpu_time
from reactor_mux.tools.targets import EchoServer

MODES = {"resume_off": ("--resume-timeout", "0"), "resume_on": ()}


class Tunnels:
    """One server and client per mode, each with an ``-L`` to ``target_port``."""

    def __init__(self, target_port: int, client_args: tuple[str, ...] = ()) -> None:
        self.procs: dict[str, tuple[ReactorMuxProcess, ReactorMuxProcess]] = {}
        self.ports: dict[str, int] = {}
        for mode, extra in MODES.items():
            server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", *extra])
            client = ReactorMuxProcess(["client", "--server",
                                        f"127.0.0.1:{server.listening_port()}",
                                        "-L", f"0:127.0.0.1:{target_port}", *extra,
                                        *client_args])  # fmt: skip
            self.ports[mode] = client.forwards(1)[0][1]
            self.procs[mode] = (server, client)

    def pids(self, mode: str) -> tuple[int, int]:
        server, client = self.procs[mode]
        return server.pid, client.pid

    def close(self) -> None:
        for server, client in self.procs.values():
            client.stop()
            server.stop()


@pytest.fixture(scope="module")
def sink_tunnels() -> Iterator[Tunnels]:
    sink = SinkServer()
    tunnels = Tunnels(sink.port)
    yield tunnels
    tunnels.close()
    sink.close()


@pytest.fixture(scope="module")
def echo_tunnels() -> Iterator[Tunnels]:
    echo = EchoServer()
    tunnels = Tunnels(echo.port)
    yield tunnels
    tunnels.close()
    echo.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_bulk(benchmark, sink_tunnels, mode):
    port = sink_tunnels.ports[mode]
    push(port)  # warm-up: rings and windows at their working size
    cpu_before = sum(cpu_time(pid) for pid in sink_tunnels.pids(mode))
    benchmark.pedantic(push, args=(port,), rounds=5)
    cpu = sum(cpu_time(pid) for pid in sink_tunnels.pids(mode)) - cpu_before
    benchmark.extra_info["MiB/s"] = round(BULK / benchmark.stats.stats.median / 2**20, 1)
    benchmark.extra_info["tunnel CPU ms/MiB"] = round(cpu / (5 * BULK / 2**20) * 1e3, 3)


@pytest.mark.parametrize("mode", list(MODES))
def test_small_message_round_trips(benchmark, echo_tunnels, mode):
    port = echo_tunnels.ports[mode]
    cpu_before = sum(cpu_time(pid) for pid in echo_tunnels.pids(mode))
    benchmark.pedantic(ping_pong, args=(port,), rounds=5, warmup_rounds=1)
    cpu = sum(cpu_time(pid) for pid in echo_tunnels.pids(mode)) - cpu_before
    benchmark.extra_info["round trips/s"] = round(ROUND_TRIPS / benchmark.stats.stats.median)
    benchmark.extra_info["tunnel CPU us/round trip"] = round(cpu / (6 * ROUND_TRIPS) * 1e6, 2)


@pytest.fixture(scope="module")
def capped_tunnels() -> Iterator[Tunnels]:
    """Tunnels whose client may hold only 256 KiB of send buffers: with resume
    on, bytes sent stay in the rings until confirmed, so the cap is met sooner."""
    sink = SinkServer()
    tunnels = Tunnels(sink.port, ("--max-buffer", "256K"))
    yield tunnels
    tunnels.close()
    sink.close()


@pytest.mark.parametrize("mode", list(MODES))
def test_eight_bulk_streams_under_a_256k_buffer_cap(benchmark, capped_tunnels, mode):
    port = capped_tunnels.ports[mode]

    def eight() -> None:
        threads = [threading.Thread(target=push, args=(port, BULK // 8)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    benchmark.pedantic(eight, rounds=3, warmup_rounds=1)
    benchmark.extra_info["MiB/s"] = round(BULK / benchmark.stats.stats.median / 2**20, 1)
