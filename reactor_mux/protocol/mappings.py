"""The mappings of one channel (docs/protocol.md §5): the client declares them
(CONNECT, BIND, DYNAMIC), the server answers each once, either side may open
streams on an accepted one (the client on CONNECT and DYNAMIC, the server on
BIND), and the client may cancel one (UNMAP) while its streams carry on.

The table decides; the session turns its decisions into frames and events.
A peer's mistake raises ``ProtocolError``, our caller's ``LocalProtocolError``.
"""

from __future__ import annotations

import enum

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError
from reactor_mux.protocol.events import MappingKind
from reactor_mux.protocol.verbs import Role, Verb

CONNECT, BIND, DYNAMIC = MappingKind.CONNECT, MappingKind.BIND, MappingKind.DYNAMIC
UDP_CONNECT, UDP_BIND = MappingKind.UDP_CONNECT, MappingKind.UDP_BIND
REQUEST_KIND = {Verb.CONNECT: CONNECT, Verb.BIND: BIND, Verb.DYNAMIC: DYNAMIC,
                Verb.UDP_CONNECT: UDP_CONNECT, Verb.UDP_BIND: UDP_BIND}  # fmt: skip
REQUEST_VERB = {kind: verb for verb, kind in REQUEST_KIND.items()}
REPLY_KIND = {
    Verb.CONNECT_OK: CONNECT, Verb.CONNECT_ERROR: CONNECT,
    Verb.BIND_OK: BIND, Verb.BIND_ERROR: BIND,
    Verb.DYNAMIC_OK: DYNAMIC, Verb.DYNAMIC_ERROR: DYNAMIC,
    Verb.UDP_CONNECT_OK: UDP_CONNECT, Verb.UDP_CONNECT_ERROR: UDP_CONNECT,
    Verb.UDP_BIND_OK: UDP_BIND, Verb.UDP_BIND_ERROR: UDP_BIND,
}  # fmt: skip
ACCEPTANCE = {CONNECT: Verb.CONNECT_OK, BIND: Verb.BIND_OK, DYNAMIC: Verb.DYNAMIC_OK,
              UDP_CONNECT: Verb.UDP_CONNECT_OK, UDP_BIND: Verb.UDP_BIND_OK}  # fmt: skip
REFUSAL = {CONNECT: Verb.CONNECT_ERROR, BIND: Verb.BIND_ERROR, DYNAMIC: Verb.DYNAMIC_ERROR,
           UDP_CONNECT: Verb.UDP_CONNECT_ERROR, UDP_BIND: Verb.UDP_BIND_ERROR}  # fmt: skip
BOUND = (BIND, UDP_BIND)
"""The kinds whose acceptance names the address the server bound."""
OPENED_BY = {Role.CLIENT: (CONNECT, DYNAMIC), Role.SERVER: (BIND,)}
"""The mapping kinds whose streams each role opens."""
MAX_MAPPING = 0xFFFFFFFF


class MappingStatus(enum.Enum):
    """A mapping request: waiting for the server's answer, answered, or (client)
    cancelled with UNMAP and waiting for UNMAP OK, after which no SYN can name it."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    CANCELLED = "cancelled"


class Mapping:
    __slots__ = ("kind", "status")

    def __init__(self, kind: MappingKind, status: MappingStatus) -> None:
        self.kind = kind
        self.status = status


class StreamVerdict(enum.Enum):
    """What becomes of a peer's SYN, as far as its mapping decides."""

    OPEN = "open"
    REMOVED = "removed"  # cancelled by our UNMAP, which the SYN crossed
    REFUSED = "refused"  # the mapping was refused


