"""WebSocket channels: the channel's bytes in binary messages, over TCP or TLS.

Networks that let only HTTP(S) out, and servers that can expose only port 443
behind a reverse proxy, carry a channel as a WebSocket (RFC 6455) as chisel
does.  ``wsproto`` (sans-I/O, from the h11 authors) does the HTTP upgrade and
the framing; this module is the seam around it: a ``Transport`` to the channel
above, and a ``TransportProtocol`` to the transport below (TCP, or TLS for
``wss://`` and a TLS server), so TLS, the channel and the session see nothing
new.

* The client sends the upgrade at once and holds the channel's output until
  the server accepts it; a refusal is one line with the HTTP status.
* A server given ``--ws-path`` wraps every connection in ``Sniffer``: a first
  byte of 0 is a channel's HELLO (the transport below is handed to the channel
  and costs nothing more), an upper-case letter an HTTP request.  An upgrade at
  the path becomes a channel; anything else gets an ordinary ``404`` and is
  closed, so the port answers a scanner as a web server would.
* Pings are answered with pongs; the channel's own keepalive rides in binary
  messages, which is what keeps an idle channel alive through a proxy.
* The compiled data plane does not read a WebSocket channel's socket (its bytes
  need framing): the channel runs on the Python path, streams on the plane.

Every buffer is bounded: at most ``READ_SIZE`` is read from below per call and
not read again while the channel holds back, and ``send`` takes nothing while
``SEND_BACKLOG`` framed bytes wait for the transport below.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from reactor_mux.io.reactor import Reactor
from reactor_mux.io.transport import Transport, TransportProtocol
from reactor_mux.protocol.errorcodes import ErrorCode

READ_SIZE = 256 * 1024
"""Bytes read from the transport below per call (and the most held, undelivered)."""
MESSAGE_SIZE = 256 * 1024
"""The largest binary message ``send`` makes; more waits for the next call."""
SEND_BACKLOG = 1024 * 1024
"""Framed bytes waiting for the transport below before ``send`` takes nothing more."""
HELLO_AT = 9
"""Where a frame's command begins (after its 9-byte header, docs/protocol.md §1)."""
MAX_REQUEST_HEAD = 16 * 1024
"""The longest HTTP request or response head accepted (h11's own default bound)."""

RETRYABLE_STATUSES = (408, 425, 429)
"""4xx answers to the upgrade that say "later" (a timeout, too early, too many):
retried as a 5xx is; every other 4xx means a wrong URL."""

ORDERLY_CLOSE = (1000, 1001)
"""Close codes that end a channel in order (normal closure, going away); any other
is a failure with its reason."""

NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n"
    b"Connection: close\r\n\r\nnot found\n"
)
"""What a request that is not an upgrade at ``--ws-path`` gets: a web server's no."""


class Phase(enum.Enum):
    UPGRADE = "upgrade"  # the HTTP request and response
    OPEN = "open"  # binary messages carry the channel
    DONE = "done"  # closed, failed, or answered 404


