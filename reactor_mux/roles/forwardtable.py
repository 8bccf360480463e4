"""The client's forwards by mapping number, and what became of each on the
current channel.

Every ``-L``, ``-R`` and ``-D`` has a mapping number, the one its CONNECT,
BIND or DYNAMIC names on the channel.  Numbers are never used twice in a
process: a forward added while running, and a refused ``-R`` asked for again
(docs/protocol.md section 5), takes a fresh one.  Beside the specs the table
keeps, for ``status``, how each request stands on the current channel, and
which refusals stand there until the next channel (a local connection to
such a forward is reset at once).

The table knows specs and numbers, nothing about listeners or channels, so
it is tested with plain values.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from reactor_mux.roles.specs import ForwardSpec


class ForwardPhase(enum.Enum):
    """Where a forward's request stands on the current channel (status shows it)."""

    ASKED = "asked the server"
    ASKED_AGAIN = "asked the server again"
    FORWARDING = "forwarding"
    REFUSED = "refused by the server"


@dataclass(frozen=True)
class ForwardState:
    phase: ForwardPhase
    reason: str | None = None
    """Why the server refused it (REFUSED only)."""
    bound: tuple[str, int] | str | None = None
    """Where the server listens for an ``-R``: host and port, or a Unix socket's path
    (FORWARDING only)."""

    def __str__(self) -> str:
        return f"{self.phase.value}: {self.reason}" if self.reason else self.phase.value


@dataclass
class Changes:
    """What a reload did to the forwards (each named as the user wrote it)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def same_forward(one: ForwardSpec, other: ForwardSpec) -> bool:
    """The same forward, however it was spelled (``8080:h:80`` is
    ``localhost:8080:h:80``)."""
    return replace(one, text="") == replace(other, text="")


class ForwardTable:
    """The forwards in use by mapping number, in the order they were added."""

    def __init__(self, forwards: Iterable[ForwardSpec]) -> None:
        self.mappings: dict[int, ForwardSpec] = dict(enumerate(forwards, start=1))
        self._next_mapping = len(self.mappings) + 1
        self.state: dict[int, ForwardState] = {}
        """What became of each mapping's request on this channel, for status."""
        self._refused: set[int] = set()
        """Refused on this channel and not asked again there: connections are reset."""
        self._added_later: set[ForwardSpec] = set()
        """Forwards added while running: --exit-on-forward-failure is about start-up."""

    @property
    def specs(self) -> list[ForwardSpec]:
        """The forwards in use, as configured (in the order they were added)."""
        return list(self.mappings.values())

    def find(self, spec: ForwardSpec) -> int | None:
        """The mapping number of the forward ``spec`` names, however spelled, or None."""
        return next((mapping for mapping, known in self.mappings.items()
                     if same_forward(spec, known)), None)  # fmt: skip

    def new_number(self) -> int:
        """A mapping number never used before in this process."""
        mapping = self._next_mapping
        self._next_mapping += 1
        return mapping

    def add(self, mapping: int, spec: ForwardSpec) -> None:
        """A forward added while running, under a number from ``new_number``."""
        self.mappings[mapping] = spec
        self._added_later.add(spec)

    def added_later(self, spec: ForwardSpec) -> bool:
        """Added while running (not one the process started with)."""
        return spec in self._added_later

    def remove(self, mapping: int) -> ForwardSpec:
        """Forget ``mapping`` and all that was known about it; returns its spec."""
        spec = self.mappings.pop(mapping)
        self.state.pop(mapping, None)
        self._added_later.discard(spec)
        self._refused.discard(mapping)
        return spec

    def renumber(self, old: int) -> int:
        """Move a forward to a fresh number (a refused ``-R`` asks again under one);
        its state on the channel is the old number's, so it is dropped."""
        spec = self.mappings.pop(old)
        mapping = self.new_number()
        self.mappings[mapping] = spec
        self.state.pop(old, None)
        return mapping

    def asked(self, mapping: int, *, again: bool = False) -> None:
        """Its CONNECT, DYNAMIC or BIND went to the server."""
        self.state[mapping] = ForwardState(
            ForwardPhase.ASKED_AGAIN if again else ForwardPhase.ASKED
        )

    def forwarding(self, mapping: int, bound: tuple[str, int] | str | None = None) -> None:
        """The server accepted it (an ``-R`` listening on ``bound``)."""
        self.state[mapping] = ForwardState(ForwardPhase.FORWARDING, bound=bound)

    def refused(self, mapping: int, why: str) -> None:
        """The server refused it, for ``why`` (words for people)."""
        self.state[mapping] = ForwardState(ForwardPhase.REFUSED, why)

    def all_forwarding(self) -> bool:
        """The server accepted every forward on this channel."""
        return all(
            mapping in self.state and self.state[mapping].phase is ForwardPhase.FORWARDING
            for mapping in self.mappings
        )

    def not_asked_again(self, mapping: int) -> None:
        """A refusal that stands on this channel: connections to it are reset at once."""
        self._refused.add(mapping)

    def is_refused(self, mapping: int) -> bool:
        """The server refused it on this channel and will not be asked again there."""
        return mapping in self._refused

    def channel_opened(self) -> None:
        """A new channel asks for every forward again: no refusal stands."""
        self._refused.clear()

    def channel_closed(self) -> None:
        """No request stands without a channel (status says it waits for one)."""
        self.state.clear()
