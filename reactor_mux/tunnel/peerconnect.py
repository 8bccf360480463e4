"""Connections made for the peer's SYNs, while they are still connecting.

When the peer opens a stream, this side connects to the mapping's target and
answers SYN OK or SYN ERROR.  Each pending connect is tracked here by stream
id so that it is reported exactly once, cancelled if the peer resets the
stream first, and cancelled with all the others when the channel closes.

Connecting itself is a function handed in (a ``Connector`` in the process, a
fake in tests), so the bookkeeping is tested without sockets or a clock.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.syntax import format_host_port

DoneCallback = Callable[[socket.socket | None, Failure | None], None]
ConnectFunction = Callable[[str, int, DoneCallback, Owner], Cancellable]
"""``connect(host, port, on_done, owner)``: start connecting; ``on_done(sock, None)``
or ``on_done(None, failure)`` is called once unless the attempt is cancelled."""
ResultCallback = Callable[[int, str, socket.socket | None, Failure | None], None]
"""``on_result(stream_id, address, sock, failure)``"""


class PeerConnects:
    """The pending connects of one channel, by stream id."""

    def __init__(self, connect: ConnectFunction, on_result: ResultCallback, owner: Owner) -> None:
        self._connect = connect
        self._on_result = on_result
        self._owner = owner
        self._pending: dict[int, _PendingConnect] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def start(self, stream_id: int, host: str, port: int) -> None:
        """Connect to host:port for the peer's stream ``stream_id``."""
        if stream_id in self._pending:
            raise ValueError(f"stream {stream_id} is already connecting")
        pending = _PendingConnect(self, stream_id, format_host_port(host, port))
        self._pending[stream_id] = pending
        pending.attempt = self._connect(host, port, pending.done, pending)

    def cancel(self, stream_id: int) -> None:
        """The stream is gone (the peer reset it): drop its connect, if any."""
        pending = self._pending.pop(stream_id, None)
        if pending is not None:
            pending.abandon()

    def cancel_all(self) -> None:
        pending, self._pending = self._pending, {}
        for entry in pending.values():
            entry.abandon()

    def _report(
        self, pending: _PendingConnect, sock: socket.socket | None, error: Failure | None
    ) -> None:
        if self._pending.get(pending.stream_id) is pending:
            del self._pending[pending.stream_id]
        self._on_result(pending.stream_id, pending.address, sock, error)


class _PendingConnect:
    """One stream's connect; owns the connector's callbacks."""

    __slots__ = ("_connects", "address", "attempt", "reported", "stream_id")

    def __init__(self, connects: PeerConnects, stream_id: int, address: str) -> None:
        self._connects = connects
        self.stream_id = stream_id
        self.address = address
        self.attempt: Cancellable | None = None
        self.reported = False

    @property
    def name(self) -> str:
        return f"connect to {self.address} for stream {self.stream_id}"

    def done(self, sock: socket.socket | None, error: Failure | None) -> None:
        if self.reported:
            if sock is not None:
                sock.close()
            return
        self.reported = True
        self._connects._report(self, sock, error)

    def abandon(self) -> None:
        self.reported = True
        if self.attempt is not None:
            self.attempt.cancel()

    def close_after_bug(self) -> None:
        """A bug while connecting fails this stream (SYN ERROR); a bug while the
        channel handled the result is the channel's, so it closes the channel."""
        if self.reported:
            self._connects._owner.close_after_bug()
            return
        if self.attempt is not None:
            self.attempt.cancel()
        self.done(None, Failure(FailureClass.FAILED, "internal error"))