class WebSocketTransport:
    """A channel in WebSocket binary messages over ``inner`` (either side)."""

    def __init__(
        self,
        reactor: Reactor,
        inner: Transport,
        *,
        client: bool,
        host: str = "",
        path: str = "/",
    ) -> None:
        self._reactor = reactor
        self._inner = inner
        self._client = client
        self._host = host
        self._path = path
        self._ws = WSConnection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
        self._phase = Phase.UPGRADE
        self._protocol: TransportProtocol | None = None
        self._read_buffer = bytearray(READ_SIZE)
        self._received: deque[memoryview] = deque()  # payload not yet given to the channel
        self._held = 0
        self._framed = bytearray()  # for the transport below, not yet taken by it
        self._want_read = False
        self._want_write = False
        self._drain_scheduled = False
        self._head = 0  # bytes of the HTTP head received so far
        self._plain = False  # the server answered in the channel protocol, not HTTP
        self._eof_pending = False  # the peer ended; payload before the end still waits
        self.closed = False

    # ------------------------------------------------------------ Transport

    @classmethod
    def taking_over(
        cls, reactor: Reactor, inner: Transport, protocol: TransportProtocol, path: str,
        first: bytes,
    ) -> WebSocketTransport:  # fmt: skip
        """Server: the HTTP request whose ``first`` bytes ``Sniffer`` read from
        ``inner`` (attached already) is answered here, for ``protocol``."""
        transport = cls(reactor, inner, client=False, path=path)
        transport._protocol = protocol
        inner.handover(transport)
        transport._read_buffer[: len(first)] = first
        transport.buffer_updated(len(first))
        return transport

    def attach(self, protocol: TransportProtocol) -> None:
        if self._protocol is not None:
            raise RuntimeError("transport already attached")
        self._protocol = protocol
        self._inner.attach(self)
        if self._client:
            request = Request(host=self._host, target=self._path,
                              extra_headers=[(b"user-agent", b"reactor-mux")])  # fmt: skip
            self._framed += self._ws.send(request)
        self._flush()

    def handover(self, protocol: TransportProtocol) -> None:
        self._protocol = protocol

    def set_interest(self, read: bool, write: bool) -> None:
        self._want_read, self._want_write = read, write
        if read and self._received:
            self._schedule_drain()
        self._update()

    def trust(self) -> None:
        self._inner.trust()

    def release_idle(self) -> None:
        self._inner.release_idle()

    def plane_socket(self) -> tuple[int, int]:
        return -1, 0  # the plane cannot frame: this channel's bytes stay in Python

    def plane_failure(self, code: int) -> str:
        return self._inner.plane_failure(code)

    @property
    def peer_certificate(self) -> bytes | None:
        return getattr(self._inner, "peer_certificate", None)

    def send(self, views: Sequence[memoryview]) -> int:
        if self._phase is not Phase.OPEN:
            raise BlockingIOError("WebSocket upgrade in progress")
        if self._plain:
            return self._inner.send(views)
        if len(self._framed) >= SEND_BACKLOG:
            self._flush()
            if len(self._framed) >= SEND_BACKLOG:
                raise BlockingIOError("WebSocket transport is still sending")
        message = bytearray()
        for view in views:
            message += view[: MESSAGE_SIZE - len(message)]
            if len(message) >= MESSAGE_SIZE:
                break
        self._framed += self._ws.send(BytesMessage(data=bytes(message)))
        self._flush()
        return len(message)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._phase is Phase.OPEN:
            try:  # a close frame, so the peer (or the proxy) reads an orderly end
                self._framed += self._ws.send(CloseConnection(code=1000))
                self._flush()
            except (LocalProtocolError, OSError):
                pass
        self._phase = Phase.DONE
        self._received.clear()
        self._inner.close()

    # ---------------------------------------------------- TransportProtocol

    def close_after_bug(self) -> None:
        if self._protocol is not None:
            self._protocol.close_after_bug()

    def get_buffer(self) -> memoryview:
        return memoryview(self._read_buffer)

    def buffer_updated(self, count: int) -> None:
        if self._phase is Phase.DONE or self._eof_pending:
            return  # after the end (a close frame): nothing more is the channel's
        data = bytes(self._read_buffer[:count])
        if self._plain:
            self._received.append(memoryview(data))
            self._held += count
            self._deliver()
            return
        if self._phase is Phase.UPGRADE:
            self._head += count
            if self._client and data[:1] == b"\0":
                self._channel_without_upgrade(data)
                return
        try:
            self._ws.receive_data(data)
            self._take_events()
        except RemoteProtocolError as exc:
            self._refuse_or_fail(exc)
            return
        except LocalProtocolError as exc:  # bytes after a close: wsproto's state says no
            self._fail(f"WebSocket: {exc}", ErrorCode.PROTOCOL)
            return
        if self._phase is Phase.UPGRADE and self._head > MAX_REQUEST_HEAD:
            self._fail(f"WebSocket: HTTP head longer than {MAX_REQUEST_HEAD} bytes",
                       ErrorCode.NOT_A_PEER)  # fmt: skip
            return
        self._deliver()
        self._flush()

    def eof_received(self) -> None:
        if self._phase is Phase.OPEN and not self._received:
            self._phase = Phase.DONE
            self._protocol_or_raise().eof_received()
        elif self._phase is Phase.OPEN:
            self._eof_pending = True  # told once what came before it is delivered
            self._update()
        elif self._phase is Phase.UPGRADE:
            self._fail("WebSocket: the connection closed during the upgrade", ErrorCode.PEER_CLOSED)

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        self._phase = Phase.DONE
        self._protocol_or_raise().transport_failed(reason, authentication=authentication,
                                                   code=code)  # fmt: skip

    def write_ready(self) -> None:
        self._flush()
        if self._phase is Phase.OPEN and len(self._framed) < SEND_BACKLOG and self._want_write:
            self._protocol_or_raise().write_ready()

    # ------------------------------------------------------------- internals

    def _protocol_or_raise(self) -> TransportProtocol:
        assert self._protocol is not None
        return self._protocol

    def _take_events(self) -> None:
        for event in self._ws.events():
            match event:
                case BytesMessage(data=data):
                    if data:
                        self._received.append(memoryview(data))
                        self._held += len(data)
                case Ping():
                    self._framed += self._ws.send(event.response())
                case CloseConnection(code=code, reason=reason):
                    if self._ws.state.name != "CLOSED":
                        self._framed += self._ws.send(event.response())
                    self._flush()
                    if code in ORDERLY_CLOSE:
                        self.eof_received()
                    else:  # a peer's error, or its frames broke the protocol (wsproto's own)
                        self._fail(f"WebSocket closed: {code} {reason or ''}".rstrip(),
                                   ErrorCode.PROTOCOL)  # fmt: skip
                    return
                case TextMessage():
                    self._fail("WebSocket: a text message where the channel sends binary",
                               ErrorCode.PROTOCOL)  # fmt: skip
                    return
                case Request(target=target):
                    self._answer_request(target)
                case AcceptConnection():
                    self._opened()
                case RejectConnection(status_code=status):
                    self._rejected(status)
                    return
                case RejectData():
                    pass
                case _:
                    pass  # Pong: traffic, which is all a pong says

    def _answer_request(self, target: str) -> None:
        """Server: an upgrade at our path becomes the channel; any other gets 404."""
        if target.split("?", 1)[0] != self._path:
            self._not_found(f"an HTTP upgrade for {target[:64]!r}, not the --ws-path")
            return
        self._framed += self._ws.send(AcceptConnection())
        self._opened()

    def _opened(self) -> None:
        """The upgrade is done: the channel's output (its HELLO waits) may go."""
        self._phase = Phase.OPEN
        protocol = self._protocol_or_raise()
        self._reactor.call_soon(protocol.write_ready, self)

    def _rejected(self, status: int) -> None:
        """Client: the server (or a proxy in front of it) answered the upgrade with a
        status: 5xx is a server or gateway that may recover, anything else a wrong
        address or path that no retry mends."""
        where = f"{self._host}{self._path}"
        if status >= 500 or status in RETRYABLE_STATUSES:
            self._fail(f"WebSocket upgrade at {where} answered HTTP {status}",
                       ErrorCode.PEER_CLOSED)  # fmt: skip
        else:
            self._fail(f"not a reactor-mux WebSocket endpoint: {where} answered HTTP {status} "
                       "to the upgrade (check the URL's path)", ErrorCode.NOT_A_PEER)  # fmt: skip

    def _refuse_or_fail(self, exc: RemoteProtocolError) -> None:
        if not self._client and self._phase is Phase.UPGRADE:
            self._not_found(f"an HTTP request that is not a WebSocket upgrade ({exc})")
        elif self._phase is Phase.UPGRADE:
            self._fail(f"not a reactor-mux WebSocket endpoint: {self._host} answered the upgrade "
                       f"with something else ({exc})", ErrorCode.NOT_A_PEER)  # fmt: skip
        else:
            self._fail(f"WebSocket: {exc}", ErrorCode.PROTOCOL)

    def _not_found(self, what: str) -> None:
        """Server: answer as a web server would, then end the connection."""
        self._framed = bytearray(NOT_FOUND)
        self._flush()
        self._fail(f"{what}: answered 404", ErrorCode.WEB_REQUEST)

    def _channel_without_upgrade(self, data: bytes) -> None:
        """Client: the server spoke the channel protocol instead of answering the
        upgrade.  Its HELLO means it takes no WebSocket channels; anything else is an
        ERROR it sends a connection it turns away before reading it (busy, full),
        which the channel reads as from any server, so it retries as it should."""
        if data[HELLO_AT : HELLO_AT + len(b"HELLO")] == b"HELLO":
            self._fail("a reactor-mux server that takes no WebSocket channels (start it with "
                       "--ws-path, or connect without ws://)",
                       ErrorCode.NOT_A_PEER)  # fmt: skip
            return
        self._phase = Phase.OPEN
        self._plain = True
        self._received.append(memoryview(data))
        self._held += len(data)
        self._schedule_drain()

    def _fail(self, reason: str, code: ErrorCode) -> None:
        if self._phase is Phase.DONE:
            return
        self._phase = Phase.DONE
        self._received.clear()
        protocol = self._protocol_or_raise()
        self._reactor.call_soon(lambda: protocol.transport_failed(reason, code=code), self)

    def _deliver(self) -> None:
        """Give received payload to the channel while it wants to read."""
        protocol = self._protocol
        while self._received and self._want_read and self._phase is Phase.OPEN:
            assert protocol is not None
            chunk = self._received[0]
            buffer = protocol.get_buffer()
            count = min(len(buffer), len(chunk))
            buffer[:count] = chunk[:count]
            if count == len(chunk):
                self._received.popleft()
            else:
                self._received[0] = chunk[count:]
            self._held -= count
            protocol.buffer_updated(count)
        if self._eof_pending and not self._received and self._phase is Phase.OPEN:
            self._eof_pending = False
            self.eof_received()
            return
        self._update()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            self._reactor.call_soon(self._drain, self)

    def _drain(self) -> None:
        self._drain_scheduled = False
        if not self.closed:
            self._deliver()

    def _flush(self) -> None:
        """Hand framed bytes to the transport below, as many as it takes now."""
        if self._framed:
            try:
                sent = self._inner.send([memoryview(self._framed)])
            except OSError:  # full (BlockingIOError), or failed: it reports that itself
                sent = 0
            del self._framed[:sent]
        self._update()

    def _update(self) -> None:
        if self.closed:
            return
        # Nothing more is read while our own output waits past SEND_BACKLOG: a peer
        # that sends pings and never reads would otherwise grow it with pongs.
        reading = (
            not self._eof_pending
            and len(self._framed) < SEND_BACKLOG
            and (
                self._phase is Phase.UPGRADE
                or (self._phase is Phase.OPEN and self._want_read and self._held < READ_SIZE)
            )
        )
        writing = bool(self._framed) or (self._phase is Phase.OPEN and self._want_write)
        self._inner.set_interest(reading, writing)


