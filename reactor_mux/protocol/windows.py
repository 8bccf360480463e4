"""Per-stream flow-control accounting: pure arithmetic, no buffers.

The original prototype reset its unacknowledged count to zero on every ACK,
so a sender that raced ahead of a slow receiver never stopped.  Here an
``ACK n`` subtracts exactly ``n``, an ACK for more than is outstanding is a
protocol error, and the receiver acknowledges only bytes it has *written* to
its local socket, and only in steps of a quarter window so ACKs never storm.
"""

from __future__ import annotations

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError


class SendWindow:
    """How much more we may send on one stream before the peer acknowledges."""

    __slots__ = ("size", "unacked")

    def __init__(self, size: int) -> None:
        self.size = size
        self.unacked = 0

    @property
    def available(self) -> int:
        return self.size - self.unacked

    def consume(self, count: int) -> None:
        """Count ``count`` bytes taken from the local socket for sending."""
        if count > self.size - self.unacked:
            raise LocalProtocolError("sent beyond the flow-control window")
        self.unacked += count

    def acknowledge(self, count: int) -> None:
        """Apply the peer's ``ACK count``."""
        if count > self.unacked:
            raise ProtocolError(
                f"ACK {count} acknowledges more than the {self.unacked} bytes outstanding"
            )
        self.unacked -= count


class ReceiveWindow:
    """What the peer may still send us, and when we owe it an ACK."""

    __slots__ = ("delivered_unacked", "size", "threshold", "unacked", "undelivered")

    def __init__(self, size: int) -> None:
        self.size = size
        self.unacked = 0  # received and not yet acknowledged
        self.undelivered = 0  # received and not yet written locally
        self.delivered_unacked = 0  # written locally, ACK not yet sent
        self.threshold = max(1, size // 4)

    def grow(self, size: int) -> None:
        """Raise the window (we sent WINDOW ``size``); ACKs keep to a quarter of it."""
        if size < self.size:
            raise LocalProtocolError("a window only grows")
        self.size = size
        self.threshold = max(1, size // 4)

    def received(self, count: int) -> None:
        """Count a data frame from the peer; beyond the window is a violation."""
        if self.unacked + count > self.size:
            raise ProtocolError(
                f"peer sent {self.unacked + count} unacknowledged bytes, "
                f"beyond its window of {self.size}"
            )
        self.unacked += count
        self.undelivered += count

    def delivered(self, count: int) -> int:
        """Count bytes written to the local socket; return an ACK amount or 0."""
        if count > self.undelivered:
            raise LocalProtocolError("delivered more than was received")
        self.undelivered -= count
        self.delivered_unacked += count
        if self.delivered_unacked < self.threshold:
            return 0
        ack = self.delivered_unacked
        self.delivered_unacked = 0
        self.unacked -= ack
        return ack
