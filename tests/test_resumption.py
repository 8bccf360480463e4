"""The resume part of a channel (reactor_mux/tunnel/resumption.py) with a fake clock and
real sessions: barrier ticks, the resume window, and the session's side of a
reconnect and of a handover."""

from __future__ import annotations

from fakeclock import FakeClock

from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import ChannelState, Role
from reactor_mux.tunnel.resumption import BARRIER_INTERVAL, Resumption

CONFIG = SessionConfig(resume=True)


def resumable_pair() -> tuple[Session, Session]:
    client = Session(Role.CLIENT, CONFIG, client_id="resumption-test")
    server = Session(Role.SERVER, CONFIG)
    for _ in range(4):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    assert client.resumable and server.resumable
    return client, server


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.flushes = 0
        self.expired: list[tuple[str, ErrorCode]] = []

    def flush(self) -> None:
        self.flushes += 1

    def expire(self, reason: str, code: ErrorCode) -> None:
        self.expired.append((reason, code))


def part(clock: FakeClock, session: Session, timeout: float = 30.0) -> tuple[Resumption, Recorder]:
    recorder = Recorder()
    resumption = Resumption(clock, recorder, session, resume_timeout=timeout,
                            flush=recorder.flush, expired=recorder.expire)  # fmt: skip
    return resumption, recorder


def test_a_quiet_channel_that_sent_something_gets_a_barrier_on_a_tick():
    clock = FakeClock()
    client, _server = resumable_pair()
    resumption, recorder = part(clock, client)
    resumption.start()
    client.request_connect(1, "localhost", 80)
    client.data_to_send()  # one send since the last tick
    resumption.wake()  # as the channel's flush does after a send
    clock.advance(BARRIER_INTERVAL)  # sends happened: not quiet yet
    assert recorder.flushes == 0
    clock.advance(BARRIER_INTERVAL)  # none since: the barrier PING is queued
    assert recorder.flushes == 1 and b"PING 2147483649" in client.data_to_send()


def test_no_barrier_ticks_where_the_session_can_never_resume():
    clock = FakeClock()
    resumption, _recorder = part(clock, Session(Role.CLIENT, SessionConfig()))
    resumption.start()
    assert clock.pending == 0


def test_the_resume_window_opens_at_the_first_cut_and_closes_once():
    clock = FakeClock()
    client, _server = resumable_pair()
    resumption, recorder = part(clock, client, timeout=30.0)
    clock.advance(5.0)
    assert resumption.suspend() is True
    assert resumption.suspended and resumption.suspended_at == 5.0
    assert resumption.deadline == 35.0 and client.state is ChannelState.DISCONNECTED
    clock.advance(10.0)
    resumption.reconnect()  # a failed attempt breaks a connection again: not a first cut
    assert resumption.suspend() is False and resumption.suspended_at == 5.0
    clock.advance(19.9)
    assert recorder.expired == []
    clock.advance(0.2)
    assert recorder.expired == [("resume window expired (30s)", ErrorCode.RESUME_EXPIRED)]


def test_a_resume_closes_the_window_and_stop_cancels_every_timer():
    clock = FakeClock()
    client, _server = resumable_pair()
    resumption, recorder = part(clock, client)
    resumption.start()
    resumption.suspend()
    resumption.resumed()
    assert not resumption.suspended and resumption.deadline is None
    clock.advance(60.0)
    assert recorder.expired == []
    resumption.stop()
    assert clock.pending == 0


def test_an_idle_pair_stops_ticking_once_all_it_sent_is_confirmed():
    """The barrier tick runs only while something sent waits for a barrier: two idle
    resumable sessions go silent, with no timer, after their barriers are answered
    (a barrier's own PING and PONG confirm nothing new); a send starts it again."""
    clock = FakeClock()
    client, server = resumable_pair()
    sides = []
    idle: list[Session] = []
    for session in (client, server):
        recorder = Recorder()
        resumption = Resumption(clock, recorder, session, resume_timeout=30.0,
                                flush=recorder.flush, expired=recorder.expire,
                                gone_idle=lambda session=session: idle.append(session))  # fmt: skip
        sides.append(resumption)
        resumption.start()

    def shuttle() -> int:
        """Both ways until nothing moves, waking the side that sent (the channel's flush)."""
        moved = 0
        while True:
            out, back = client.data_to_send(), b""
            if out:
                sides[0].wake()
                server.receive_data(out)
            back = server.data_to_send()
            if back:
                sides[1].wake()
                client.receive_data(back)
            if not out and not back:
                return moved
            moved += len(out) + len(back)

    client.request_connect(1, "localhost", 80)
    shuttle()
    for _ in range(12):
        clock.advance(BARRIER_INTERVAL)
        shuttle()
    assert clock.pending == 0 and client in idle
    assert not client.confirming() and not server.confirming()
    clock.advance(600.0)
    assert shuttle() == 0  # silent: nothing to confirm, no tick to send a barrier
    client.request_connect(2, "localhost", 81)  # a send: the tick runs until confirmed
    shuttle()
    assert clock.pending == 1 and client.confirming()
    barriers = 0
    for _ in range(12):
        clock.advance(BARRIER_INTERVAL)
        out = client.data_to_send()
        barriers += out.count(b"PING 2147")
        server.receive_data(out)
        shuttle()
    assert barriers == 1 and clock.pending == 0
