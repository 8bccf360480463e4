"""The drain at shutdown (reactor_mux/tunnel/drain.py) with a fake clock: streams first,
then BYE and the peers' close, or the timeout."""

from __future__ import annotations

import logging

from fakeclock import FakeClock

from reactor_mux.tunnel.drain import DRAIN_POLL, wait_for_streams


class Channel:
    """What a drain sees of a channel: its streams, its BYE, whether it closed."""

    def __init__(self, streams: int) -> None:
        self.streams = set(range(streams))
        self.said_goodbye = False
        self.closed = False

    @property
    def busy(self) -> bool:
        return bool(self.streams)

    def say_goodbye(self) -> None:
        if not self.streams:
            self.said_goodbye = True


def test_the_drain_waits_for_streams_then_for_the_peer_to_close_after_bye():
    clock = FakeClock()
    channel = Channel(streams=2)
    done: list[float] = []
    wait_for_streams(clock, lambda: [channel], 30.0, lambda: done.append(clock.now))
    clock.advance(1.0)
    assert not channel.said_goodbye and done == []
    channel.streams.clear()
    clock.advance(DRAIN_POLL)
    assert channel.said_goodbye and done == []  # BYE sent: the peer closes next
    channel.closed = True
    clock.advance(DRAIN_POLL)
    assert len(done) == 1


def test_the_drain_gives_up_at_its_timeout_and_says_how_many_streams_it_cut(caplog):
    clock = FakeClock()
    channels = [Channel(streams=3), Channel(streams=0)]
    done: list[float] = []
    with caplog.at_level(logging.INFO, logger="reactor_mux"):
        wait_for_streams(clock, lambda: channels, 10.0, lambda: done.append(clock.now))
        clock.advance(9.9)
        assert done == []
        assert "draining: 3 stream(s) still open, 5s left" in caplog.text
        clock.advance(0.2)
    assert len(done) == 1 and 10.0 <= done[0] <= 10.1
    assert "drain timeout: cutting 3 open stream(s) on 1 channel(s)" in caplog.text


def test_cancel_stops_the_wait():
    clock = FakeClock()
    done: list[float] = []
    cancel = wait_for_streams(clock, lambda: [Channel(streams=1)], 10.0,
                              lambda: done.append(clock.now))  # fmt: skip
    cancel()
    clock.advance(20.0)
    assert done == []
