"""The client's ``-R`` requests: which port each BIND asks for, and whether and
when one the server refused is asked for again.

An ``-R`` names its port, except ``-R 0``, which takes any port the server
picks; after a reconnect an ``-R 0`` asks for the port it had, so that the
peers who were told it can keep using it.  If that port has been taken
meanwhile, the refusal says nothing about the forward: it asks at once for
any port.  Any other refusal whose class may pass (the port is in use) is
asked again after the forward's own backoff, under a fresh mapping number
(docs/protocol.md section 5), while one that may not (the server's settings
forbid it) is not asked again on that channel.

The class keeps the ports and the retry timers, and decides; the client
sends the BINDs and logs.  It knows only a way to schedule calls, so it is
tested with a fake clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.protocol.failures import FailureClass
from reactor_mux.roles.backoff import Backoff
from reactor_mux.roles.specs import ForwardSpec


class Scheduler(Protocol):
    """The part of the reactor that the retries use."""

    def call_later(
        self, delay: float, callback: Callable[[], None], owner: Owner
    ) -> Cancellable: ...


@dataclass(frozen=True)
class AskAgain:
    """A refused BIND is asked for again: at once, for any port, if ``taken_port``
    is set, else after ``delay`` seconds."""

    delay: float = 0.0
    taken_port: int | None = None
    """The port an ``-R 0`` had before and asked for again, now not free."""


class RemoteBinds:
    """The ports the ``-R`` forwards ask for and got, and their pending retries."""

    def __init__(
        self,
        scheduler: Scheduler,
        owner: Owner,
        backoff_min: float,
        backoff_max: float,
        rng: random.Random | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._owner = owner
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._rng = rng
        self._retries: dict[int, Cancellable] = {}
        """Refused mappings waiting to be asked for again, by their old number."""
        self._backoff: dict[ForwardSpec, Backoff] = {}
        self._asked_port: dict[int, int] = {}
        """The port each BIND of this channel asked for."""
        self._granted_port: dict[ForwardSpec, int] = {}
        """The port each ``-R 0`` got, asked for again after a reconnect."""
        self._port_taken: set[ForwardSpec] = set()
        """``-R 0``s whose old port was taken: ask for any port this once."""

    def port_to_ask(self, mapping: int, spec: ForwardSpec) -> int:
        """The port the BIND for ``spec`` under ``mapping`` asks for: its own, or
        for an ``-R 0`` the port it had on the last channel."""
        port = spec.bind_port
        if port == 0 and spec not in self._port_taken:
            port = self._granted_port.get(spec, 0)
        self._asked_port[mapping] = port
        return port

    def accepted(self, mapping: int, spec: ForwardSpec, port: int) -> int | None:
        """The server listens on ``port`` for it.  Returns the port an ``-R 0`` had
        before if it got another one now (worth a warning), else None."""
        self._asked_port.pop(mapping, None)
        backoff = self._backoff.get(spec)
        if backoff is not None:
            backoff.reset()
        if spec.bind_port != 0:
            return None
        before = self._granted_port.get(spec)
        self._granted_port[spec] = port
        self._port_taken.discard(spec)
        return before if before is not None and before != port else None

    def refused(self, mapping: int, spec: ForwardSpec, failure: FailureClass) -> AskAgain | None:
        """The server refused the BIND under ``mapping`` with ``failure``: whether to
        ask again and when (None: not on this channel, the server's settings decide)."""
        if not failure.passing:
            return None
        asked = self._asked_port.pop(mapping, spec.bind_port)
        if asked != spec.bind_port:  # the port an -R 0 had before is taken now
            self._port_taken.add(spec)
            return AskAgain(taken_port=asked)
        backoff = self._backoff.get(spec)
        if backoff is None:
            backoff = Backoff(self._backoff_min, self._backoff_max, self._rng)
            self._backoff[spec] = backoff
        return AskAgain(delay=backoff.next_delay())

    def ask_later(self, mapping: int, delay: float, ask_again: Callable[[], None]) -> None:
        """Call ``ask_again`` after ``delay`` unless the mapping is forgotten first."""
        self._retries[mapping] = self._scheduler.call_later(
            delay, partial(self._retry_due, mapping, ask_again), self._owner
        )

    def _retry_due(self, mapping: int, ask_again: Callable[[], None]) -> None:
        self._retries.pop(mapping, None)
        ask_again()

    def forget(self, mapping: int) -> None:
        """The forward under ``mapping`` was removed: no retry, no answer awaited."""
        retry = self._retries.pop(mapping, None)
        if retry is not None:
            retry.cancel()
        self._asked_port.pop(mapping, None)

    def channel_closed(self) -> None:
        """The channel's requests are gone with it; a new channel asks for every
        ``-R`` anyway, with the ports they had."""
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()
        self._asked_port.clear()
