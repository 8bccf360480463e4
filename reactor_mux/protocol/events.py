"""Events the session reports to its driver, one class per thing that happened."""

from __future__ import annotations

from dataclasses import dataclass


class Event:
    """Base class of everything ``Session.receive_into`` returns."""

    __slots__ = ()


@dataclass(slots=True)
class HelloReceived(Event):
    """The peer's HELLO: its per-stream window, its largest data frame, and (from a
    client) the identity token it keeps across reconnects."""

    window: int
    max_frame: int = 65536
    client_id: str | None = None


@dataclass(slots=True)
class PongReceived(Event):
    """The answer to our ``PING token``."""

    token: int


@dataclass(slots=True)
class MappingRequested(Event):
    """Server side: the client asked to CONNECT (``-L``) or BIND (``-R``)."""

    mapping: int
    kind: str  # "connect" or "bind"
    host: str
    port: int


@dataclass(slots=True)
class MappingAccepted(Event):
    """Client side: CONNECT OK, or BIND OK with the address the server bound."""

    mapping: int
    kind: str
    host: str | None = None
    port: int | None = None


@dataclass(slots=True)
class MappingRefused(Event):
    """Client side: CONNECT ERROR or BIND ERROR."""

    mapping: int
    kind: str
    reason: str


@dataclass(slots=True)
class StreamRequested(Event):
    """The peer sent SYN: open a local connection for ``mapping`` and answer."""

    stream_id: int
    mapping: int


@dataclass(slots=True)
class StreamAccepted(Event):
    """SYN OK: the far end is connected; start reading the local socket."""

    stream_id: int


@dataclass(slots=True)
class StreamRefused(Event):
    """SYN ERROR: the far end could not connect."""

    stream_id: int
    reason: str


@dataclass(slots=True)
class DataReceived(Event):
    """Stream data; ``data`` is a view valid only until the next receive."""

    stream_id: int
    data: memoryview


@dataclass(slots=True)
class CreditGranted(Event):
    """ACK: the peer consumed data, so we may read more from the local socket."""

    stream_id: int


@dataclass(slots=True)
class StreamEnded(Event):
    """FIN: the peer will send nothing more on this stream."""

    stream_id: int


@dataclass(slots=True)
class StreamReset(Event):
    """RST: the peer aborted the stream."""

    stream_id: int
    reason: str


@dataclass(slots=True)
class ChannelFailed(Event):
    """The channel is finished: the peer sent ERROR, or broke the protocol.

    ``by_peer`` is true when the peer reported the error; false when we found
    a violation (and queued an ERROR frame telling the peer why).
    """

    reason: str
    by_peer: bool
