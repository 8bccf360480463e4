"""Telling a connection turned away at accept why, in words its client can read.

A plaintext client reads the ``ERROR busy: ...`` frame written at once.  A TLS
client reads nothing outside TLS, so the refusal goes inside a TLS handshake
of its own; that costs a handshake, so only ``MAX_TLS_REPLIES`` run at once
(one per source block), each for at most ``TLS_REPLY_TIMEOUT`` seconds, and
any beyond that are closed without a word: the client then sees its
handshake cut, and retries as after any network failure.  A connection from a
penalised block is always closed without a word, as ssh does: whoever earned
the penalty learns nothing from us.
"""

from __future__ import annotations

import socket
import ssl

from reactor_mux.io.netutil import abort_socket, close_gently
from reactor_mux.io.reactor import Reactor, Timer
from reactor_mux.io.tls import TlsTransport
from reactor_mux.protocol.errorcodes import ErrorCode

MAX_TLS_REPLIES = 16
"""Refusals carried inside a TLS handshake at once, over all source blocks."""
TLS_REPLY_TIMEOUT = 2.0
"""Seconds a refused TLS client has to finish the handshake and read why."""


class BusyReplies:
    """The refusals still being told (TLS handshakes in progress)."""

    name = "busy replies"

    def __init__(self, reactor: Reactor, keepalive_interval: float) -> None:
        self._reactor = reactor
        self._keepalive_interval = keepalive_interval
        self._running: dict[str, _TlsReply] = {}

    def __len__(self) -> int:
        return len(self._running)

    def tell(
        self, sock: socket.socket, block: str, frame: bytes, tls: ssl.SSLContext | None
    ) -> bool:
        """Send ``frame`` (an ERROR) to the client on ``sock`` and close it; False if it
        was closed without a word (the TLS replies were all taken)."""
        if tls is None:
            try:
                sock.send(frame)
            except OSError:
                pass
            close_gently(sock)  # closing with unread bytes would reset, and may lose the frame
            return True
        if len(self._running) >= MAX_TLS_REPLIES or block in self._running:
            abort_socket(sock)
            return False
        reply = _TlsReply(self, block, frame)
        self._running[block] = reply
        reply.start(TlsTransport(self._reactor, sock, self._keepalive_interval, tls,
                                 server_side=True))  # fmt: skip
        return True

    def finish_tls(self, transport: TlsTransport, block: str, frame: bytes) -> bool:
        """Say ``frame`` inside a TLS handshake a channel had started (it was
        evicted): False if it was closed without a word (the replies were all taken)."""
        if len(self._running) >= MAX_TLS_REPLIES or block in self._running:
            transport.close()
            return False
        reply = _TlsReply(self, block, frame)
        self._running[block] = reply
        reply.take_over(transport)
        return True

    def _done(self, reply: _TlsReply) -> None:
        if self._running.get(reply.block) is reply:
            del self._running[reply.block]

    def close(self) -> None:
        for reply in list(self._running.values()):
            reply.finish()


class _TlsReply:
    """One refused TLS connection: the handshake, the ERROR frame, the close."""

    def __init__(self, replies: BusyReplies, block: str, frame: bytes) -> None:
        self.name = f"busy reply to {block}"
        self.block = block
        self._replies = replies
        self._frame = frame
        self._transport: TlsTransport | None = None
        self._timer: Timer | None = None
        self._scratch = memoryview(bytearray(512))

    def start(self, transport: TlsTransport) -> None:
        self._transport = transport
        self._timer = self._replies._reactor.call_later(TLS_REPLY_TIMEOUT, self.finish, self)
        transport.attach(self)
        transport.set_interest(read=True, write=True)

    def take_over(self, transport: TlsTransport) -> None:
        """Like ``start``, for a transport another owner attached (its handshake runs)."""
        self._transport = transport
        self._timer = self._replies._reactor.call_later(TLS_REPLY_TIMEOUT, self.finish, self)
        transport.handover(self)
        transport.set_interest(read=True, write=True)

    def finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            transport, self._transport = self._transport, None
            transport.close()
        self._replies._done(self)

    # ------------------------------------------------- TransportProtocol

    def get_buffer(self) -> memoryview:
        return self._scratch  # whatever the client says is not read

    def buffer_updated(self, count: int) -> None:
        pass

    def eof_received(self) -> None:
        self.finish()

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        self.finish()

    def write_ready(self) -> None:
        transport = self._transport
        if transport is None:
            return
        try:
            transport.send([memoryview(self._frame)])
        except BlockingIOError:
            return  # the handshake is not done yet: called again once it is
        except OSError:
            pass
        self.finish()  # TLS close_notify follows the frame

    def close_after_bug(self) -> None:
        self.finish()
