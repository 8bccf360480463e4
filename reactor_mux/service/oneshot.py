"""Small request/response servers inside the reactor: the control socket and
``/metrics``.

Each connection sends one request, ended by a terminator (a newline, or the
blank line after HTTP headers), gets one response, and is closed.  They run
on the reactor like everything else (no thread), so what they report is
read between events and is always consistent.  Everything a peer can make
them hold is bounded: ``max_connections`` at once (one more is closed at
once), ``max_request`` bytes per request (more is answered ``too_large`` and
closed), and ``timeout`` seconds per connection, however slowly the peer
reads or writes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from reactor_mux.io.listener import Listener
from reactor_mux.io.netutil import PeerAddress, describe_error
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Reactor, Timer
from reactor_mux.logformat import event as log_event

log = logging.getLogger("reactor_mux")

Handler = Callable[[bytes], bytes]
"""The request (without its terminator) to the whole response."""


class OneShotServer:
    def __init__(
        self,
        reactor: Reactor,
        sockets: list[socket.socket],
        *,
        name: str,
        terminator: bytes,
        max_request: int,
        max_connections: int,
        timeout: float,
        handle: Handler,
        too_large: bytes,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.terminator = terminator
        self.max_request = max_request
        self.max_connections = max_connections
        self.timeout = timeout
        self.handle = handle
        self.too_large = too_large
        self.connections: set[_Exchange] = set()
        self._turned_away = False
        self.listeners = [Listener(reactor, "", 0, self._accept, sock=sock) for sock in sockets]

    def _accept(self, sock: socket.socket, _peer: PeerAddress) -> None:
        if len(self.connections) >= self.max_connections:
            if not self._turned_away:  # once per episode, not per connection
                log.warning("%s: %d connections at once (the limit): closing new ones",
                            self.name, self.max_connections,
                            extra=log_event("too_many_connections", peer=self.name))  # fmt: skip
                self._turned_away = True
            sock.close()
            return
        self._turned_away = False
        self.connections.add(_Exchange(self, sock))

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
        for exchange in list(self.connections):
            exchange.close()


class _Exchange:
    """One connection: read the request, write the response, close."""

    def __init__(self, server: OneShotServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.name = f"{server.name} connection"
        self._request = bytearray()
        self._response: memoryview | None = None
        self._watch = IOWatch(server.reactor, sock, self._on_io, self)
        self._watch.want(READ)
        self._timer: Timer | None = server.reactor.call_later(server.timeout, self.close, self)

    def _on_io(self, mask: int) -> None:
        try:
            if self._response is None and mask & READ:
                self._read()
            elif self._response is not None and mask & WRITE:
                self._write()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            log.debug("%s: %s", self.name, describe_error(exc))
            self.close()

    def _read(self) -> None:
        server = self.server
        chunk = self.sock.recv(4096)
        if not chunk:
            self.close()
            return
        self._request += chunk
        end = self._request.find(server.terminator)
        if end >= 0 and end <= server.max_request:
            self._respond(server.handle(bytes(self._request[:end])))
        elif len(self._request) > server.max_request:
            self._respond(server.too_large)

    def _respond(self, response: bytes) -> None:
        self._response = memoryview(response)
        self._watch.want(WRITE)
        self._write()

    def _write(self) -> None:
        assert self._response is not None
        sent = self.sock.send(self._response)
        self._response = self._response[sent:]
        if not self._response:
            self.close()

    def close_after_bug(self) -> None:
        self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._watch.close()
        self.sock.close()
        self.server.connections.discard(self)
