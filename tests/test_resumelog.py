"""The resume log and the replay (protocol/resumelog.py, protocol/replay.py) on
their own, over a real output queue: what a barrier frees, what a tombstone
keeps, what giving up releases, and how one stream is reconciled with the
peer's table row."""

from __future__ import annotations

import pytest

from reactor_mux import codec
from reactor_mux.protocol import resumelog
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.replay import UNSEEN, PeerTable, Row, replay_stream, table_rows
from reactor_mux.protocol.resumelog import BARRIER_EVERY, BARRIER_TOKEN, UNCOUNTED_SENDS, ResumeLog
from reactor_mux.protocol.stream import Stream
from reactor_mux.protocol.streamstate import StreamState

FRAME = 1024


def queue() -> codec.OutboundQueueAPI:
    return codec.OutboundQueue(FRAME, 1 << 16, 1 << 20, True)


def stream_with_bytes(output: codec.OutboundQueueAPI, stream_id: int, count: int,
                      state: StreamState = StreamState.OPEN) -> Stream:  # fmt: skip
    """A stream that wrote ``count`` bytes, all of them sent (and so retained)."""
    stream = Stream(stream_id, state, 1, 1 << 20, 1 << 16)
    stream.slot = output.open(stream_id, 1 << 20)
    done = 0
    while done < count:
        views = output.reserve(stream.slot, count - done)
        filled = sum(len(view) for view in views)
        for view in views:
            view[:] = b"x" * len(view)
        del views
        output.commit(stream.slot, filled)
        done += filled
    stream.written = count
    while output.has_output():
        output.fill()
        output.sent(len(output.pending()))
    return stream


def test_a_barrier_frees_the_log_and_the_retained_bytes_sent_before_it():
    output = queue()
    stream = stream_with_bytes(output, 1, 3000)
    log = ResumeLog(keeping=True)
    for n in range(3):
        log.record(b"command %d" % n)
    token = log.open_barrier([stream], output)
    assert token & BARRIER_TOKEN
    log.record(b"after the barrier")
    assert not log.answered(token + 1, output)  # not ours: nothing freed
    assert output.retained(stream.slot) == 3000 and log.end == 4
    assert log.answered(token, output)
    assert log.base == 3 and log.bytes == len(b"after the barrier")
    assert output.retained(stream.slot) == 0 and stream.released == 3000
    assert log.barrier is None
    assert list(log.since(3)) == [b"after the barrier"]


def test_the_peer_cannot_ask_for_commands_already_confirmed_or_never_sent():
    log = ResumeLog(keeping=True)
    log.record(b"a")
    log.answered(log.open_barrier([], queue()), queue())
    log.record(b"b")
    assert list(log.since(1)) == [b"b"] and list(log.since(2)) == []
    for count in (0, 3):
        with pytest.raises(ProtocolError, match=r"keeps numbers 1\.\.2"):
            log.since(count)


def test_a_tombstone_lives_until_a_barrier_sent_after_its_end_is_answered():
    output = queue()
    stream = stream_with_bytes(output, 1, 500, StreamState.CLOSED)
    log = ResumeLog(keeping=True)
    early = log.open_barrier([], output)
    log.bury(stream)  # it closed after the barrier left: that PONG proves nothing
    log.answered(early, output)
    assert 1 in log.tombstones
    log.answered(log.open_barrier([], output), output)
    assert not log.tombstones and stream.slot == -1


def test_a_fin_sent_again_is_confirmed_by_a_later_barrier_or_closed_when_giving_up():
    output = queue()
    log = ResumeLog(keeping=True)
    log.bury(stream_with_bytes(output, 1, 10, StreamState.CLOSED))
    log.fins_again.add(1)
    assert log.open_barrier([], output) and log.barrier is not None
    assert log.barrier.tombstones == []  # its FIN is not out yet
    assert log.fin_resent(1, output) is True and 1 in log.tombstones
    log.bury(stream_with_bytes(output, 3, 10, StreamState.CLOSED))
    log.fins_again.add(3)
    log.give_up("test", [], output)
    assert 3 in log.tombstones  # its FIN is still on its way: it closes after it
    assert log.fin_resent(3, output) is False and 3 not in log.tombstones


def test_giving_up_frees_the_log_and_every_retained_byte():
    output = queue()
    stream = stream_with_bytes(output, 1, 2000)
    log = ResumeLog(keeping=True)
    log.record(b"x" * 100)
    log.open_barrier([stream], output)
    log.give_up("the peer keeps no sessions", [stream], output)
    assert not log.keeping and log.lost == "the peer keeps no sessions"
    assert log.bytes == 0 and log.barrier is None
    assert output.retained(stream.slot) == 0 and stream.released == 2000


