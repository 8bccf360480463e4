"""The stream state machine, as a table.

Everything that moves a stream from one state to another lives in this file,
and this file does not know which role (client or server) it plays: the
opener of a stream is simply the side that sent SYN.  Each (state, input)
pair found in ``TRANSITIONS`` is legal; any other pair raises
``ProtocolError`` (for inputs that came from the peer) or
``LocalProtocolError`` (for inputs we produced), and the stream is closed.

    SYN_SENT ----SYN OK----> OPEN <----SYN OK---- SYN_RECEIVED
       |                     |  |                       |
    SYN ERROR            FIN |  | FIN              SYN ERROR
       v         sent    v  v    received            v
     CLOSED   HALF_CLOSED_LOCAL  HALF_CLOSED_REMOTE  CLOSED
                    \\   FIN received / FIN sent   //
                     `--------> CLOSED <---------'
    RST in either direction closes from any live state.
"""

from __future__ import annotations

import enum

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError


class StreamState(enum.Enum):
    # Members are singletons compared by identity; hashing by identity keeps the
    # per-frame table lookup free of enum's Python-level __hash__.
    __hash__ = object.__hash__

    SYN_SENT = "syn-sent"
    SYN_RECEIVED = "syn-received"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed-local"
    HALF_CLOSED_REMOTE = "half-closed-remote"
    CLOSED = "closed"


class StreamInput(enum.Enum):
    """What can happen to a stream; ``RECV_*`` come from the peer."""

    __hash__ = object.__hash__

    SEND_SYN_OK = "send SYN OK"
    SEND_SYN_ERROR = "send SYN ERROR"
    SEND_DATA = "send data"
    SEND_FIN = "send FIN"
    SEND_ACK = "send ACK"
    SEND_RST = "send RST"
    SEND_BLOCKED = "send BLOCKED"
    SEND_WINDOW = "send WINDOW"
    RECV_SYN_OK = "receive SYN OK"
    RECV_SYN_ERROR = "receive SYN ERROR"
    RECV_DATA = "receive data"
    RECV_FIN = "receive FIN"
    RECV_ACK = "receive ACK"
    RECV_RST = "receive RST"
    RECV_BLOCKED = "receive BLOCKED"
    RECV_WINDOW = "receive WINDOW"

    @property
    def from_peer(self) -> bool:
        return self.name.startswith("RECV_")


S = StreamState
I = StreamInput  # noqa: E741 - a table reads better with short names

TRANSITIONS: dict[tuple[StreamState, StreamInput], StreamState] = {
    # We sent SYN and wait for the answer; nothing flows yet.
    (S.SYN_SENT, I.RECV_SYN_OK): S.OPEN,
    (S.SYN_SENT, I.RECV_SYN_ERROR): S.CLOSED,
    # The peer sent SYN; we answer once the local connection is made.
    (S.SYN_RECEIVED, I.SEND_SYN_OK): S.OPEN,
    (S.SYN_RECEIVED, I.SEND_SYN_ERROR): S.CLOSED,
    # Both directions flow.
    (S.OPEN, I.SEND_DATA): S.OPEN,
    (S.OPEN, I.RECV_DATA): S.OPEN,
    (S.OPEN, I.SEND_ACK): S.OPEN,
    (S.OPEN, I.RECV_ACK): S.OPEN,
    (S.OPEN, I.SEND_BLOCKED): S.OPEN,
    (S.OPEN, I.RECV_BLOCKED): S.OPEN,
    (S.OPEN, I.SEND_WINDOW): S.OPEN,
    (S.OPEN, I.RECV_WINDOW): S.OPEN,
    (S.OPEN, I.SEND_FIN): S.HALF_CLOSED_LOCAL,
    (S.OPEN, I.RECV_FIN): S.HALF_CLOSED_REMOTE,
    # We are done sending; the peer may still send, and acknowledge our data.
    (S.HALF_CLOSED_LOCAL, I.RECV_DATA): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.SEND_ACK): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_ACK): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_BLOCKED): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.SEND_WINDOW): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_WINDOW): S.HALF_CLOSED_LOCAL,
    (S.HALF_CLOSED_LOCAL, I.RECV_FIN): S.CLOSED,
    # The peer is done sending; we may still send, and it acknowledges.
    (S.HALF_CLOSED_REMOTE, I.SEND_DATA): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.RECV_ACK): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_BLOCKED): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.RECV_WINDOW): S.HALF_CLOSED_REMOTE,
    (S.HALF_CLOSED_REMOTE, I.SEND_FIN): S.CLOSED,
}

LIVE_STATES = (S.SYN_SENT, S.SYN_RECEIVED, S.OPEN, S.HALF_CLOSED_LOCAL, S.HALF_CLOSED_REMOTE)
for _state in LIVE_STATES:
    TRANSITIONS[(_state, I.SEND_RST)] = S.CLOSED
    TRANSITIONS[(_state, I.RECV_RST)] = S.CLOSED
del _state


def next_state(state: StreamState, event: StreamInput) -> StreamState:
    """Return the state after ``event``; raise if the pair is not in the table."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        message = f"cannot {event.value} in state {state.value}"
        if event.from_peer:
            raise ProtocolError(message) from None
        raise LocalProtocolError(message) from None
