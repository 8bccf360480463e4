"""Events the session reports to its driver, one class per thing that happened.

``Event`` is the union of them all, not a base class, so a driver that
dispatches with ``match`` and ends in ``unhandled(event)`` gets a mypy error
for any event it forgot (a new event class cannot go silently unhandled).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NoReturn, TypeAlias

from reactor_mux.protocol.errorcodes import ErrorCode


class MappingKind(enum.Enum):
    """What a mapping asks of the server: CONNECT (``-L``), BIND (``-R``) or
    DYNAMIC (``-D``: each stream names its own target)."""

    CONNECT = "connect"
    BIND = "bind"
    DYNAMIC = "dynamic"
    UDP_CONNECT = "udp-connect"
    """``-L udp:``: datagrams to a target, from the server."""
    UDP_BIND = "udp-bind"
    """``-R udp:``: the server receives datagrams and hands them to the client."""

    @property
    def datagrams(self) -> bool:
        """The mapping carries datagrams (DATAGRAM frames), never streams."""
        return self in (MappingKind.UDP_CONNECT, MappingKind.UDP_BIND)


@dataclass(slots=True)
class HelloReceived:
    """The channel is open: the peer's HELLO arrived and, where authentication is
    on, both sides proved they know the secret.  The peer's per-stream window,
    its largest data frame, and (from a client) the identity token it keeps
    across reconnects and the name it authenticated as."""

    window: int
    max_frame: int = 65536
    client_id: str | None = None
    client_name: str | None = None


@dataclass(slots=True)
class PongReceived:
    """The answer to our ``PING token``."""

    token: int


@dataclass(slots=True)
class MappingRequested:
    """Server side: the client asked to CONNECT (``-L``), BIND (``-R``) or DYNAMIC
    (``-D``, with no address); a CONNECT or BIND names ``host:port`` or a Unix
    socket ``path``."""

    mapping: int
    kind: MappingKind
    host: str = ""
    port: int = 0
    path: str | None = None


@dataclass(slots=True)
class DatagramReceived:
    """A DATAGRAM frame: one datagram of ``association`` on a UDP ``mapping``."""

    mapping: int
    association: int
    payload: bytes


@dataclass(slots=True)
class MappingAccepted:
    """Client side: CONNECT OK, DYNAMIC OK, or BIND OK with the address the server bound
    (``host:port``, or the Unix socket ``path`` it listens on)."""

    mapping: int
    kind: MappingKind
    host: str | None = None
    port: int | None = None
    path: str | None = None


@dataclass(slots=True)
class MappingRefused:
    """Client side: CONNECT ERROR, BIND ERROR or DYNAMIC ERROR."""

    mapping: int
    kind: MappingKind
    reason: str


@dataclass(slots=True)
class MappingCancelled:
    """Server side: UNMAP.  The client stopped using the mapping (its forward was
    removed): close its ``-R`` listener; streams already open carry on."""

    mapping: int
    kind: MappingKind


@dataclass(slots=True)
class StreamRequested:
    """The peer sent SYN: open a local connection for ``mapping`` and answer.
    ``target`` is the address a dynamic mapping's SYN names (None for the others)."""

    stream_id: int
    mapping: int
    target: tuple[str, int] | None = None


@dataclass(slots=True)
class StreamAccepted:
    """SYN OK: the far end is connected; start reading the local socket."""

    stream_id: int


@dataclass(slots=True)
class StreamRefused:
    """SYN ERROR: the far end could not connect."""

    stream_id: int
    reason: str


@dataclass(slots=True)
class DataReceived:
    """Stream data; ``data`` is a view valid only until the next receive."""

    stream_id: int
    data: memoryview


@dataclass(slots=True)
class CreditGranted:
    """ACK: the peer delivered data to its local socket, so we may read more from ours."""

    stream_id: int


@dataclass(slots=True)
class PeerLeaving:
    """BYE: the peer has no open stream and opens none; close the channel once
    ours have finished (every byte it sent has then reached our local sockets)."""


@dataclass(slots=True)
class PeerBlocked:
    """BLOCKED: the peer filled this stream's window and waits for ACKs; the
    channel may grow the window (``Session.grow_window``) if the local socket
    keeps up, so a window, not the reader, was the limit."""

    stream_id: int
    window: int
    """The window the peer was blocked at: stale once we have grown it."""


@dataclass(slots=True)
class StreamEnded:
    """FIN: the peer will send nothing more on this stream."""

    stream_id: int


@dataclass(slots=True)
class StreamReset:
    """RST: the peer aborted the stream."""

    stream_id: int
    reason: str


@dataclass(slots=True)
class DeliveryFailed:
    """Writing the peer's data to the stream's local socket failed (the compiled
    data plane reports it; ``error`` is the errno): the stream is reset."""

    stream_id: int
    error: int


@dataclass(slots=True)
class ChannelFailed:
    """The channel is finished: the peer sent ERROR, or broke the protocol.

    ``by_peer`` is true when the peer reported the error; false when we found
    a violation (and queued an ERROR frame telling the peer why).
    """

    reason: str
    by_peer: bool
    kept: bool = False
    """Only this connection failed: the session waits for a resume on another
    (an ERROR from the server while resuming that is not a refusal of the resume)."""
    code: ErrorCode | None = None
    """What failed, as a value (an older peer's ERROR may say none).  ``AUTH_FAILED``:
    authentication failed, on either side."""

    @property
    def authentication(self) -> bool:
        return self.code is ErrorCode.AUTH_FAILED


@dataclass(slots=True)
class ResumeRequested:
    """Server: a new connection asks to resume ``session_id``.  The driver looks the
    session up and answers with ``challenge_resume`` or ``refuse_resume``."""

    session_id: str
    client_id: str
    client_name: str | None


@dataclass(slots=True)
class ResumeProved:
    """Server: the new connection proved it holds ``session_id``'s key; the
    suspended session adopts it (``Session.adopt``)."""

    session_id: str


@dataclass(slots=True)
class SessionResumed:
    """Both tables are in and what the peer lacked is queued again: streams move."""

    streams: int
    replayed: int
    """Bytes of stream data queued again (the peer had not received them)."""


Event: TypeAlias = (
    HelloReceived
    | PongReceived
    | MappingRequested
    | MappingAccepted
    | MappingRefused
    | MappingCancelled
    | StreamRequested
    | StreamAccepted
    | StreamRefused
    | DataReceived
    | DatagramReceived
    | CreditGranted
    | PeerBlocked
    | PeerLeaving
    | StreamEnded
    | StreamReset
    | DeliveryFailed
    | ChannelFailed
    | ResumeRequested
    | ResumeProved
    | SessionResumed
)


def unhandled(event: NoReturn) -> NoReturn:
    """The last branch of a ``match`` over ``Event``: mypy reports any event type
    that can reach it, and at run time it is a bug."""
    raise AssertionError(f"unhandled event {event!r}")
