"""Shutting down gently, for either role: wait for the open streams to finish,
then say BYE on every idle channel and wait for the peers to close them, so the
last bytes sent reach their targets before the process exits; give up after
the drain timeout."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sized
from typing import Protocol

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.logformat import event as log_event

log = logging.getLogger("reactor_mux")

DRAIN_POLL = 0.05
"""Seconds between checks, while draining, for streams still open."""

DRAIN_REPORT_INTERVAL = 5.0
"""Seconds between the log lines that say how many streams a drain waits for."""


class Clock(Protocol):
    def time(self) -> float: ...

    def call_later(
        self, delay: float, callback: Callable[[], None], owner: Owner
    ) -> Cancellable: ...


class Drainable(Protocol):
    """What a drain needs of a channel."""

    @property
    def busy(self) -> bool:
        """Streams (or connects for streams) are still open."""

    @property
    def streams(self) -> Sized: ...

    @property
    def said_goodbye(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def say_goodbye(self) -> None:
        """Send BYE once the channel is idle."""


def wait_for_streams(
    reactor: Clock,
    channels: Callable[[], Iterable[Drainable]],
    timeout: float,
    done: Callable[[], None],
) -> Callable[[], None]:
    """Call ``done()`` once no channel has an open stream and the peers closed the
    idle channels after our BYE, or after ``timeout``; returns a function that
    cancels the wait."""
    return _DrainWait(reactor, channels, timeout, done).cancel


class _DrainWait:
    """Polls the channels until they are idle or the drain timeout passes."""

    name = "drain wait"

    def __init__(
        self,
        reactor: Clock,
        channels: Callable[[], Iterable[Drainable]],
        timeout: float,
        done: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self._channels = channels
        self._deadline = reactor.time() + timeout
        self._done = done
        self._timer: Cancellable | None = None
        self._next_report = reactor.time() + DRAIN_REPORT_INTERVAL
        self._check()

    def _check(self) -> None:
        """Phase one: wait for the streams to finish.  Phase two: say BYE on every
        idle channel and wait for the peers to close them."""
        channels = list(self._channels())
        busy = sum(1 for channel in channels if channel.busy)
        if not busy:
            for channel in channels:
                channel.say_goodbye()
            if not any(channel.said_goodbye and not channel.closed for channel in channels):
                self._done()
                return
        now = self._reactor.time()
        if now < self._deadline:
            if now >= self._next_report:
                self._next_report = now + DRAIN_REPORT_INTERVAL
                streams = sum(len(channel.streams) for channel in channels)
                log.info("draining: %d stream(s) still open, %.0fs left", streams,
                         self._deadline - now, extra=log_event("drain_waiting"))  # fmt: skip
            self._timer = self._reactor.call_later(DRAIN_POLL, self._check, self)
            return
        if busy:
            streams = sum(len(channel.streams) for channel in channels)
            log.warning("drain timeout: cutting %d open stream(s) on %d channel(s)",
                        streams, busy, extra=log_event("drain_timeout"))  # fmt: skip
        else:
            log.warning(
                "drain timeout: the peer did not close the channel after BYE",
                extra=log_event("drain_timeout"),
            )
        self._done()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def close_after_bug(self) -> None:
        """Stop waiting: better an early exit than a drain that never ends."""
        self._done()
