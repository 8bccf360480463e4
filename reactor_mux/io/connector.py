"""Non-blocking outgoing TCP connections with a deadline.

A connector resolves its host (off-thread for names), then tries each
address in order until one answers, all within ``timeout`` seconds; an
address that has not answered within ``ATTEMPT_DELAY`` gets company from the
next one (happy eyeballs), and the first to connect wins.  It
reports exactly once: ``on_done(sock, None)`` or ``on_done(None, failure)``, a
``Failure`` whose class comes from the errno (or the deadline, the lookup, the
address check), so a SOCKS reply code is chosen by value, never by words;
``cancel()`` closes whatever it holds and suppresses the report, so a
failed or abandoned attempt never leaks a socket.  Every callback it
registers (resolution, writability, the deadline) belongs to the ``owner``
it is given: a bug in one of them costs that owner, not the process.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from functools import partial

from reactor_mux.io.netutil import connect_failure, tune_stream_socket
from reactor_mux.io.reactor import WRITE, IOWatch, Owner, Reactor, Timer
from reactor_mux.io.resolver import Address, Resolution, Resolver
from reactor_mux.protocol.failures import Failure, FailureClass

ATTEMPT_DELAY = 0.25
"""Seconds before the next address is tried beside one still connecting
(RFC 8305's recommended Connection Attempt Delay)."""

DoneCallback = Callable[[socket.socket | None, Failure | None], None]
AddressCheck = Callable[[str, int], str | None]
"""``check(address, port)``: why connecting there is refused, or None."""


class Connector:
    def __init__(
        self,
        reactor: Reactor,
        resolver: Resolver,
        host: str,
        port: int,
        on_done: DoneCallback,
        timeout: float,
        owner: Owner,
        address_check: AddressCheck | None = None,
    ) -> None:
        self._reactor = reactor
        self._address_check = address_check
        self._resolver = resolver
        self.host = host
        self.port = port
        self._on_done: DoneCallback | None = on_done
        self._timeout = timeout
        self._owner = owner
        self._addresses: list[Address] = []
        self._last_error = Failure(FailureClass.UNRESOLVED, "no address to connect to")
        self._attempts: dict[socket.socket, IOWatch] = {}
        """Connects in flight, at most one per address tried so far."""
        self._stagger: Timer | None = None
        self._timer: Timer | None = None
        self._resolution: Resolution | None = None
        self.finished = False

    def start(self) -> Connector:
        self._timer = self._reactor.call_later(self._timeout, self._on_timeout, self._owner)
        self._resolution = self._resolver.resolve(
            self.host, self.port, self._on_resolved, self._owner
        )
        return self

    def _on_resolved(self, addresses: list[Address], error: Failure | None) -> None:
        self._resolution = None
        if error is not None:
            self._finish(None, error)
            return
        self._addresses = list(addresses)
        self._try_next()

    def _try_next(self) -> None:
        """Start connecting to the next address; while it is in flight, another one
        starts every ``ATTEMPT_DELAY`` (happy eyeballs), so an address that drops
        packets does not hold up one that answers."""
        self._stagger = None
        while self._addresses and not self.finished:
            family, address = self._addresses.pop(0)
            if self._address_check is not None:
                refusal = self._address_check(address[0], address[1])
                if refusal is not None:  # checked after resolution: DNS rebinding
                    self._last_error = Failure(FailureClass.FORBIDDEN, refusal)
                    continue
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:  # out of descriptors, or the family is unsupported
                self._last_error = connect_failure(exc)
                continue
            tune_stream_socket(sock)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                watch = IOWatch(self._reactor, sock, partial(self._on_writable, sock), self._owner)
                watch.want(WRITE)
                self._attempts[sock] = watch
                if self._addresses:
                    self._stagger = self._reactor.call_later(
                        ATTEMPT_DELAY, self._try_next, self._owner
                    )
                return
            sock.close()
            self._last_error = connect_failure(code)
        if not self.finished and not self._attempts:
            self._finish(None, self._last_error)

    def _on_writable(self, sock: socket.socket, _mask: int) -> None:
        watch = self._attempts.pop(sock)
        watch.close()
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._release()  # the other attempts lose
            self._finish(sock, None)
            return
        sock.close()
        self._last_error = connect_failure(code)
        if self._addresses:
            if self._stagger is not None:
                self._stagger.cancel()
            self._try_next()  # a failure starts the next address at once
        elif not self._attempts:
            self._finish(None, self._last_error)

    def _on_timeout(self) -> None:
        self._timer = None
        if not self.finished:
            self._release()
            self._finish(None, Failure(FailureClass.TIMEOUT, f"timed out after {self._timeout:g}s"))

    def _release(self) -> None:
        if self._resolution is not None:
            self._resolution.cancel()
            self._resolution = None
        if self._stagger is not None:
            self._stagger.cancel()
            self._stagger = None
        attempts, self._attempts = self._attempts, {}
        for sock, watch in attempts.items():
            watch.close()
            sock.close()

    def _finish(self, sock: socket.socket | None, error: Failure | None) -> None:
        on_done = self._on_done
        self._stop()
        assert on_done is not None
        on_done(sock, error)

    def _stop(self) -> None:
        """Finished: drop the deadline and the report callback, so nothing here
        keeps the owner alive."""
        self.finished = True
        self._on_done = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def cancel(self) -> None:
        """Abandon the attempt; ``on_done`` will not be called."""
        if self.finished:
            return
        self._stop()
        self._release()
