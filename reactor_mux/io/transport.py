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

from reactor_mux.io.netutil import close_gently, describe_error, tune_channel_socket
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Owner, Reactor
from reactor_mux.protocol.errorcodes import ErrorCode


class TransportError(OSError):
    """A failure the transport has already put in words (a TLS alert, say); the
    channel logs ``reason`` as it is."""

    def __init__(
        self, reason: str, *, authentication: bool = False, code: ErrorCode = ErrorCode.TLS
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.authentication = authentication
        self.code = ErrorCode.AUTH_FAILED if authentication else code


class TransportProtocol(Owner, Protocol):
    """What a transport drives (the channel); it also owns the transport's
    callbacks, so a bug while handling channel bytes closes the channel."""

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go."""

    def buffer_updated(self, count: int) -> None:
        """``count`` bytes were received into the last ``get_buffer()``.  The
        channel may call ``set_interest(read=False, ...)`` from inside this
        call (its inbound buffers are full): deliver nothing more until reads
        are wanted again."""

    def eof_received(self) -> None:
        """The peer ended the connection in order (for TLS: close_notify; a TCP
        EOF without it is ``transport_failed``)."""

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        """The connection broke (reset, timed out, a TLS alert); ``authentication``:
        the peer failed to prove who it is (a client certificate was refused);
        ``code``: ``TLS`` when the TLS handshake failed, else the connection broke."""

    def write_ready(self) -> None:
        """The transport can take more output now."""


class Transport(Protocol):
    """What a channel reads and writes through.

    The contract a TLS transport must keep, as the TCP one does:

    * bytes it has already decrypted are not signalled by the selector, so it
      hands them over by itself (``call_soon``) while reads are wanted, and
      stops the moment ``set_interest(read=False)`` arrives;
    * ``send`` raises ``BlockingIOError`` while it can take nothing (the
      handshake has not finished, or the socket is full) and then calls
      ``write_ready`` once it can: the channel's HELLO waits for the handshake
      that way, inside the channel's handshake timeout;
    * it asks the selector for whatever its own work needs (a handshake
      read during a write, ciphertext still to flush) on top of what
      ``set_interest`` says the channel wants.
    """

    def attach(self, protocol: TransportProtocol) -> None:
        """Start delivering to ``protocol`` (once)."""

    def handover(self, protocol: TransportProtocol) -> None:
        """Deliver to ``protocol`` from now on (a resumed session takes over the
        connection that proved it may)."""

    def set_interest(self, read: bool, write: bool) -> None:
        """Whether the channel wants to read now, and whether it has output
        waiting (not a raw selector mask: the transport adds its own needs)."""

    def trust(self) -> None:
        """The peer proved itself: lift the bounds a stranger gets (TLS: its
        ciphertext buffers may grow to a busy channel's size)."""

    def plane_socket(self) -> tuple[int, int]:
        """The socket the data plane may read and write the channel on itself, and
        the TLS session it goes through (0: none); -1 where the transport must do
        the work (a TLS session the plane cannot drive, or not open yet)."""

    def plane_failure(self, code: int) -> str:
        """What the data plane's failure ``code`` on this transport was (TLS: an
        OpenSSL error code), as one line for the log."""

    def release_idle(self) -> None:
        """The channel went quiet: give back buffers that hold nothing (they are
        taken again when bytes come)."""

    def send(self, views: Sequence[memoryview]) -> int:
        """Take what it can of ``views`` now and return the count; raises
        ``BlockingIOError`` when it can take nothing and ``OSError`` when the
        connection failed."""

    def close(self) -> None:
        """Release the connection without waiting: what ``send`` took goes out
        as far as the socket takes it at once (TLS: then close_notify)."""


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

    def handover(self, protocol: TransportProtocol) -> None:
        if self._watch is None:
            raise RuntimeError("transport not attached")
        self._protocol = protocol
        self._watch.owner = protocol

    def set_interest(self, read: bool, write: bool) -> None:
        if self._watch is not None:
            self._watch.want((READ if read else 0) | (WRITE if write else 0))

    def trust(self) -> None:
        pass  # the channel's own buffers are the only ones, and the session bounds them

    def release_idle(self) -> None:
        pass  # it holds no buffer of its own

    def plane_socket(self) -> tuple[int, int]:
        return self._sock.fileno(), 0

    def plane_failure(self, code: int) -> str:
        return f"channel failed: error {code}"  # not reached: a plain socket fails by errno

    def _on_io(self, mask: int) -> None:
        protocol = self._protocol
        watch = self._watch
        assert protocol is not None and watch is not None
        if mask & WRITE:
            protocol.write_ready()
            if watch.closed:
                return
        if mask & watch.mask & READ:  # not a read asked for before this batch's changes
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
        close_gently(self._sock)
