"""``-D``: the SOCKS negotiation of each accepted connection, before it is a stream.

A connection accepted on a ``-D`` port is read here until its SOCKS request
is complete (``socks.SocksHandshake`` does the parsing); then it becomes a
stream whose SYN names the requested target, and ``SocksOpenHook`` gives the
SOCKS client its reply when the server answers the SYN.  A negotiation that
is malformed is answered (where SOCKS has a reply for it), logged and closed;
one that does not finish within the handshake timeout is closed; at most
``MAX_SOCKS_NEGOTIATIONS`` run at once per ``-D`` port.

The same negotiation serves reverse dynamic forwarding (``-R PORT`` with no
target): there the connection is the client's end of a stream the server
opened, and ``LocalConnect`` connects from the client to the requested
target and joins the two with a ``Splice``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from reactor_mux.io.connector import Connector
from reactor_mux.io.netutil import PeerAddress, abort_socket
from reactor_mux.io.reactor import READ, IOWatch, Reactor, Timer
from reactor_mux.io.resolver import Resolver
from reactor_mux.io.splice import Splice
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.failures import Failure, FailureClass, class_of
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.roles.socks import (
    MAX_HANDSHAKE_BYTES,
    SocksError,
    SocksHandshake,
    SocksRequest,
    failure_reply,
    success_reply,
)

log = logging.getLogger("reactor_mux")

MAX_SOCKS_NEGOTIATIONS = 256
"""SOCKS clients per ``-D`` port still negotiating; the next one is reset at once."""

RequestCallback = Callable[[socket.socket, SocksRequest, "SocksOpenHook"], None]


class SocksOpenHook:
    """The SOCKS reply, sent when the server answers the stream's SYN."""

    def __init__(self, request: SocksRequest, early_data: bytes) -> None:
        self.request = request
        self._early_data = early_data

    def accepted(self, sock: socket.socket) -> bytes | None:
        if not _send_all_now(sock, success_reply(self.request.version)):
            return None
        early, self._early_data = self._early_data, b""
        return early

    def refused(self, sock: socket.socket, reason: str) -> None:
        _send_all_now(sock, failure_reply(self.request.version, class_of(reason)))

    def reply_failure(self, sock: socket.socket, failure: FailureClass) -> None:
        _send_all_now(sock, failure_reply(self.request.version, failure))


class SocksPort:
    """The negotiations running on one ``-D`` listener."""

    def __init__(
        self, reactor: Reactor, flag: str, timeout: float, on_request: RequestCallback
    ) -> None:
        self.reactor = reactor
        self.flag = flag
        self.timeout = timeout
        self.on_request = on_request
        self.negotiations: set[SocksNegotiation] = set()
        self._warned_full = False

    def accept(self, sock: socket.socket, peer: PeerAddress) -> None:
        self.negotiate(sock, f"{self.flag} from {format_host_port(peer[0], peer[1])}")

    def negotiate(self, sock: socket.socket, label: str) -> None:
        if len(self.negotiations) >= MAX_SOCKS_NEGOTIATIONS:
            if not self._warned_full:
                log.warning("%s: reset: %d SOCKS clients are still negotiating (limit)",
                            label, MAX_SOCKS_NEGOTIATIONS,
                            extra=log_event("socks_full", mapping=self.flag))  # fmt: skip
                self._warned_full = True
            abort_socket(sock)
            return
        self._warned_full = False
        self.negotiations.add(SocksNegotiation(self, sock, label))

    def close(self) -> None:
        for negotiation in list(self.negotiations):
            negotiation.close()


class SocksNegotiation:
    """One accepted connection, until its request is read (or it fails)."""

    def __init__(self, port: SocksPort, sock: socket.socket, label: str) -> None:
        self._port = port
        self.sock = sock
        self.name = label
        self._handshake = SocksHandshake()
        self._watch = IOWatch(port.reactor, sock, self._on_readable, self)
        self._watch.want(READ)
        self._timer: Timer | None = port.reactor.call_later(port.timeout, self._on_timeout, self)

    def _on_readable(self, _mask: int) -> None:
        try:
            data = self.sock.recv(MAX_HANDSHAKE_BYTES + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log.debug("%s: closed before its SOCKS request", self.name)
            self.close()
            return
        handshake = self._handshake
        try:
            reply = handshake.receive(data)
        except SocksError as exc:
            log.warning("%s: bad SOCKS request: %s", self.name, exc,
                        extra=log_event("socks_bad_request", mapping=self._port.flag,
                                        reason=str(exc)))  # fmt: skip
            _send_all_now(self.sock, exc.reply)
            self.close()
            return
        if reply and not _send_all_now(self.sock, reply):
            self.close()
            return
        request = handshake.request
        if request is not None:
            self._release()
            self._port.on_request(self.sock, request, SocksOpenHook(request, handshake.early_data))

    def _on_timeout(self) -> None:
        self._timer = None
        log.warning("%s: no SOCKS request within %gs", self.name, self._port.timeout,
                    extra=log_event("socks_timeout", mapping=self._port.flag))  # fmt: skip
        self.close()

    def _release(self) -> None:
        """Stop watching; the socket goes on to a stream (or is closed by the caller)."""
        self._port.negotiations.discard(self)
        self._watch.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        self._release()
        self.sock.close()

    def close_after_bug(self) -> None:
        self._release()
        abort_socket(self.sock)


class LocalConnect:
    """Reverse dynamic forwarding: connect from this side to the target a SOCKS
    request names, reply, then join the SOCKS connection to the target."""

    def __init__(
        self,
        reactor: Reactor,
        resolver: Resolver,
        sock: socket.socket,
        request: SocksRequest,
        hook: SocksOpenHook,
        timeout: float,
        label: str,
    ) -> None:
        self._reactor = reactor
        self._sock = sock
        self._hook = hook
        self.target = format_host_port(request.host, request.port)
        self.name = f"{label} to {self.target}"
        self._label = label
        self._connector = Connector(reactor, resolver, request.host, request.port,
                                    self._on_connected, timeout, self)  # fmt: skip
        self._connector.start()

    def _on_connected(self, target: socket.socket | None, error: Failure | None) -> None:
        sock, hook = self._sock, self._hook
        if target is None:
            assert error is not None
            log.warning("%s: connect to %s failed: %s", self.name, self.target, error,
                        extra=log_event("connect_failed", mapping=self._label, peer=self.target,
                                        reason=error.text))  # fmt: skip
            hook.reply_failure(sock, error.kind)
            sock.close()
            return
        early = hook.accepted(sock)
        if early is None or not _send_all_now(target, early):
            abort_socket(sock)
            abort_socket(target)
            return
        log.debug("%s: connected", self.name)
        Splice(self._reactor, sock, target, self.name)

    def close_after_bug(self) -> None:
        self._connector.cancel()
        abort_socket(self._sock)


def _send_all_now(sock: socket.socket, data: bytes) -> bool:
    """Send a short reply on a socket that has nothing else queued; False if it
    did not all fit at once (a SOCKS client that does not read is dropped)."""
    if not data:
        return True
    try:
        return sock.send(data) == len(data)
    except OSError:
        return False
