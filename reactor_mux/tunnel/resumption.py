"""A resumable channel across cuts (docs/protocol.md §9): while connected, a
barrier tick confirms what was sent, and runs only while something sent waits
to be confirmed (an idle channel has no timer of its own but its keepalive);
once the connection breaks, the streams
wait for a resume until the resume window closes; a new connection carries
the session on (a client's ``reconnect``, a server's ``adopt`` of the
connection that proved it holds the session).

The class knows a clock, the session and two callbacks, nothing about sockets,
so it is tested with a fake clock (tests/test_resumption.py).  The channel
swaps the transport itself; a ``Handover`` only carries one from the channel
that proved a resume to the channel that holds the session.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.io.transport import Transport
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.session import Session

BARRIER_INTERVAL = 0.25
"""Seconds between barrier ticks on a resumable channel that sent something: once
it goes quiet, a barrier PING whose answer frees the sent bytes and commands
kept for a resume (protocol.md §9.2)."""


class Clock(Protocol):
    def time(self) -> float: ...

    def call_later(
        self, delay: float, callback: Callable[[], None], owner: Owner
    ) -> Cancellable: ...


@dataclass(frozen=True, slots=True)
class Handover:
    """A connection that proved it holds a session, given to that session's channel:
    its transport, and its session (the bytes it read, the output it queued)."""

    transport: Transport
    session: Session
    peer: str


class Resumption:
    """The resume state of one channel: barrier ticks, and the resume deadline."""

    name = "resumption"

    def __init__(
        self,
        clock: Clock,
        owner: Owner,
        session: Session,
        *,
        resume_timeout: float,
        flush: Callable[[], None],
        expired: Callable[[str, ErrorCode], None],
        gone_idle: Callable[[], None] | None = None,
    ) -> None:
        """``gone_idle``: the tick stopped; whoever sends without the channel's flush
        (the data plane) must ``wake`` it at the next send."""
        self._clock = clock
        self._owner = owner
        self._session = session
        self._timeout = resume_timeout
        self._flush = flush
        self._expired = expired
        self._gone_idle = gone_idle
        self._ticking = False
        """The channel started with resume on, and has not stopped."""
        self._barrier_timer: Cancellable | None = None
        self._deadline: Cancellable | None = None
        self.suspended_at: float | None = None
        """When the connection broke, while the streams wait for a resume."""

    @property
    def suspended(self) -> bool:
        """The streams wait for a resume: from the cut until the session resumed."""
        return self.suspended_at is not None

    @property
    def deadline(self) -> float | None:
        """When the resume window closes, while suspended."""
        return None if self.suspended_at is None else self.suspended_at + self._timeout

    def start(self) -> None:
        """The channel started: tick barriers if the session may ever resume."""
        if self._session.config.resume:
            self._ticking = True
            self.wake()

    def wake(self) -> None:
        """Something may have been sent: tick until it is confirmed (called on every
        flush: one test while the tick runs; a keepalive's PING or PONG, which
        needs no barrier, starts no tick)."""
        if self._barrier_timer is None and self._ticking:
            if self._session.confirming():
                self._barrier_timer = self._clock.call_later(BARRIER_INTERVAL, self._tick,
                                                             self._owner)  # fmt: skip
            elif self._gone_idle is not None:
                self._gone_idle()  # whoever sends on its own says when it sends next

    def _tick(self) -> None:
        self._barrier_timer = None
        session = self._session
        if session.failed:
            return
        session.barrier_tick()
        if session.has_output():
            self._flush()
        if session.confirming():
            self._barrier_timer = self._clock.call_later(BARRIER_INTERVAL, self._tick,
                                                         self._owner)  # fmt: skip
        elif self._gone_idle is not None:
            self._gone_idle()

    def suspend(self) -> bool:
        """The connection broke and the session may resume: keep it, and start the
        resume window the first time.  Returns whether this was the first cut (a
        failed resume attempt breaks a connection too)."""
        first = self.suspended_at is None
        if first:
            self.suspended_at = self._clock.time()
            self._deadline = self._clock.call_later(self._timeout, self._window_closed,
                                                    self._owner)  # fmt: skip
        self._session.suspend()
        return first

    def _window_closed(self) -> None:
        self._deadline = None
        if self.suspended:
            self._expired(f"resume window expired ({self._timeout:g}s)",
                          ErrorCode.RESUME_EXPIRED)  # fmt: skip

    def reconnect(self) -> None:
        """Client: a new connection; its HELLO asks to resume."""
        self._session.reconnect()

    def adopt(self, handover: Handover) -> None:
        """Server: carry the session on over the connection that proved it."""
        self._session.adopt(handover.session)

    def resumed(self) -> None:
        """The resume exchange is done: the streams carry on."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.suspended_at = None

    def stop(self) -> None:
        """The channel closed (or was handed over): no more ticks or deadline."""
        self._ticking = False
        for timer in (self._barrier_timer, self._deadline):
            if timer is not None:
                timer.cancel()
        self._barrier_timer = self._deadline = None
