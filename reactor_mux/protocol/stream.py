"""One stream's record inside a session: where it is, its two windows, and the
totals a resume reconciles."""

from __future__ import annotations

from reactor_mux.protocol.streamstate import StreamState
from reactor_mux.protocol.windows import ReceiveWindow, SendWindow

SENDING_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
"""States in which this side may still send data."""
RECEIVING_STATES = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
"""States in which the peer may still send data."""


class Stream:
    """A stream the session tracks (open, or closed and kept for a resume)."""

    __slots__ = (
        "acked",
        "blocked_reported",
        "fin_pending",
        "flow_owner",
        "id",
        "mapping",
        "pending",
        "received",
        "recv",
        "released",
        "send",
        "slot",
        "state",
        "written",
    )

    def __init__(
        self,
        stream_id: int,
        state: StreamState,
        mapping: int,
        send_window: int,
        receive_window: int,
    ) -> None:
        self.id = stream_id
        self.state = state
        self.mapping = mapping
        self.send = SendWindow(send_window)
        self.recv = ReceiveWindow(receive_window)
        self.slot = -1  # OutboundQueue slot, opened on the first outbound byte
        self.fin_pending = False
        self.blocked_reported = False  # BLOCKED sent; not again before an ACK or WINDOW
        self.pending = False  # peer-opened and not yet answered (counts against max_pending)
        # Totals for a resume: data bytes taken off the wire, put in the send ring,
        # acknowledged by the peer, and dropped from the ring's retained bytes.
        self.received = 0
        self.written = 0
        self.acked = 0
        self.released = 0
        self.flow_owner: object = None
        """The compiled data plane that keeps this stream's counters, while it does."""

    @property
    def fin_received(self) -> bool:
        """The peer's FIN arrived (what a resume table reports for it)."""
        return self.state is StreamState.HALF_CLOSED_REMOTE or self.state is StreamState.CLOSED
