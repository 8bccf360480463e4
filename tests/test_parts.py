"""The channel's parts on their own, with a fake clock and no sockets:
liveness (handshake deadline, keepalive), the buffer cap, and the bookkeeping
of connects made for the peer's SYNs."""

from __future__ import annotations

import itertools
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
        self,
        clock: FakeClock,
        heard_at: Callable[[], float] | None = None,
        patient: bool = False,
        **settings: float,
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
            heard_at=heard_at,
            patient=patient,
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
    assert [at for at, _ in watched.pings] == [15.0, 30.0]  # one per interval of silence
    assert [token for _, token in watched.pings] == [1, 2]
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
    """The plane reads the channel in C and stamps its last read: the tick reads
    the stamp, and the next tick is when the silence would reach the interval."""
    clock = FakeClock()
    read_at = [0.0]
    watched = Watched(clock, heard_at=lambda: read_at[0])
    watched.liveness.handshake_done()
    for _ in range(100):
        clock.advance(7)
        read_at[0] = clock.now
    assert watched.pings == [] and watched.gave_up == []
    # Each tick is 15 s after the read before it, which (reads every 7 s) is 1 s
    # before the tick: one tick per 14 s, not one per half interval as before.
    assert clock.fired <= 700 / 14, "a talking peer costs about one tick per interval"
    clock.advance(45.5)  # the reads stop: silence, as ever
    grid = 15.0 / 1024
    first_ping = watched.pings[0][0]
    assert 700 + 15 <= first_ping < 700 + 15 + grid
    assert watched.gave_up and watched.codes == [ErrorCode.KEEPALIVE_TIMEOUT]
    assert 745.0 <= watched.gave_up[0][0] < 745.0 + grid


def test_a_peer_that_answers_each_ping_costs_one_tick_and_one_ping_per_interval():
    """An idle channel whose peer only answers our PINGs: the answer, a moment
    after the PING, does not push the next PING an interval past itself."""
    clock = FakeClock()
    read_at = [0.0]
    quiet: list[float] = []
    pings: list[float] = []

    def send_ping(token: int) -> None:
        pings.append(clock.now)
        read_at[0] = clock.now + 0.002  # the PONG's read (taken as if it came now)

    liveness = Liveness(clock, Owner(), handshake_timeout=10.0, keepalive_interval=15.0,
                        dead_after=45.0, send_ping=send_ping,
                        give_up=lambda reason, code: pytest.fail(reason),
                        heard_at=lambda: read_at[0],
                        quiet=lambda: quiet.append(clock.now))  # fmt: skip
    liveness.start()
    liveness.handshake_done()
    clock.advance(600)
    assert pings == [15.0 * n for n in range(1, 41)]
    assert clock.fired == 40, "one tick per PING: none to notice the answer"
    assert quiet == pings, "each tick finds the channel quiet: a PONG is no burst"


def test_with_both_sides_keeping_alive_only_the_clients_pings_run():
    """Both sides at the default interval, nothing else on the channel: the
    server, patient, always hears the client's PING before its own is due, so
    the channel carries one PING and one PONG per interval, not two of each."""
    clock = FakeClock()
    read_at = {"client": 0.0, "server": 0.0}
    pings: dict[str, list[float]] = {"client": [], "server": []}

    quiet: dict[str, int] = {"client": 0, "server": 0}

    def side(name: str, peer: str, *, patient: bool) -> Liveness:
        def send_ping(token: int) -> None:
            pings[name].append(clock.now)
            read_at[peer] = clock.now  # the peer reads our PING
            read_at[name] = clock.now + 0.001  # and we read its PONG

        return Liveness(clock, Owner(), handshake_timeout=10.0, keepalive_interval=15.0,
                        dead_after=45.0, send_ping=send_ping,
                        give_up=lambda reason, code: pytest.fail(reason),
                        heard_at=lambda: read_at[name], patient=patient,
                        quiet=lambda: quiet.update({name: quiet[name] + 1}))  # fmt: skip

    client, server = side("client", "server", patient=False), side("server", "client", patient=True)
    for liveness in (server, client):
        liveness.start()
        liveness.handshake_done()
    clock.advance(600)
    assert pings["client"] == [15.0 * n for n in range(1, 41)]
    assert pings["server"] == []
    # Both give back their buffers once an interval: the PINGs are no burst.
    assert quiet["client"] == 40 and quiet["server"] >= 35, quiet


def test_a_patient_side_still_pings_in_time_for_a_short_keepalive_timeout():
    """--keepalive-interval 10 --keepalive-timeout 11: 1.125 intervals would be past
    the timeout, so the patient side pings halfway between, and an answering peer
    that pings less often itself is kept."""
    clock = FakeClock()
    read_at = [0.0]
    pings: list[float] = []

    def send_ping(token: int) -> None:
        pings.append(clock.now)
        read_at[0] = clock.now + 0.01  # the PONG

    liveness = Liveness(clock, Owner(), handshake_timeout=10.0, keepalive_interval=10.0,
                        dead_after=11.0, send_ping=send_ping,
                        give_up=lambda reason, code: pytest.fail(reason),
                        heard_at=lambda: read_at[0], patient=True)  # fmt: skip
    liveness.start()
    liveness.handshake_done()
    clock.advance(100)
    assert pings[0] == 10.5 and len(pings) == 9
    assert all(10.5 <= b - a < 10.5 + 2 * 10.5 / 1024 for a, b in itertools.pairwise(pings))


def test_a_patient_side_alone_pings_after_an_interval_and_an_eighth():
    clock = FakeClock()
    watched = Watched(clock, patient=True)
    watched.liveness.handshake_done()
    clock.advance(40)
    assert [at for at, _ in watched.pings] == [16.875, 33.75]


def test_a_tick_that_finds_nothing_read_says_the_channel_is_quiet():
    """The channel gives its buffers back on the keepalive's own tick (no timer of its
    own): on each tick that finds nothing read for the last 1/64 interval."""
    clock = FakeClock()
    read_at = [0.0]
    quiet: list[float] = []
    liveness = Liveness(clock, Owner(), handshake_timeout=10.0, keepalive_interval=15.0,
                        dead_after=45.0, send_ping=lambda token: None,
                        give_up=lambda reason, code: None, heard_at=lambda: read_at[0],
                        quiet=lambda: quiet.append(clock.now))  # fmt: skip
    liveness.start()
    liveness.handshake_done()
    for _ in range(300):  # busy: a read every 0.1 s, within the slack of every tick
        clock.advance(0.1)
        read_at[0] = clock.now
    assert quiet == []
    clock.advance(40.0)
    # The ticks of the silence (15 s after the last busy read, then each interval).
    assert len(quiet) == 2 and 44.7 < quiet[0] <= 45.0 and quiet[1] - quiet[0] == 15.0
    read_at[0] = clock.now  # 70: one read, then silence again
    clock.advance(20.0)
    assert len(quiet) == 4 and 85.0 <= quiet[3] < 85.0 + 15.0 / 1024, quiet


def test_while_our_reads_are_paused_the_silence_clock_stops_and_we_ping():
    clock = FakeClock()
    watched = Watched(clock)
    watched.liveness.handshake_done()
    watched.liveness.reads_paused = True
    clock.advance(300)
    assert watched.gave_up == []
    assert len(watched.pings) == 20  # every interval, so the peer knows we are alive
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
