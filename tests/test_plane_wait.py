"""The reactor's wait made by the data plane (``PlaneHub.wait``, ``rmux_engine_wait``).

Where the compiled plane runs, the selector's epoll set sits inside the engine's,
and the reactor waits in the engine: bytes that only the plane moves never wake
Python.  These tests check that on real sockets (a tunnel in this process, its
selector counting how often Python was woken), that timers and other threads
still reach the loop while the plane is busy, and that a selector the engine
cannot hold (poll) keeps the old arrangement with the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from inprocess import InProcessTunnel, LoopThread

from reactor_mux import codec
from reactor_mux.io import plane as plane_module
from reactor_mux.io.plane import Engine
from reactor_mux.io.reactor import PROCESS, Reactor
from reactor_mux.tools.targets import EchoServer

pytestmark = pytest.mark.skipif(
    codec.BACKEND != "c" or not plane_module.enabled(), reason="the compiled data plane"
)

ROUND_TRIPS = 400
MESSAGE = 64


class Counting:
    """A selector mix-in that counts ``select`` calls: each is Python woken."""

    selects = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        self.selects += 1
        return super().select(timeout)  # type: ignore[misc, no-any-return]


class CountingEpoll(Counting, selectors.EpollSelector):
    """An epoll selector, whose set the engine can hold."""


class CountingPoll(Counting, selectors.PollSelector):
    """poll, which has no descriptor the engine could hold."""


@pytest.fixture
def engine_and_outer() -> Iterator[tuple[Engine, selectors.EpollSelector]]:
    """An engine and an epoll selector of its own, both closed after the test."""
    engine = Engine()
    outer = selectors.EpollSelector()
    yield engine, outer
    outer.close()
    engine.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


def tunnel_on(selector: selectors.BaseSelector) -> tuple[LoopThread, InProcessTunnel]:
    loop = LoopThread(selector)
    return loop, InProcessTunnel(loop)


def ping_pong(port: int, rounds: int) -> bytes:
    """``rounds`` request/response exchanges of distinct messages; returns the
    SHA-256 of everything echoed back."""
    digest = hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for index in range(rounds):
            message = index.to_bytes(4, "big") * (MESSAGE // 4)
            conn.sendall(message)
            got = b""
            while len(got) < MESSAGE:
                chunk = conn.recv(MESSAGE - len(got))
                assert chunk, "the tunnel closed the connection"
                got += chunk
            digest.update(got)
    return digest.digest()


def expected_digest(rounds: int) -> bytes:
    digest = hashlib.sha256()
    for index in range(rounds):
        digest.update(index.to_bytes(4, "big") * (MESSAGE // 4))
    return digest.digest()


def exchange_counting_selects(selector: CountingEpoll | CountingPoll, echo: EchoServer) -> int:
    """Run ``ROUND_TRIPS`` through a fresh tunnel's -L; return the selects made
    during them (the round trips' bytes checked)."""
    loop, tunnel = tunnel_on(selector)
    try:
        client = tunnel.client(f"-L 0:127.0.0.1:{echo.port}")
        port = tunnel.local_port(client)
        assert ping_pong(port, 2) == expected_digest(2)  # the stream's setup is not counted
        hub = loop.reactor.plane_hub
        assert hub is not None
        before = loop.call(lambda: selector.selects)
        assert ping_pong(port, ROUND_TRIPS) == expected_digest(ROUND_TRIPS)
        return loop.call(lambda: selector.selects) - before
    finally:
        tunnel.close()
        loop.close()


def test_round_trips_only_the_plane_moves_do_not_wake_python(echo):
    selector = CountingEpoll()
    selects = exchange_counting_selects(selector, echo)
    # Each round trip is two wake-ups in each direction's process; with the plane
    # waiting they stay in C.  The few selects left are the loop.call()s above.
    assert selects < ROUND_TRIPS // 10, selects


def test_a_selector_the_engine_cannot_hold_keeps_the_selectors_wait(echo):
    selector = CountingPoll()
    selects = exchange_counting_selects(selector, echo)
    assert selects >= ROUND_TRIPS, selects  # every wake-up was Python's: the count counts


def test_timers_and_other_threads_reach_the_loop_while_the_plane_moves_bulk(echo):
    """The engine waits with the reactor's timeout and goes round while streams
    have work; a due timer and a call from another thread still run on time."""
    loop, tunnel = tunnel_on(CountingEpoll())
    stop = threading.Event()
    sent = [0]
    failed: list[BaseException] = []

    def upload(port: int) -> None:
        chunk = os.urandom(256 * 1024)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                reader = threading.Thread(target=drain, args=(conn,), daemon=True)
                reader.start()
                while not stop.is_set():
                    conn.sendall(chunk)
                    sent[0] += len(chunk)
                conn.shutdown(socket.SHUT_WR)
                reader.join(10)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failed.append(exc)

    def drain(conn: socket.socket) -> None:
        while conn.recv(1 << 20):
            pass

    try:
        client = tunnel.client(f"-L 0:127.0.0.1:{echo.port}")
        pusher = threading.Thread(target=upload, args=(tunnel.local_port(client),), daemon=True)
        pusher.start()
        deadline = time.monotonic() + 20
        while sent[0] < 16 << 20:  # the plane is busy: bulk both ways through the echo
            assert not failed and time.monotonic() < deadline, (failed, sent[0])
            time.sleep(0.01)
        fired: list[float] = []
        due = loop.call(lambda: time.monotonic() + 0.05)
        loop.call(lambda: loop.reactor.call_later(0.05, lambda: fired.append(time.monotonic()),
                                                  PROCESS))  # fmt: skip
        deadline = time.monotonic() + 10
        while not fired and time.monotonic() < deadline:
            time.sleep(0.01)
        moved_meanwhile = sent[0]
        assert fired, "the timer never ran while the plane was busy"
        assert fired[0] - due < 2.0, fired[0] - due
        started = time.monotonic()
        assert loop.call(lambda: 42) == 42  # another thread's call, answered promptly
        assert time.monotonic() - started < 2.0
        stop.set()
        pusher.join(10)
        assert not pusher.is_alive() and not failed and moved_meanwhile > 16 << 20
    finally:
        stop.set()
        tunnel.close()
        loop.close()


# ------------------------------------------------------------- the engine alone


def test_the_engines_wait_times_out_sees_the_outer_set_and_yields_to_signals(engine_and_outer):
    engine, outer = engine_and_outer
    reader, writer = socket.socketpair()
    try:
        assert engine.watch_outer(outer.fileno())
        outer.register(reader, selectors.EVENT_READ)
        started = time.monotonic()
        assert engine.wait(30) == ([], False)  # nothing ready: the whole timeout
        assert time.monotonic() - started >= 0.025
        writer.send(b"x")
        started = time.monotonic()
        assert engine.wait(5000) == ([], True)  # a descriptor of the selector's is ready
        assert time.monotonic() - started < 2.0
        reader.recv(1)
        previous = signal.signal(signal.SIGALRM, lambda *_: None)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            started = time.monotonic()
            assert engine.wait(5000) == ([], False)  # the signal ends the wait
            assert time.monotonic() - started < 2.0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    finally:
        reader.close()
        writer.close()


def test_an_engine_refuses_a_set_that_holds_it(engine_and_outer):
    """epoll refuses a loop: the hub then keeps the engine in the selector."""
    engine, outer = engine_and_outer
    outer.register(engine, selectors.EVENT_READ)
    assert not engine.watch_outer(outer.fileno())


def test_an_epoll_set_that_fails_is_an_error_not_a_spin(engine_and_outer):
    """epoll_wait failing otherwise than by a signal (here: the engine's descriptor
    made a pipe's) ends the wait with the error, at once."""
    engine, outer = engine_and_outer
    reader, writer = os.pipe()
    try:
        assert engine.watch_outer(outer.fileno())
        os.dup2(reader, engine.fileno())  # the engine's fd is now a pipe: EINVAL
        started = time.process_time()
        with pytest.raises(OSError):
            engine.wait(-1)
        assert time.process_time() - started < 1.0
    finally:
        os.close(reader)
        os.close(writer)


def test_a_wait_that_keeps_failing_gives_the_wait_back_to_the_selector(caplog, echo):
    """One error logged, then the engine is a watch in the selector again: the loop
    neither stops nor spins, and the tunnel still carries data."""
    loop, tunnel = tunnel_on(CountingEpoll())
    try:
        hub = loop.call(lambda: plane_module.hub_for(loop.reactor))
        assert hub is not None and hub.waits
        calls = [0]

        def always_fails(timeout: float | None) -> bool:
            calls[0] += 1
            raise RuntimeError("planted")

        with caplog.at_level(logging.ERROR, logger="reactor_mux"):
            loop.call(lambda: setattr(hub, "wait", always_fails))
            loop.wait(lambda: not hub.waits)
        assert calls[0] == 1
        assert caplog.text.count("internal error in a process-wide callback") == 1
        client = tunnel.client(f"-L 0:127.0.0.1:{echo.port}")
        assert ping_pong(tunnel.local_port(client), 50) == expected_digest(50)
    finally:
        tunnel.close()
        loop.close()


def test_a_bug_in_the_planes_wait_is_logged_and_the_loop_goes_on(caplog):
    reactor = Reactor()
    try:
        hub = plane_module.hub_for(reactor)
        assert hub is not None and hub.waits
        real_wait, failures = hub.wait, [0]

        def fails_once(timeout: float | None) -> bool:
            if not failures[0]:
                failures[0] += 1
                raise RuntimeError("planted")
            return real_wait(timeout)

        hub.wait = fails_once  # type: ignore[method-assign]
        ran: list[bool] = []
        reactor.call_later(0.02, lambda: ran.append(True), PROCESS)
        reactor.call_later(0.05, reactor.stop, PROCESS)
        with caplog.at_level(logging.ERROR, logger="reactor_mux"):
            reactor.run()
        assert failures == [1] and ran == [True]
        assert "internal error in a process-wide callback" in caplog.text
    finally:
        reactor.close()