def test_the_log_names_its_limit_when_the_peer_confirms_nothing(monkeypatch):
    monkeypatch.setattr(resumelog, "MAX_RESUME_LOG", 100)
    log = ResumeLog(keeping=True)
    log.record(b"x" * 100)
    assert log.overflow is None
    log.record(b"x")
    assert log.overflow == "the peer left over 100 bytes of commands unconfirmed"


def test_barriers_go_on_a_quiet_tick_or_every_so_many_sends():
    log = ResumeLog(keeping=True)
    assert not log.quiet()  # nothing sent
    log.count_send()
    assert not log.quiet()  # sends since the last tick: not quiet yet
    assert log.quiet()  # none since: quiet
    log.open_barrier([], queue())  # counts from zero again
    assert not any(log.count_send() for _ in range(BARRIER_EVERY - 1))
    assert log.count_send()
    log.wanted = True
    log.open_barrier([], queue())
    assert not log.wanted
    log.wanted = True  # asked for (memory is tight): due on the next send
    assert log.count_send()


def test_the_data_plane_reports_its_sends_as_often_as_the_barriers_need():
    log = ResumeLog(keeping=True)
    assert log.sends_before_barrier() == BARRIER_EVERY
    assert not log.count_send(BARRIER_EVERY - 10)  # a report of many sends at once
    assert log.sends_before_barrier() == 10
    assert log.count_send(10)
    assert log.sends_before_barrier() == 1  # due (a barrier may still be out): report each
    log.open_barrier([], queue())
    assert log.sends_before_barrier() == BARRIER_EVERY
    log.wanted = True
    assert log.sends_before_barrier() == 1
    assert ResumeLog(keeping=False).sends_before_barrier() == UNCOUNTED_SENDS


def test_the_table_reports_received_bytes_and_fins():
    open_stream = Stream(1, StreamState.OPEN, 1, 1, 1)
    open_stream.received = 70
    ended = Stream(3, StreamState.HALF_CLOSED_REMOTE, 1, 1, 1)
    ended.received = 5
    assert table_rows([open_stream, ended]) == [(1, 70, 0), (3, 5, 1)]
    table = PeerTable()
    table.add(1, 70, False, kept=True)
    table.add(9, 1, True, kept=False)  # a stream we closed: not kept
    assert table.rows == {1: Row(70, False)}
    with pytest.raises(ProtocolError, match="RECEIVED twice for stream 1"):
        table.add(1, 70, False, kept=True)


def test_replay_rewinds_to_what_the_peer_received():
    output = queue()
    stream = stream_with_bytes(output, 1, 3000)
    log = ResumeLog(keeping=True)
    assert replay_stream(stream, Row(1200, False), output, log) == 1800
    assert output.buffered(stream.slot) == 1800 and stream.released == 1200


def test_replay_refuses_a_peer_that_claims_bytes_never_sent_or_already_released():
    output = queue()
    stream = stream_with_bytes(output, 1, 3000)
    log = ResumeLog(keeping=True)
    with pytest.raises(ProtocolError, match="the peer has 3001 bytes, this side sent 3000"):
        replay_stream(stream, Row(3001, False), output, log)
    stream.released = 1000
    with pytest.raises(ProtocolError, match="kept those after 1000"):
        replay_stream(stream, Row(999, False), output, log)
    silent = Stream(3, StreamState.OPEN, 1, 1, 1)
    with pytest.raises(ProtocolError, match="which sent none"):
        replay_stream(silent, Row(1, False), output, log)
    assert replay_stream(silent, UNSEEN, output, log) == 0


def test_replay_sends_a_lost_fin_again_and_ends_a_tombstone_the_peer_has_whole():
    output = queue()
    log = ResumeLog(keeping=True)
    half = stream_with_bytes(output, 1, 100, StreamState.HALF_CLOSED_LOCAL)
    assert replay_stream(half, Row(100, False), output, log) == 0
    assert 1 in log.fins_again  # our FIN never arrived: it goes again
    done = stream_with_bytes(output, 3, 100, StreamState.CLOSED)
    log.bury(done)
    assert replay_stream(done, Row(100, True), output, log) == 0
    assert 3 not in log.tombstones and done.slot == -1
    gone = stream_with_bytes(output, 5, 100, StreamState.CLOSED)
    log.bury(gone)
    assert replay_stream(gone, None, output, log) == 0  # the peer closed it: all arrived
    assert 5 not in log.tombstones
