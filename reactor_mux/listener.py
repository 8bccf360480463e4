"""A listening socket that hands accepted connections to a callback.

Accepting is batched (``ACCEPT_BATCH`` per readiness event) so a connection
storm cannot starve the other sockets.  When ``accept`` fails for lack of
file descriptors or memory, the listener stops watching for
``ACCEPT_PAUSE`` seconds instead of spinning on a socket that stays readable.
The accept handler runs inside the listener's I/O callback, so a bug in it
(or in the listener) closes this listener and nothing else.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

from reactor_mux.netutil import (
    PeerAddress,
    abort_socket,
    describe_error,
    listen_socket,
    sockname,
    tune_stream_socket,
)
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.reactor import READ, IOWatch, Reactor, Timer

log = logging.getLogger("reactor_mux")

ACCEPT_BATCH = 64
ACCEPT_PAUSE = 0.25
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

AcceptCallback = Callable[[socket.socket, PeerAddress], None]


class Listener:
    def __init__(self, reactor: Reactor, host: str, port: int, on_accept: AcceptCallback) -> None:
        self._reactor = reactor
        self.sock = listen_socket(host, port)
        self.host, self.port = sockname(self.sock)
        self.name = f"listener on {format_host_port(self.host, self.port)}"
        self._on_accept = on_accept
        self._watch = IOWatch(reactor, self.sock, self._on_readable, self)
        self._watch.want(READ)
        self._resume_timer: Timer | None = None
        self._starved = False
        self.closed = False

    def _on_readable(self, _mask: int) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                self._pause(exc)
                return
            if self._starved:
                self._starved = False
                log.warning("%s: accept works again", self.name)
            tune_stream_socket(conn)
            try:
                self._on_accept(conn, peer)
            except BaseException:
                self._drop_unclaimed(conn)
                raise  # the reactor logs it and closes this listener
            if self.closed:
                return

    def _drop_unclaimed(self, conn: socket.socket) -> None:
        """The handler failed: reset the connection unless something already
        watches it (then its owner cleans up), so the client is not left hanging."""
        try:
            claimed = conn in self._reactor.selector.get_map()
        except (KeyError, ValueError):
            claimed = False
        if not claimed:
            abort_socket(conn)

    def _pause(self, exc: OSError) -> None:
        if not self._starved:  # say it once per episode, not four times a second
            self._starved = True
            what = "out of file descriptors" if exc.errno in _RESOURCE_ERRORS else "error"
            log.warning(
                "%s: accept failed (%s: %s); retrying every %.2fs",
                self.name,
                what,
                describe_error(exc),
                ACCEPT_PAUSE,
            )
        self._watch.want(0)
        self._resume_timer = self._reactor.call_later(ACCEPT_PAUSE, self._resume, self)

    def _resume(self) -> None:
        self._resume_timer = None
        if not self.closed:
            self._watch.want(READ)

    def close_after_bug(self) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._resume_timer is not None:
            self._resume_timer.cancel()
        self._watch.close()
        self.sock.close()
