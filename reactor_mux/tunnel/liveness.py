"""Is the peer still there?  The handshake deadline and the keepalive.

A new channel must finish the HELLO exchange within ``handshake_timeout``.
After that, a tick every half ``keepalive_interval`` looks at how long the
peer has been silent: past ``keepalive_interval`` we send PING (any answer,
or any other traffic, counts), past ``dead_after`` we give the channel up even
if TCP has not noticed (a frozen or unplugged peer).  While the channel has
paused its own reads (its inbound buffers are full) the peer's silence says
nothing, so the clock stops and we keep sending PING, which tells the peer
that we are alive.

The class knows a clock and two callbacks, nothing about sockets, so it is
tested with a fake clock.
"""

from __future__ import annotations

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
        activity: Callable[[], int] | None = None,
        quiet: Callable[[], None] | None = None,
    ) -> None:
        """``quiet``: called on a tick that finds nothing read since the last one
        (the channel gives back its buffers: no timer of its own for that)."""
        self._clock = clock
        self._owner = owner
        self._handshake_timeout = handshake_timeout
        self._interval = keepalive_interval
        self._dead_after = dead_after
        self._send_ping = send_ping
        self._give_up = give_up
        self._handshake_timer: Cancellable | None = None
        self._tick_timer: Cancellable | None = None
        self._ping_token = 0
        self.last_heard = clock.time()
        self._created = self.last_heard
        self._activity = activity
        self._quiet = quiet
        """A count of the channel's reads (Python's and the data plane's): when it moved
        since the last tick, the peer was heard after that tick.  Counting is what a
        read can afford; reading the clock on every one cost more."""
        self._last_activity = activity() if activity is not None else 0
        self._activity_at_start = self._last_activity
        self._last_tick = self.last_heard
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
            self._activity is None or self._activity() == self._activity_at_start
        )
        self._give_up(f"handshake timed out after {self._handshake_timeout:g}s"
                      + (f" ({SILENT_PEER})" if silent else ""),
                      ErrorCode.NO_ANSWER if silent else ErrorCode.HANDSHAKE_TIMEOUT)  # fmt: skip

    def _schedule_tick(self) -> None:
        self._tick_timer = self._clock.call_later(self._interval / 2, self._tick, self._owner)

    def _tick(self) -> None:
        self._tick_timer = None
        now = self._clock.time()
        if self._activity is not None:
            activity = self._activity()
            if activity != self._last_activity:
                self._last_activity = activity
                self.last_heard = max(self.last_heard, self._last_tick)
            elif self._quiet is not None and not self.reads_paused:
                self._quiet()
        self._last_tick = now
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
        if idle >= self._interval or self.reads_paused:
            self._ping_token += 1
            self._send_ping(self._ping_token)
        self._schedule_tick()
