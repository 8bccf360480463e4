"""Reading a PROXY protocol header off a new connection, and nothing past it.

The header is consumed exactly (peeked first, then received to its length),
so TLS or the channel's HELLO that the balancer pipelines behind it stays in
the socket for whatever reads next.  Bytes that cannot end the header yet are
consumed as they come, so a level-triggered wait never spins on them.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from reactor_mux.io.netutil import abort_socket, describe_error
from reactor_mux.io.reactor import READ, IOWatch, Reactor, Timer
from reactor_mux.protocol.proxyheader import MAX_HEADER, ProxyHeader, ProxyHeaderError, parse

log = logging.getLogger("reactor_mux")

HeaderCallback = Callable[[socket.socket, ProxyHeader], None]
FailureCallback = Callable[[str], None]


class ProxyHeaderReader:
    """One connection from a trusted balancer until its header is in: then
    ``on_header(sock, header)``; on a bad header, a timeout or a close,
    ``on_failure(why)`` with the socket already reset."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        where: str,
        timeout: float,
        on_header: HeaderCallback,
        on_failure: FailureCallback,
    ) -> None:
        self.name = f"PROXY header from {where}"
        self._sock: socket.socket | None = sock
        self._got = b""
        self._on_header = on_header
        self._on_failure = on_failure
        self._watch = IOWatch(reactor, sock, self._on_readable, self)
        self._watch.want(READ)
        self._timer: Timer | None = reactor.call_later(timeout, self._on_timeout, self)

    def close_after_bug(self) -> None:
        self._fail("internal error")

    def close(self) -> None:
        """Drop the connection (the server shuts down)."""
        self._finish()
        sock, self._sock = self._sock, None
        if sock is not None:
            abort_socket(sock)

    def _on_timeout(self) -> None:
        self._timer = None
        self._fail("no PROXY protocol header in time")

    def _on_readable(self, _mask: int) -> None:
        sock = self._sock
        assert sock is not None
        try:
            peeked = sock.recv(MAX_HEADER - len(self._got), socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(describe_error(exc))
            return
        if not peeked:
            self._fail("closed before its PROXY protocol header")
            return
        try:
            header = parse(self._got + peeked)
        except ProxyHeaderError as exc:
            self._fail(str(exc))
            return
        take = len(peeked) if header is None else header.length - len(self._got)
        try:
            consumed = sock.recv(take)
        except OSError as exc:
            self._fail(describe_error(exc))
            return
        self._got += consumed
        if header is None or len(consumed) != take:
            return  # the rest is on its way (or a second read finds it)
        self._finish()
        self._sock = None
        self._on_header(sock, header)

    def _finish(self) -> None:
        self._watch.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, why: str) -> None:
        self.close()
        self._on_failure(why)
