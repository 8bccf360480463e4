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

BULK = 64 * 1024 * 1024
CHUNK = 256 * 1024
MESSAGE = 64
ROUND_TRIPS = 2000
PARALLEL = 16


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


def parallel_ping_pong(port: int) -> None:
    threads = [
        threading.Thread(target=ping_pong, args=(port, ROUND_TRIPS // 4)) for _ in range(PARALLEL)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.parametrize("path", PATHS)
def test_bulk_one_way(benchmark, sink_paths, path):
    port = sink_paths.ports[path]
    benchmark.pedantic(push, args=(port,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["MiB/s"] = round(BULK / benchmark.stats.stats.median / 2**20, 1)


@pytest.mark.parametrize("path", PATHS)
def test_small_message_round_trips(benchmark, echo_paths, path):
    port = echo_paths.ports[path]
    benchmark.pedantic(ping_pong, args=(port,), rounds=5, warmup_rounds=1)
    benchmark.extra_info["round trips/s"] = round(ROUND_TRIPS / benchmark.stats.stats.median)


@pytest.mark.parametrize("path", PATHS)
def test_small_messages_16_connections(benchmark, echo_paths, path):
    port = echo_paths.ports[path]
    benchmark.pedantic(parallel_ping_pong, args=(port,), rounds=3, warmup_rounds=1)
    total = PARALLEL * (ROUND_TRIPS // 4)
    benchmark.extra_info["messages/s"] = round(total / benchmark.stats.stats.median)


@pytest.mark.parametrize("loaded", [False, True], ids=["idle", "beside_bulk"])
def test_interactive_latency_beside_a_bulk_stream(benchmark, echo_paths, sink_paths, loaded):
    """Round trips on one stream while another stream of the same channel is saturated.

    Both fixtures' tunnels are separate channels, so the bulk load is pushed
    through the *echo* tunnel's own -L mapping (its echo target echoes it back,
    loading both directions of the channel)."""
    port = echo_paths.ports["tunnel_L"]
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

    loader = threading.Thread(target=bulk, daemon=True)
    if loaded:
        loader.start()
        time.sleep(0.3)
    try:
        benchmark.pedantic(ping_pong, args=(port, 200), rounds=5, warmup_rounds=1)
    finally:
        stop.set()
        if loaded:
            loader.join(30)
    benchmark.extra_info["round trip ms"] = round(benchmark.stats.stats.median / 200 * 1000, 3)