class Sniffer:
    """A server connection where a WebSocket may arrive (``--ws-path``): the first
    byte decides.  A channel's HELLO (a frame header, first byte 0) gets the
    transport below, and the sniffer only forwards; an HTTP request (an upper-case
    method) gets a ``WebSocketTransport``.  The channel's own first words (the
    server's HELLO) wait until then, so an HTTP client never reads them."""

    def __init__(self, reactor: Reactor, inner: Transport, path: str) -> None:
        self._reactor = reactor
        self._inner = inner
        self._path = path
        self._protocol: TransportProtocol | None = None
        self._chosen: Transport | None = None
        self._buffer: memoryview | None = None
        self._want_read = False
        self._want_write = False

    def attach(self, protocol: TransportProtocol) -> None:
        if self._protocol is not None:
            raise RuntimeError("transport already attached")
        self._protocol = protocol
        self._inner.attach(self)

    def handover(self, protocol: TransportProtocol) -> None:
        self._protocol = protocol
        if self._chosen is not None:
            self._chosen.handover(protocol)

    def set_interest(self, read: bool, write: bool) -> None:
        if self._chosen is not None:
            self._chosen.set_interest(read, write)
        else:
            self._want_read, self._want_write = read, write
            self._inner.set_interest(True, False)  # its first bytes decide; we say nothing yet

    def trust(self) -> None:
        (self._chosen or self._inner).trust()

    def release_idle(self) -> None:
        (self._chosen or self._inner).release_idle()

    def plane_socket(self) -> tuple[int, int]:
        return self._chosen.plane_socket() if self._chosen is not None else (-1, 0)

    def plane_failure(self, code: int) -> str:
        return (self._chosen or self._inner).plane_failure(code)

    @property
    def peer_certificate(self) -> bytes | None:
        return getattr(self._chosen or self._inner, "peer_certificate", None)

    @property
    def websocket(self) -> bool:
        """The connection turned out to be a WebSocket."""
        return isinstance(self._chosen, WebSocketTransport)

    def send(self, views: Sequence[memoryview]) -> int:
        if self._chosen is None:
            raise BlockingIOError("waiting for the client's first bytes")
        return self._chosen.send(views)

    def close(self) -> None:
        (self._chosen or self._inner).close()

    # ------------------------------------- TransportProtocol, until it decides

    def close_after_bug(self) -> None:
        if self._protocol is not None:
            self._protocol.close_after_bug()

    def get_buffer(self) -> memoryview:
        assert self._protocol is not None
        self._buffer = self._protocol.get_buffer()  # a channel's bytes land in place
        return self._buffer

    def buffer_updated(self, count: int) -> None:
        protocol, buffer = self._protocol, self._buffer
        assert protocol is not None and buffer is not None
        if 0x41 <= buffer[0] <= 0x5A:  # GET, and the other methods, answered 404
            self._chosen = WebSocketTransport.taking_over(
                self._reactor, self._inner, protocol, self._path, bytes(buffer[:count])
            )
        else:
            self._chosen = self._inner
            self._inner.handover(protocol)
            protocol.buffer_updated(count)
        self._chosen.set_interest(self._want_read, self._want_write)
        self._reactor.call_soon(protocol.write_ready, protocol)

    def eof_received(self) -> None:
        assert self._protocol is not None
        self._protocol.eof_received()

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        assert self._protocol is not None
        self._protocol.transport_failed(reason, authentication=authentication, code=code)

    def write_ready(self) -> None:
        pass  # nothing of ours to send before the choice
