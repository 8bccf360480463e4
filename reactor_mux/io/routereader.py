"""Waiting for a new connection's first bytes, to learn where it belongs, without
consuming them (``protocol/routehint.py``).

The bytes are only peeked: whoever serves the connection, here or in the worker
it is handed to, reads them from the start.  Since peeked bytes keep the socket
readable, a wait for more (a HELLO split across segments) polls on a short timer
instead of the selector, up to ``ROUTE_WAIT``; a connection that has not named
its route by then is served where it landed.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from reactor_mux.io.netutil import abort_socket
from reactor_mux.io.reactor import READ, IOWatch, Reactor, Timer
from reactor_mux.protocol.routehint import PEEK_SIZE, NeedMore, Route, route_of

ROUTE_WAIT = 0.5
"""Seconds a connection may take to name its route (a client sends its opening at
once); then it is served where it landed."""
REPEEK_INTERVAL = 0.01

RouteCallback = Callable[[socket.socket, Route | None], None]


class RouteReader:
    """One new connection until its opening says where it goes: then
    ``on_route(sock, route)`` (None: nowhere in particular), nothing consumed."""

    def __init__(self, reactor: Reactor, sock: socket.socket, on_route: RouteCallback, *,
                 on_abort: Callable[[], None] | None = None) -> None:  # fmt: skip
        """``on_abort``: told when ``close`` drops the connection (evicted, shut down)."""
        self.name = "a connection naming its route"
        self._on_abort = on_abort
        self._reactor = reactor
        self._sock: socket.socket | None = sock
        self._on_route = on_route
        self._deadline = reactor.time() + ROUTE_WAIT
        self._watch = IOWatch(reactor, sock, self._on_readable, self)
        self._watch.want(READ)
        self._timer: Timer | None = reactor.call_later(ROUTE_WAIT, self._give_up, self)

    def close_after_bug(self) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (evicted to make room, or the server shuts down)."""
        sock = self._finish()
        if sock is not None:
            abort_socket(sock)
            if self._on_abort is not None:
                self._on_abort()

    def _finish(self) -> socket.socket | None:
        self._watch.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        sock, self._sock = self._sock, None
        return sock

    def _give_up(self) -> None:
        self._timer = None
        self._decide(None)

    def _decide(self, route: Route | None) -> None:
        sock = self._finish()
        if sock is not None:
            self._on_route(sock, route)

    def _on_readable(self, _mask: int) -> None:
        self._peek()

    def _peek(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # whoever serves it sees the error and says so
        route = route_of(data) if data else None
        if not isinstance(route, NeedMore):
            self._decide(route)
            return
        self._watch.want(0)  # peeked bytes keep it readable: poll instead
        if self._timer is not None and self._reactor.time() + REPEEK_INTERVAL < self._deadline:
            self._timer.cancel()
            self._timer = self._reactor.call_later(REPEEK_INTERVAL, self._repeek, self)

    def _repeek(self) -> None:
        self._timer = self._reactor.call_later(
            max(0.0, self._deadline - self._reactor.time()), self._give_up, self
        )
        self._peek()
