"""End-to-end tunnel benchmarks against a direct connection and plain relays.

Run: ``python -m pytest bench/ --benchmark-columns=min,median,max``.  Each test
stores its rate in ``extra_info``; ``--benchmark-json=FILE`` keeps them.
Compare paths *within one run*: ``tunnel_L / relay2`` is the figure to quote.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from conftest import PATHS

from reactor_mux.tools.procs import cpu_time

BULK = 64 * 1024 * 1024
CHUNK = 256 * 1024
MESSAGE = 64
ROUND_TRIPS = 2000


def push(port: int, size: int = BULK) -> None:
    """Send ``size`` bytes to the sink through ``port``; wait for its byte count."""
    block = memoryview(bytes(CHUNK))
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(size // CHUNK):
            conn.sendall(block)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 8:
            chunk = conn.recv(8 - len(reply))
            assert chunk, "sink closed early"
            reply += chunk
    assert struct.unpack(">Q", reply)[0] == size


def ping_pong(port: int, rounds: int = ROUND_TRIPS) -> None:
    """``rounds`` request/response exchanges of MESSAGE bytes over one connection."""
    message = bytes(MESSAGE)
    with socket.create_connection(("127.0.0.1", port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(rounds):
            conn.sendall(message)
            got = 0
            while got < MESSAGE:
                chunk = conn.recv(MESSAGE - got)
                assert chunk
                got += len(chunk)


@pytest.mark.parametrize("path", PATHS)
def test_bulk_one_way(benchmark, sink_paths, path):
    port = sink_paths.ports[path]
    tunnel = (sink_paths.client.pid, sink_paths.server.pid)
    push(port)  # warm-up, outside the CPU count
    cpu_before = sum(cpu_time(pid) for pid in tunnel)
    benchmark.pedantic(push, args=(port,), rounds=5)
    cpu = sum(cpu_time(pid) for pid in tunnel) - cpu_before
    benchmark.extra_info["MiB/s"] = round(BULK / benchmark.stats.stats.median / 2**20, 1)
    if path.startswith("tunnel"):
        # Steadier than the rate on a shared machine: what both tunnel processes
        # spent (user + system) per MiB carried.
        benchmark.extra_info["tunnel CPU ms/MiB"] = round(cpu / (5 * BULK / 2**20) * 1e3, 3)


@pytest.mark.parametrize("path", PATHS)
def test_small_message_round_trips(benchmark, echo_paths, path):
    port = echo_paths.ports[path]
    benchmark.pedantic(ping_pong, args=(port,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["round trips/s"] = round(ROUND_TRIPS / benchmark.stats.stats.median)


@pytest.mark.parametrize("path", ["relay2", "tunnel_L"])
@pytest.mark.parametrize("loaded", [0, 1, 16], ids=["idle", "beside_1_bulk", "beside_16_bulk"])
def test_interactive_latency_beside_bulk_streams(benchmark, echo_paths, path, loaded):
    """Round trips on one connection while ``loaded`` other connections on the same
    path are saturated both ways (the echo target returns the bulk bytes).

    Through the tunnel both connections share one channel; through the plain
    relays they are separate TCP connections, which is the best a multiplexer
    can hope to match: any head-of-line blocking in the tunnel shows up as a
    ratio above the relays' ratio."""
    port = echo_paths.ports[path]
    stop = threading.Event()

    def bulk() -> None:
        block = memoryview(bytes(CHUNK))
        with socket.create_connection(("127.0.0.1", port)) as conn:

            def drain() -> None:
                while conn.recv(1 << 20):
                    pass

            reader = threading.Thread(target=drain, daemon=True)
            reader.start()
            while not stop.is_set():
                conn.sendall(block)
            conn.shutdown(socket.SHUT_WR)
            reader.join()

    loaders = [threading.Thread(target=bulk, daemon=True) for _ in range(loaded)]
    for loader in loaders:
        loader.start()
    time.sleep(0.3 if loaded else 0)
    try:
        benchmark.pedantic(ping_pong, args=(port, 200), rounds=5, warmup_rounds=1)
    finally:
        stop.set()
        for loader in loaders:
            loader.join(30)
    benchmark.extra_info["round trip ms"] = round(benchmark.stats.stats.median / 200 * 1000, 3)
