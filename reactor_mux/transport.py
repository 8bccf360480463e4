"""The seam between a channel and the bytes it travels over.

A ``Channel`` never touches its socket.  It reads and writes through a
``Transport``: the transport reads when the reactor says it can, into the
buffer the channel hands out (``get_buffer``, then ``buffer_updated``: the
shape of asyncio's buffered protocols, so the session's receive buffer is
filled with no copy), and takes whatever the channel has to send as a list of
views (``send``, scatter/gather).  Plain TCP is one recv and one sendmsg, with
the socket's own methods bound directly so the seam costs nothing on the fast
path.  TLS plugs in here: a transport that decrypts into the same buffer and
encrypts what ``send`` is given, and that may read several records per
readiness event or want writes of its own, which is why the transport, not
the channel, owns the socket's interest.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

from reactor_mux.netutil import describe_error, tune_channel_socket
from reactor_mux.reactor import READ, WRITE, IOWatch, Owner, Reactor


class TransportProtocol(Owner, Protocol):
    """What a transport drives (the channel); it also owns the transport's
    callbacks, so a bug while handling channel bytes closes the channel."""

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go."""

    def buffer_updated(self, count: int) -> None:
        """``count`` bytes were received into the last ``get_buffer()``."""

    def eof_received(self) -> None:
        """The peer closed its side of the channel."""

    def transport_failed(self, reason: str) -> None:
        """The connection broke (reset, timed out)."""

    def write_ready(self) -> None:
        """The transport can take more output now."""


class Transport(Protocol):
    """What a channel reads and writes through."""

    def attach(self, protocol: TransportProtocol) -> None:
        """Start delivering to ``protocol`` (once)."""

    def set_interest(self, read: bool, write: bool) -> None:
        """Whether the channel wants to read now, and has output waiting."""

    def send(self, views: Sequence[memoryview]) -> int:
        """Take what it can of ``views`` now and return the count; raises
        ``BlockingIOError`` when it can take nothing and ``OSError`` when the
        connection failed."""

    def close(self) -> None:
        """Release the connection (what was taken by ``send`` is not waited for)."""


class TcpTransport:
    """A channel over a plain TCP socket."""

    __slots__ = ("_protocol", "_reactor", "_sock", "_watch", "send")

    def __init__(self, reactor: Reactor, sock: socket.socket, keepalive_interval: float) -> None:
        tune_channel_socket(sock, keepalive_interval)
        self._reactor = reactor
        self._sock = sock
        self._watch: IOWatch | None = None
        self._protocol: TransportProtocol | None = None
        self.send = sock.sendmsg

    def attach(self, protocol: TransportProtocol) -> None:
        if self._protocol is not None:
            raise RuntimeError("transport already attached")
        self._protocol = protocol
        self._watch = IOWatch(self._reactor, self._sock, self._on_io, protocol)

    def set_interest(self, read: bool, write: bool) -> None:
        if self._watch is not None:
            self._watch.want((READ if read else 0) | (WRITE if write else 0))

    def _on_io(self, mask: int) -> None:
        protocol = self._protocol
        watch = self._watch
        assert protocol is not None and watch is not None
        if mask & WRITE:
            protocol.write_ready()
            if watch.closed:
                return
        if mask & READ:
            try:
                count = self._sock.recv_into(protocol.get_buffer())
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                protocol.transport_failed(f"channel read failed: {describe_error(exc)}")
                return
            if count:
                protocol.buffer_updated(count)
            else:
                protocol.eof_received()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
        self._sock.close()
