"""Is the peer still there?  The handshake deadline and the keepalive.

A new channel must finish the HELLO exchange within ``handshake_timeout``.
After that, the keepalive looks once per ``keepalive_interval`` at when the
peer was last heard: silent for the interval, we send PING (any answer, or any
other traffic, counts); silent for ``dead_after``, we give the channel up even
if TCP has not noticed (a frozen or unplugged peer).  The next look is when the
silence would reach the interval, so a channel whose peer talks costs one tick
per interval, and one PING per interval of silence.  While the channel has
paused its own reads (its inbound buffers are full) the peer's silence says
nothing, so the clock stops and we keep sending PING, which tells the peer
that we are alive.

The server is patient: it waits 1/8 of an interval longer before its PING
(less where ``dead_after`` leaves no room for that: halfway to it at most), so
that where the client keeps the channel alive too (at the same interval, the
default) the client's PINGs are the ones that run, one per interval rather
than one from each side.  Ticks fall on a grid of 1/1024 of the interval, so
that ten thousand channels' keepalives share wake-ups of the loop instead of
one each (issue 26).

The class knows a clock and two callbacks, nothing about sockets, so it is
tested with a fake clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.protocol.errorcodes import ErrorCode


class Clock(Protocol):
    """The part of the reactor that liveness uses."""

    def time(self) -> float: ...

    def call_later(
        self, delay: float, callback: Callable[[], None], owner: Owner
    ) -> Cancellable: ...


GRID_PER_INTERVAL = 1024
"""Ticks fall on multiples of interval/1024 (15 ms at the default): ten
thousand channels' ticks share ~70 wake-ups a second, each short enough
(~10 ticks) not to hold up a busy channel's round trip."""

SLACK_PER_INTERVAL = 64
"""A silence 1/64 of the interval short of it counts as the interval: the PONG
that came right after our PING does not put the next PING an interval past it.
And a tick that finds nothing read for that long finds the channel quiet."""

PATIENCE = 1.125
"""A patient side (the server) pings after this many intervals of silence."""

SILENT_PEER = "the peer sent nothing"
"""Added to a handshake timeout when not one byte arrived: a reactor-mux peer
sends its HELLO at once, so such a peer is most likely something else."""


class Liveness:
    """The handshake deadline and keepalive of one channel."""

    def __init__(
        self,
        clock: Clock,
        owner: Owner,
        *,
        handshake_timeout: float,
        keepalive_interval: float,
        dead_after: float,
        send_ping: Callable[[int], None],
        give_up: Callable[[str, ErrorCode], None],
        heard_at: Callable[[], float] | None = None,
        quiet: Callable[[], None] | None = None,
        patient: bool = False,
    ) -> None:
        """``heard_at``: when the channel last read anything (Python's reads and the
        data plane's, on this clock).  ``quiet``: called on each tick that finds
        nothing read for the last 1/64 of the interval, which a keepalive's few
        bytes leave true (the channel gives back what a burst grew: no timer of
        its own for that).  ``patient``: wait PATIENCE intervals of silence
        before a PING (the server)."""
        self._clock = clock
        self._owner = owner
        self._handshake_timeout = handshake_timeout
        wait = keepalive_interval
        if patient:  # and an answer still has half the time left before dead_after
            wait = max(wait, min(wait * PATIENCE, (keepalive_interval + dead_after) / 2))
        self._interval = wait
        """The silence before our PING."""
        self._grid = self._interval / GRID_PER_INTERVAL
        self._slack = self._interval / SLACK_PER_INTERVAL
        self._dead_after = dead_after
        self._send_ping = send_ping
        self._give_up = give_up
        self._handshake_timer: Cancellable | None = None
        self._tick_timer: Cancellable | None = None
        self._ping_token = 0
        self.last_heard = clock.time()
        self._created = self.last_heard
        self._heard_at = heard_at
        self._quiet = quiet
        self.reads_paused = False
        """Set by the channel while it does not read: the peer's silence is ours."""

    def start(self) -> None:
        self._handshake_timer = self._clock.call_later(
            self._handshake_timeout, self._handshake_expired, self._owner
        )
        self._schedule_tick()

    def heard(self) -> None:
        """Traffic arrived from the peer."""
        self.last_heard = self._clock.time()

    def handshake_done(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def stop(self) -> None:
        self.handshake_done()
        if self._tick_timer is not None:
            self._tick_timer.cancel()
            self._tick_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self.stop()
        silent = self.last_heard == self._created and (
            self._heard_at is None or self._heard_at() <= self._created
        )
        self._give_up(f"handshake timed out after {self._handshake_timeout:g}s"
                      + (f" ({SILENT_PEER})" if silent else ""),
                      ErrorCode.NO_ANSWER if silent else ErrorCode.HANDSHAKE_TIMEOUT)  # fmt: skip

    def _schedule_tick(self, when: float | None = None) -> None:
        """The next tick at ``when`` (default: an interval from now), on the grid."""
        now = self._clock.time()
        due = now + self._interval if when is None else when
        due = math.ceil(due / self._grid) * self._grid
        self._tick_timer = self._clock.call_later(due - now, self._tick, self._owner)

    def _tick(self) -> None:
        self._tick_timer = None
        now = self._clock.time()
        if self._heard_at is not None:
            heard = self._heard_at()
            if heard > self.last_heard:
                self.last_heard = heard
        slack = self._slack
        if self._quiet is not None and not self.reads_paused and now - self.last_heard >= slack:
            self._quiet()
        if self.reads_paused:
            self.last_heard = now
        idle = now - self.last_heard
        if idle >= self._dead_after:
            self.stop()
            self._give_up(
                f"no traffic from the peer for {idle:.1f}s (keepalive timeout)",
                ErrorCode.KEEPALIVE_TIMEOUT,
            )
            return
        if idle >= self._interval - slack or self.reads_paused:
            self._ping_token += 1
            self._send_ping(self._ping_token)
            due = now + self._interval
        else:
            due = self.last_heard + self._interval
        self._schedule_tick(min(due, self.last_heard + self._dead_after))
