"""Flow control through real processes: a stalled stream costs a bounded amount of
memory and does not slow the other streams on the channel."""

from __future__ import annotations

import socket
import time

import pytest
from support import Exchange, MuxProcess, NeverReadServer, Tunnel, check_exchange, run_exchange

from reactor_mux.tools.procs import proc_status

WINDOW = 256 * 1024
FEED = 200 * 1024 * 1024
FIXED_WINDOW = ("--window", "256K", "--max-window", "256K")


@pytest.fixture
def fixed_window_tunnel():
    """A tunnel whose windows never grow: the memory bounds below are a few
    windows, and the fast stream's window, grown and freed, would be allocator
    noise in them.  Growth and its bounds are tested on their own (below)."""
    tunnel = Tunnel(server_args=FIXED_WINDOW)
    yield tunnel
    tunnel.close()


class Feeder:
    """Pushes bytes into a connection without blocking, to see where backpressure bites."""

    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection(("127.0.0.1", port))
        self.conn.setblocking(False)
        self.sent = 0
        self._block = memoryview(bytes(1024 * 1024))

    def feed(self, limit: int, quiet: float = 1.0) -> int:
        """Send until ``limit`` bytes in all or nothing moved for ``quiet`` s; return bytes sent."""
        start, last_progress = self.sent, time.monotonic()
        while self.sent < limit and time.monotonic() - last_progress < quiet:
            try:
                n = self.conn.send(self._block[: min(len(self._block), limit - self.sent)])
            except BlockingIOError:
                time.sleep(0.01)
                continue
            self.sent += n
            last_progress = time.monotonic()
        return self.sent - start


def timed_transfer(port: int, size: int, seed: int, target) -> float:  # type: ignore[no-untyped-def]
    ex = Exchange(size, 0, seed)
    started = time.perf_counter()
    run_exchange(port, ex)
    elapsed = time.perf_counter() - started
    check_exchange(ex, target)
    return elapsed


def rss_kib(pid: int) -> int:
    return proc_status(pid, "VmRSS")


def test_stalled_stream_is_bounded_and_does_not_slow_others(fixed_window_tunnel, hash_target):
    tunnel = fixed_window_tunnel
    stalled = NeverReadServer()
    try:
        stalled_spec = f"0:127.0.0.1:{stalled.port}"
        fast_spec = f"0:127.0.0.1:{hash_target.port}"
        client, forwards = tunnel.client("-L", stalled_spec, "-L", fast_spec, extra=FIXED_WINDOW)
        ports = {target: port for _kind, port, target in forwards}
        stalled_port = ports[f"127.0.0.1:{stalled.port}"]
        fast_port = ports[f"127.0.0.1:{hash_target.port}"]
        pids = {"client": client.pid, "server": tunnel.server.pid}

        # Baseline: the fast path alone (this also warms up every buffer).
        alone = min(timed_transfer(fast_port, 50_000_000, seed, hash_target) for seed in (1, 2))
        before = {name: rss_kib(pid) for name, pid in pids.items()}

        feeder = Feeder(stalled_port)
        accepted = feeder.feed(FEED)
        beside_stall = timed_transfer(fast_port, 50_000_000, 3, hash_target)
        more = feeder.feed(FEED, quiet=0.5)
        after = {name: rss_kib(pid) for name, pid in pids.items()}
        growth = {name: after[name] - before[name] for name in pids}
        print(
            f"\nstalled stream accepted {feeder.sent} of {FEED} bytes; "
            f"50 MB alone {alone:.2f}s, beside the stall {beside_stall:.2f}s; "
            f"RSS growth {growth} KiB"
        )

        # Backpressure reached the feeder: the tunnel did not swallow 200 MB.
        assert accepted < FEED // 4
        assert more < 4 * WINDOW, "a stalled stream kept accepting data"
        # Memory: a stalled stream holds at most a window at each end (+ allocator noise).
        for name, kib in growth.items():
            assert kib <= 4 * WINDOW // 1024, f"{name} RSS grew {kib} KiB"
        # The other stream was not held up: a ratio in the same run, generous because
        # the machine may be loaded (a stream blocked behind the stall would not
        # finish at all before run_exchange's 120 s timeout).
        assert beside_stall <= 5 * alone + 2.0, (alone, beside_stall)
        feeder.conn.close()
    finally:
        stalled.release.set()
        stalled.close()


def grown_windows(server: MuxProcess, target_port: int) -> list[int]:
    """The windows the server granted (WINDOW) to streams to ``target_port`` (which
    streams those are, its ``stream_opened`` events say)."""
    opened = server.events("stream_opened", peer=f"127.0.0.1:{target_port}")
    streams = {(event["channel"], event["stream"]) for event in opened}
    grown = server.events("window_grown")
    return [event["bytes"] for event in grown if (event["channel"], event["stream"]) in streams]


def test_a_fast_stream_grows_its_window_and_a_stalled_one_does_not(hash_target):
    tunnel = Tunnel(server_args=("-v",))
    stalled = NeverReadServer()
    try:
        _client, forwards = tunnel.client(
            "-L", f"0:127.0.0.1:{stalled.port}", "-L", f"0:127.0.0.1:{hash_target.port}"
        )
        ports = {target: port for _kind, port, target in forwards}
        feeder = Feeder(ports[f"127.0.0.1:{stalled.port}"])
        feeder.feed(FEED)
        timed_transfer(ports[f"127.0.0.1:{hash_target.port}"], 60_000_000, 7, hash_target)
        log = tunnel.server.log
        fast = grown_windows(tunnel.server, hash_target.port)
        # Doubling from the 256 KiB window, never past --max-window (4 MiB).
        assert fast[:1] == [2 * WINDOW], log[-3000:]
        assert fast == [2 * WINDOW << i for i in range(len(fast))]
        assert max(fast) <= 4 * 1024 * 1024
        # The stalled target's queue is full: more window would only be buffered.
        assert grown_windows(tunnel.server, stalled.port) == []
        assert feeder.feed(FEED, quiet=0.5) < 4 * WINDOW, "a stalled stream kept accepting"
        feeder.conn.close()
    finally:
        stalled.release.set()
        stalled.close()
        tunnel.close()
