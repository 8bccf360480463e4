"""Non-blocking outgoing TCP connections with a deadline.

A connector resolves its host (off-thread for names), then tries each
address in turn until one answers, all within ``timeout`` seconds.  It
reports exactly once: ``on_done(sock, None)`` or ``on_done(None, reason)``;
``cancel()`` closes whatever it holds and suppresses the report, so a
failed or abandoned attempt never leaks a socket.  Every callback it
registers (resolution, writability, the deadline) belongs to the ``owner``
it is given: a bug in one of them costs that owner, not the process.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable

from reactor_mux.netutil import describe_error, tune_stream_socket
from reactor_mux.reactor import WRITE, IOWatch, Owner, Reactor, Timer
from reactor_mux.resolver import Address, Resolution, Resolver

DoneCallback = Callable[[socket.socket | None, str | None], None]
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
        self._last_error = "no address to connect to"
        self._sock: socket.socket | None = None
        self._watch: IOWatch | None = None
        self._timer: Timer | None = None
        self._resolution: Resolution | None = None
        self.finished = False

    def start(self) -> Connector:
        self._timer = self._reactor.call_later(self._timeout, self._on_timeout, self._owner)
        self._resolution = self._resolver.resolve(
            self.host, self.port, self._on_resolved, self._owner
        )
        return self

    def _on_resolved(self, addresses: list[Address], error: str | None) -> None:
        self._resolution = None
        if error is not None:
            self._finish(None, error)
            return
        self._addresses = list(addresses)
        self._try_next()

    def _try_next(self) -> None:
        while self._addresses and not self.finished:
            family, address = self._addresses.pop(0)
            if self._address_check is not None:
                refusal = self._address_check(address[0], address[1])
                if refusal is not None:  # checked after resolution: DNS rebinding
                    self._last_error = refusal
                    continue
            try:
                sock = socket.socket(family, socket.SOCK_STREAM)
            except OSError as exc:  # out of descriptors, or the family is unsupported
                self._last_error = describe_error(exc)
                continue
            tune_stream_socket(sock)
            code = sock.connect_ex(address)
            if code in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                self._sock = sock
                self._watch = IOWatch(self._reactor, sock, self._on_writable, self._owner)
                self._watch.want(WRITE)
                return
            sock.close()
            self._last_error = describe_error(code)
        if not self.finished:
            self._finish(None, self._last_error)

    def _on_writable(self, _mask: int) -> None:
        sock = self._sock
        assert sock is not None and self._watch is not None
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._watch.close()
        self._watch = None
        self._sock = None
        if code == 0:
            self._finish(sock, None)
            return
        sock.close()
        self._last_error = describe_error(code)
        self._try_next()

    def _on_timeout(self) -> None:
        self._timer = None
        if not self.finished:
            self._release()
            self._finish(None, f"timed out after {self._timeout:g}s")

    def _release(self) -> None:
        if self._resolution is not None:
            self._resolution.cancel()
            self._resolution = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _finish(self, sock: socket.socket | None, error: str | None) -> None:
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
