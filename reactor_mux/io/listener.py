"""A listening socket that hands accepted connections to a callback.

Accepting is batched (``ACCEPT_BATCH`` per readiness event) so a connection
storm cannot starve the other sockets.  A listening socket shared by several
processes (a server's workers) may ``should_yield`` a connection: it stops
watching for ``YIELD_PAUSE`` seconds so a less busy sibling takes it, at most
``MAX_YIELDS`` times in a row (a sibling that does not take it is stalled).
When ``accept`` fails for lack of file descriptors or memory, the listener
stops watching for ``ACCEPT_PAUSE`` seconds instead of spinning on a socket
that stays readable.  A bug in the listener closes it; a bug in the accept
handler (setting up a stream or a channel for one connection) costs that
connection only: it is reset unless something already watches it, and the
listener goes on.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
from collections.abc import Callable

from reactor_mux.io.netutil import (
    PeerAddress,
    abort_socket,
    describe_error,
    listen_socket,
    listen_sockets,
    listen_unix,
    sockname,
    tune_stream_socket,
)
from reactor_mux.io.reactor import READ, IOWatch, Reactor, Timer
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.syntax import format_host_port

log = logging.getLogger("reactor_mux")

ACCEPT_BATCH = 64
ACCEPT_PAUSE = 0.25
YIELD_PAUSE = 0.02
MAX_YIELDS = 3
_RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

AcceptCallback = Callable[[socket.socket, PeerAddress], None]

UNIX_PEER = "a Unix socket client"
"""The peer of a connection accepted on a Unix socket, for the log."""


class Listener:
    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        on_accept: AcceptCallback,
        *,
        sock: socket.socket | None = None,
        should_yield: Callable[[], bool] | None = None,
    ) -> None:
        """Listen on host:port (an IP literal), or on ``sock`` if given."""
        self._should_yield = should_yield
        self._yields = 0
        self._reactor = reactor
        self.sock = sock if sock is not None else listen_socket(host, port)
        if self.sock.family == socket.AF_UNIX:  # a control socket: a path, no port
            self.host, self.port = self.sock.getsockname(), 0
            self.address = self.host
        else:
            self.host, self.port = sockname(self.sock)
            self.address = format_host_port(self.host, self.port)
        self.name = f"listener on {self.address}"
        self._on_accept = on_accept
        self._watch = IOWatch(reactor, self.sock, self._on_readable, self)
        self._watch.want(READ)
        self._resume_timer: Timer | None = None
        self._starved = False
        self.closed = False

    def _on_readable(self, _mask: int) -> None:
        if self._should_yield is not None and self._yields < MAX_YIELDS and self._should_yield():
            self._yields += 1
            self._watch.want(0)
            self._resume_timer = self._reactor.call_later(YIELD_PAUSE, self._resume, self)
            return
        self._yields = 0
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
                log.warning("accept on %s works again", self.address,
                            extra=log_event("accept_resumed", address=self.address))  # fmt: skip
            tune_stream_socket(conn)
            if conn.family == socket.AF_UNIX:
                peer = (UNIX_PEER, 0)  # an unnamed client socket: nothing to tell
            handoff = _Handoff(self, conn, peer)
            self._reactor.call_guarded(handoff, self._on_accept, conn, peer)
            if self.closed:
                return

    def accept_waiting(self) -> None:
        while not self.closed and not self._starved and _readable(self.sock):
            self._on_readable(0)

    def _pause(self, exc: OSError) -> None:
        if not self._starved:  # say it once per episode, not four times a second
            self._starved = True
            what = "out of file descriptors" if exc.errno in _RESOURCE_ERRORS else "error"
            log.warning(
                "accept on %s failed (%s: %s); retrying every %.2fs",
                self.address,
                what,
                describe_error(exc),
                ACCEPT_PAUSE,
                extra=log_event(
                    "accept_paused", address=self.address, reason=f"{what}: {describe_error(exc)}"
                ),
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


class ListenerSet:
    """One listening address as the user wrote it, on every socket it takes:
    ``localhost`` is 127.0.0.1 and ::1 on the same port, ``::`` one dual-stack
    socket (``netutil.listen_sockets``)."""

    def __init__(self, reactor: Reactor, host: str, port: int, on_accept: AcceptCallback,
                 *, sockets: list[socket.socket] | None = None,
                 should_yield: Callable[[], bool] | None = None) -> None:  # fmt: skip
        """Listen on ``host`` and ``port``, or on ``sockets`` already bound (a server
        worker's, shared with its siblings, to which it may ``should_yield``)."""
        sockets = sockets if sockets is not None else listen_sockets(host, port)
        self.listeners = [Listener(reactor, "", 0, on_accept, sock=sock, should_yield=should_yield)
                          for sock in sockets]  # fmt: skip
        first = self.listeners[0]
        self.host, self.port = first.host, first.port
        self.address = " and ".join(listener.address for listener in self.listeners)
        """Every address, for the log: ``127.0.0.1:8080 and [::1]:8080``."""
        self.name = f"listener on {self.address}"
        self.path: str | None = None
        """The Unix socket's path (``UnixListenerSet``); None for host and port."""

    @property
    def closed(self) -> bool:
        return self.listeners[0].closed

    def accept_waiting(self) -> None:
        """Hand over the connections the system has already accepted (before a
        close, which would reset them: their clients saw the connect succeed)."""
        for listener in self.listeners:
            listener.accept_waiting()

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


class UnixListenerSet(ListenerSet):
    """A ListenerSet on one Unix socket path (the client's ``-L /PATH:...``, the
    server's ``-R /PATH:...``): mode 0600, a socket left by a dead process
    replaced, the path removed again at close."""

    def __init__(self, reactor: Reactor, path: str, on_accept: AcceptCallback) -> None:
        sock = listen_unix(path)
        try:
            self._inode = os.lstat(path).st_ino
        except OSError:
            sock.close()
            raise
        self.listeners = [Listener(reactor, "", 0, on_accept, sock=sock)]
        self.host, self.port = path, 0
        self.address = path
        self.path = path
        self.name = f"listener on {path}"

    def close(self) -> None:
        super().close()
        path = self.path
        assert path is not None
        with contextlib.suppress(OSError):
            if os.lstat(path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(path)


def _readable(sock: socket.socket) -> bool:
    """A connection waits in the backlog (a zero-timeout poll of the listening socket)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Handoff:
    """The owner charged for one run of the accept handler."""

    __slots__ = ("_conn", "_listener", "_peer")

    def __init__(self, listener: Listener, conn: socket.socket, peer: PeerAddress) -> None:
        self._listener = listener
        self._conn = conn
        self._peer = peer

    @property
    def name(self) -> str:
        peer = format_host_port(self._peer[0], self._peer[1])
        return f"{self._listener.name}: setting up the connection from {peer}"

    def close_after_bug(self) -> None:
        """Reset the connection unless something already watches it (its owner
        cleans up then), so the client is not left hanging."""
        try:
            claimed = self._conn in self._listener._reactor.selector.get_map()
        except (KeyError, ValueError):
            claimed = False
        if not claimed:
            abort_socket(self._conn)
