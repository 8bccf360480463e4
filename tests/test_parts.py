"""The channel's parts on their own, with a fake clock and no sockets:
liveness (handshake deadline, keepalive), the buffer cap, and the bookkeeping
of connects made for the peer's SYNs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from fakeclock import FakeClock
from inprocess import Owner

from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.tunnel.buffercap import BufferCap
from reactor_mux.tunnel.liveness import Liveness
from reactor_mux.tunnel.peerconnect import PeerConnects

pytestmark = pytest.mark.codec_independent


# ------------------------------------------------------------------ liveness


class Watched:
    """What a liveness reports: pings sent, and the reason it gave up."""

    def __init__(
        self, clock: FakeClock, activity: Callable[[], int] | None = None, **settings: float
    ) -> None:
        self.pings: list[tuple[float, int]] = []
        self.gave_up: list[tuple[float, str]] = []
        self.codes: list[ErrorCode] = []
        values = {"handshake_timeout": 10.0, "keepalive_interval": 15.0, "dead_after": 45.0}
        values.update(settings)
        self.liveness = Liveness(
            clock,
            Owner(),
            send_ping=lambda token: self.pings.append((clock.now, token)),
            give_up=self._gave_up,
            activity=activity,
            **values,
        )
        self.liveness.start()
        self._clock = clock

    def _gave_up(self, reason: str, code: ErrorCode) -> None:
        self.gave_up.append((self._clock.now, reason))
        self.codes.append(code)


def test_a_peer_that_never_says_hello_is_given_up():
    clock = FakeClock()
    watched = Watched(clock)
    clock.advance(9.9)
    assert watched.gave_up == []
    clock.advance(0.2)
    assert watched.gave_up == [(10.0, "handshake timed out after 10s (the peer sent nothing)")]
    assert watched.codes == [ErrorCode.NO_ANSWER]  # not even a byte: told as a timeout
    assert clock.pending == 0, "nothing more is scheduled after giving up"


def test_hello_in_time_cancels_the_deadline():
    clock = FakeClock()
    watched = Watched(clock)
    clock.advance(5)
    watched.liveness.heard()
    watched.liveness.handshake_done()
    clock.advance(10)
    assert watched.gave_up == []


def test_silence_brings_pings_then_the_end():
    clock = FakeClock()
    watched = Watched(clock)
    watched.liveness.handshake_done()
    clock.advance(44.9)
    assert [at for at, _ in watched.pings] == [15.0, 22.5, 30.0, 37.5]
    assert [token for _, token in watched.pings] == [1, 2, 3, 4]
    assert watched.gave_up == []
    clock.advance(0.2)
    assert watched.gave_up == [(45.0, "no traffic from the peer for 45.0s (keepalive timeout)")]
    assert watched.codes == [ErrorCode.KEEPALIVE_TIMEOUT]
    assert clock.pending == 0


def test_traffic_keeps_the_peer_alive_without_pings():
    clock = FakeClock()
    watched = Watched(clock)
    watched.liveness.handshake_done()
    for _ in range(100):
        clock.advance(7)
        watched.liveness.heard()
    assert watched.pings == [] and watched.gave_up == []


def test_reads_the_data_plane_made_keep_the_peer_alive():
    """The plane reads the channel in C and only counts its reads: a count that
    moved since the last tick is traffic heard after that tick."""
    clock = FakeClock()
    reads = [0]
    watched = Watched(clock, activity=lambda: reads[0])
    watched.liveness.handshake_done()
    for _ in range(100):
        clock.advance(7)
        reads[0] += 1
    assert watched.pings == [] and watched.gave_up == []
    clock.advance(45)  # the count stops: silence, as ever
    assert [at for at, _ in watched.pings][:1] == [712.5]
    assert watched.gave_up and watched.codes == [ErrorCode.KEEPALIVE_TIMEOUT]


def test_a_tick_that_finds_nothing_read_says_the_channel_is_quiet():
    """The channel gives its buffers back on the keepalive's own tick (no timer of its
    own): on each tick whose read count did not move, and only then."""
    clock = FakeClock()
    reads = [0]
    quiet: list[float] = []
    liveness = Liveness(clock, Owner(), handshake_timeout=10.0, keepalive_interval=15.0,
                        dead_after=45.0, send_ping=lambda token: None,
                        give_up=lambda reason, code: None, activity=lambda: reads[0],
                        quiet=lambda: quiet.append(clock.now))  # fmt: skip
    liveness.start()
    liveness.handshake_done()
    for _ in range(4):  # busy: a read before every tick
        reads[0] += 1
        clock.advance(7.5)
    assert quiet == []
    clock.advance(15.0)
    assert quiet == [37.5, 45.0]


def test_while_our_reads_are_paused_the_silence_clock_stops_and_we_ping():
    clock = FakeClock()
    watched = Watched(clock)
    watched.liveness.handshake_done()
    watched.liveness.reads_paused = True
    clock.advance(300)
    assert watched.gave_up == []
    assert len(watched.pings) == 40  # every tick, so the peer knows we are alive
    watched.liveness.reads_paused = False
    clock.advance(45.1)
    assert watched.gave_up and watched.gave_up[0][0] == 345.0


def test_stop_cancels_everything():
    clock = FakeClock()
    watched = Watched(clock)
    watched.liveness.stop()
    clock.advance(1000)
    assert watched.pings == [] and watched.gave_up == [] and clock.pending == 0


# ------------------------------------------------------------------ buffer cap


class Storage:
    """Ring storage as a number: some of it idle (in empty rings)."""

    def __init__(self) -> None:
        self.busy = 0
        self.idle = 0
        self.changes: list[bool] = []

    def held(self) -> int:
        return self.busy + self.idle

    def release_idle(self) -> None:
        self.idle = 0

    def cap(self, limit: int) -> BufferCap:
        return BufferCap(
            limit,
            held=self.held,
            release_idle=self.release_idle,
            on_change=self.changes.append,
            pause_message="holds %d bytes (cap %d): pausing",
            resume_message="resuming",
        )


def test_idle_storage_is_given_back_before_pausing():
    storage = Storage()
    cap = storage.cap(1000)
    storage.busy, storage.idle = 600, 500
    cap.check()
    assert not cap.paused and storage.idle == 0 and storage.changes == []


def test_the_cap_pauses_at_the_limit_and_resumes_at_half(caplog):
    caplog.set_level(logging.INFO, logger="reactor_mux")
    storage = Storage()
    cap = storage.cap(1000)
    storage.busy = 999
    cap.check()
    assert not cap.paused
    storage.busy = 1000
    cap.check()
    assert cap.paused and storage.changes == [True]
    for busy in (900, 700, 501):
        storage.busy = busy
        cap.check()
        assert cap.paused, "resumed above half the cap"
    storage.busy = 500
    cap.check()
    assert not cap.paused and storage.changes == [True, False]
    cap.check()
    assert storage.changes == [True, False], "no repeated transitions"
    assert [r.getMessage() for r in caplog.records] == [
        "holds 1000 bytes (cap 1000): pausing",
        "resuming",
    ]


# ------------------------------------------------------------- peer connects


class FakeAttempt:
    def __init__(self, host: str, port: int, done: Callable[..., None], owner: object) -> None:
        self.host, self.port, self.done, self.owner = host, port, done, owner
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeSocket:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Connects:
    def __init__(self) -> None:
        self.attempts: list[FakeAttempt] = []
        self.results: list[tuple[int, str, object, str | None]] = []
        self.owner = Owner("channel")
        self.connects = PeerConnects(self._connect, self._on_result, self.owner)

    def _connect(
        self, host: str, port: int, done: Callable[..., None], owner: object
    ) -> FakeAttempt:
        attempt = FakeAttempt(host, port, done, owner)
        self.attempts.append(attempt)
        return attempt

    def _on_result(self, stream_id: int, address: str, sock: object, error: str | None) -> None:
        self.results.append((stream_id, address, sock, error))


def test_each_connect_is_reported_once_with_its_stream():
    c = Connects()
    c.connects.start(2, "db", 5432)
    c.connects.start(4, "::1", 80)
    assert len(c.connects) == 2
    sock = FakeSocket()
    c.attempts[1].done(None, "connection refused")
    c.attempts[0].done(sock, None)
    c.attempts[0].done(FakeSocket(), None)  # a second report is ignored
    assert c.results == [(4, "[::1]:80", None, "connection refused"), (2, "db:5432", sock, None)]
    assert len(c.connects) == 0
    c.connects.start(6, "db", 1)
    with pytest.raises(ValueError):
        c.connects.start(6, "db", 1)


def test_a_cancelled_connect_reports_nothing_and_drops_a_late_socket():
    c = Connects()
    c.connects.start(2, "db", 5432)
    c.connects.start(4, "db", 5432)
    c.connects.cancel(2)
    assert c.attempts[0].cancelled and not c.attempts[1].cancelled
    late = FakeSocket()
    c.attempts[0].done(late, None)
    assert c.results == [] and late.closed
    c.connects.cancel_all()
    assert c.attempts[1].cancelled and len(c.connects) == 0


def test_a_bug_while_connecting_refuses_the_stream_and_one_after_closes_the_channel():
    c = Connects()
    c.connects.start(2, "db", 5432)
    pending = c.attempts[0].owner
    pending.close_after_bug()  # type: ignore[attr-defined]
    assert c.attempts[0].cancelled
    assert c.results == [(2, "db:5432", None, Failure(FailureClass.FAILED, "internal error"))]
    assert c.owner.closed_after_bug == 0
    pending.close_after_bug()  # type: ignore[attr-defined]  # already answered: the channel's bug
    assert c.owner.closed_after_bug == 1
