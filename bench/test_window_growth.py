"""Window growth on a long link: one stream over a channel with 50 ms round trips.

A fixed 256 KiB window allows one window per round trip, 5 MiB/s at 50 ms,
whatever the link could carry.  Window growth (docs/protocol.md §6.1) lets a
stream whose local socket keeps up double its window up to ``--max-window``.

The channel crosses ``delay_relay.py``, which holds every byte 25 ms each way
(this machine's kernel has no netem qdisc, so the delay is made in user
space; the relay reads at once, so the channel's own TCP window is never what
limits).  Each test pushes ``TRANSFER`` bytes through ``-L`` to a sink and
reads its byte count back; ``--max-window 256K`` is the fixed window, and
``--max-buffer 64M`` keeps the per-channel growth budget out of the way.  All
runs share the relay in one session, so their ratios are the figures::

    python -m pytest bench/test_window_growth.py --benchmark-columns=median
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SinkServer
from test_tunnel import push

from reactor_mux.tools.procs import ReactorMuxProcess

TRANSFER = 32 * 1024 * 1024
ONE_WAY_DELAY = 0.025
HERE = Path(__file__).parent


class LongTunnel:
    """A reactor-mux server, the delay relay in front of it, and a client
    through the relay with one ``-L`` to ``sink_port``; the receiver of an
    upload (the server) decides growth, so ``--max-window`` is set there."""

    def __init__(self, sink_port: int, max_window: str) -> None:
        # Growth is also bounded per channel by a quarter of --max-buffer: give
        # it room, so --max-window alone sets the limit being measured.
        limits = ["--max-window", max_window, "--max-buffer", "64M"]
        self.server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", *limits])
        self.relay = subprocess.Popen(
            [sys.executable, str(HERE / "delay_relay.py"), "0", "127.0.0.1",
             str(self.server.listening_port()), str(ONE_WAY_DELAY)],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.relay.stderr is not None
        relay_port = int(self.relay.stderr.readline().rsplit(":", 1)[1])
        self.client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{relay_port}",
                                         "-L", f"0:127.0.0.1:{sink_port}"])  # fmt: skip
        self.port = self.client.forwards(1)[0][1]

    def close(self) -> None:
        self.client.stop()
        self.relay.kill()
        self.server.stop()


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkServer]:
    server = SinkServer()
    yield server
    server.close()


@pytest.mark.parametrize("max_window", ["256K", "1M", "4M", "16M"])
def test_one_stream_over_50ms(benchmark, sink, max_window):
    tunnel = LongTunnel(sink.port, max_window)
    try:
        push(tunnel.port, 4 * 1024 * 1024)  # warm-up
        benchmark.pedantic(push, args=(tunnel.port, TRANSFER), rounds=3)
        benchmark.extra_info["MiB/s"] = round(TRANSFER / 2**20 / benchmark.stats.stats.median, 1)
    finally:
        tunnel.close()