class MappingTable:
    """Every mapping this channel declared, by number, with its status."""

    def __init__(self, role: Role, limit: int) -> None:
        self._role = role
        self._entries: dict[int, Mapping] = {}
        self.limit = limit
        self.limit_refusals = 0
        """Requests refused for ``limit`` (for the metrics)."""
        self._ours = OPENED_BY[role]
        self._peers = OPENED_BY[Role.SERVER if role is Role.CLIENT else Role.CLIENT]

    def __len__(self) -> int:
        return len(self._entries)

    def status(self, mapping: int) -> MappingStatus | None:
        entry = self._entries.get(mapping)
        return entry.status if entry is not None else None

    # -- the client's side

    def declare(self, mapping: int, kind: MappingKind) -> None:
        """Client: a new request, pending the server's answer."""
        if self._role is not Role.CLIENT:
            raise LocalProtocolError(f"only clients send {REQUEST_VERB[kind].value}")
        if not 1 <= mapping <= MAX_MAPPING or mapping in self._entries:
            raise LocalProtocolError(f"mapping number {mapping} is invalid or in use")
        self._entries[mapping] = Mapping(kind, MappingStatus.PENDING)

    def cancel(self, mapping: int) -> bool:
        """Client: the forward is removed; True if UNMAP is to be sent (False for a
        mapping never declared, a refused BIND, already forgotten, or cancelled)."""
        if self._role is not Role.CLIENT:
            raise LocalProtocolError("only clients send UNMAP")
        entry = self._entries.get(mapping)
        if entry is None or entry.status is MappingStatus.CANCELLED:
            return False
        entry.status = MappingStatus.CANCELLED
        return True

    def replied(self, mapping: int, verb: Verb) -> MappingKind | None:
        """Client: the server answered with ``verb``; returns the mapping's kind, or
        None for an answer to a request we cancelled since (UNMAP OK follows)."""
        kind = REPLY_KIND[verb]
        entry = self._entries.get(mapping)
        if entry is not None and entry.kind is kind and entry.status is MappingStatus.CANCELLED:
            return None
        if entry is None or entry.kind is not kind or entry.status is not MappingStatus.PENDING:
            raise ProtocolError(
                f"{verb.value} for mapping {mapping}, which has no {kind.name} pending"
            )
        if verb is REFUSAL[kind]:
            entry.status = MappingStatus.REFUSED
            if kind in BOUND:  # no SYN can name it: forget it, as the server does
                del self._entries[mapping]
        else:
            entry.status = MappingStatus.ACCEPTED
        return kind

    def unmapped(self, mapping: int) -> None:
        """Client: UNMAP OK, the server forgot the mapping; no SYN for it follows."""
        entry = self._entries.get(mapping)
        if entry is None or entry.status is not MappingStatus.CANCELLED:
            raise ProtocolError(f"UNMAP OK for mapping {mapping}, which was not cancelled")
        del self._entries[mapping]

    # -- the server's side

    def requested(self, mapping: int, kind: MappingKind) -> bool:
        """Server: the client asks for a mapping; False if it is over the limit
        (refuse it, counted), True if it waits for our answer."""
        if mapping in self._entries:
            raise ProtocolError(f"mapping {mapping} declared twice")
        if len(self._entries) >= self.limit:
            self.limit_refusals += 1
            return False
        self._entries[mapping] = Mapping(kind, MappingStatus.PENDING)
        return True

    def answer(self, mapping: int, kind: MappingKind, *, accepted: bool) -> None:
        """Server: we answer a pending request (once)."""
        entry = self._entries.get(mapping)
        if self._role is not Role.SERVER or entry is None or entry.kind is not kind:
            raise LocalProtocolError(f"no {kind.name} request {mapping} to answer")
        if entry.status is not MappingStatus.PENDING:
            raise LocalProtocolError(f"{kind.name} request {mapping} already answered")
        entry.status = MappingStatus.ACCEPTED if accepted else MappingStatus.REFUSED
        if not accepted and kind in BOUND:
            del self._entries[mapping]  # forgotten: a client may retry it under a new number

    def forget(self, mapping: int) -> MappingKind | None:
        """Server: UNMAP; the mapping's kind, or None if it was forgotten already
        (a refused BIND, whose refusal the UNMAP crossed)."""
        entry = self._entries.pop(mapping, None)
        return entry.kind if entry is not None else None

    # -- datagrams

    def peer_datagram(self, mapping: int) -> bool:
        """A peer's DATAGRAM names ``mapping``: True to deliver it, False to drop it
        (we cancelled or were refused the mapping, and the datagram crossed that)."""
        entry = self._entries.get(mapping)
        if entry is None or not entry.kind.datagrams:
            raise ProtocolError(f"DATAGRAM for mapping {mapping}, which was never declared "
                                "with UDP-CONNECT or UDP-BIND")  # fmt: skip
        if entry.status is MappingStatus.PENDING:
            raise ProtocolError(f"DATAGRAM for mapping {mapping} before it was accepted")
        return entry.status is MappingStatus.ACCEPTED

    def can_send_datagram(self, mapping: int) -> bool:
        """We may send a DATAGRAM on ``mapping`` (a UDP mapping, accepted, not cancelled)."""
        entry = self._entries.get(mapping)
        return (entry is not None and entry.kind.datagrams
                and entry.status is MappingStatus.ACCEPTED)  # fmt: skip

    # -- streams

    def peer_stream(self, mapping: int) -> tuple[MappingKind, StreamVerdict]:
        """A peer's SYN names ``mapping``: its kind, and whether a stream may open."""
        entry = self._entries.get(mapping)
        if entry is None or entry.kind not in self._peers:
            declared = " or ".join(kind.name for kind in self._peers)
            raise ProtocolError(
                f"SYN names mapping {mapping}, which was never declared with {declared}"
            )
        if entry.status is MappingStatus.CANCELLED:  # sent before our UNMAP arrived
            return entry.kind, StreamVerdict.REMOVED
        if self._role is Role.CLIENT and entry.status is not MappingStatus.ACCEPTED:
            raise ProtocolError(f"SYN for mapping {mapping} before BIND OK")
        if entry.status is MappingStatus.REFUSED:
            return entry.kind, StreamVerdict.REFUSED
        return entry.kind, StreamVerdict.OPEN

    def own_stream(self, mapping: int, *, names_target: bool) -> None:
        """We open a stream on ``mapping``: raise unless the mapping can carry it."""
        entry = self._entries.get(mapping)
        if (entry is None or entry.kind not in self._ours
                or entry.status in (MappingStatus.REFUSED, MappingStatus.CANCELLED)):  # fmt: skip
            raise LocalProtocolError(f"mapping {mapping} cannot carry streams from this side")
        if names_target != (entry.kind is DYNAMIC):
            raise LocalProtocolError(f"a {entry.kind.name} stream must name a target exactly "
                                     "when its mapping is DYNAMIC")  # fmt: skip
        if self._role is Role.SERVER and entry.status is not MappingStatus.ACCEPTED:
            raise LocalProtocolError(f"mapping {mapping} is not bound yet")
