"""Name resolution off the loop thread.

``getaddrinfo`` blocks, and one slow DNS answer would stall every stream of
a single-threaded reactor.  Names are therefore resolved by a small thread
pool whose results are posted back with ``call_soon_threadsafe``; IP
literals are answered at once.  The pool never touches stream data.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from reactor_mux.io.netutil import connect_failure
from reactor_mux.io.reactor import PROCESS, Owner, Reactor
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.syntax import is_ip_literal

Address = tuple[socket.AddressFamily, tuple[Any, ...]]
ResolveCallback = Callable[[list[Address], Failure | None], None]

RESOLVER_THREADS = 4


class Resolution:
    """A pending lookup.  It holds the callback and its owner until the answer is
    delivered; ``cancel()`` drops both at once, so a lookup that outlives its
    requester (a slow DNS answer for a closed channel) keeps nothing alive."""

    __slots__ = ("callback", "owner")

    def __init__(self, callback: ResolveCallback, owner: Owner) -> None:
        self.callback: ResolveCallback | None = callback
        self.owner: Owner | None = owner

    def cancel(self) -> None:
        self.callback = None
        self.owner = None

    def deliver(self, addresses: list[Address], error: Failure | None) -> None:
        callback = self.callback
        if callback is not None:
            self.cancel()
            callback(addresses, error)


def _lookup(host: str, port: int, numeric: bool) -> list[Address]:
    flags = socket.AI_NUMERICHOST if numeric else 0
    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, flags)
    seen: list[Address] = []
    for family, _type, _proto, _name, address in infos:
        entry = (family, address)
        if entry not in seen:
            seen.append(entry)
    return seen


class Resolver:
    def __init__(self, reactor: Reactor) -> None:
        self._reactor = reactor
        self._pool: ThreadPoolExecutor | None = None

    def resolve(self, host: str, port: int, callback: ResolveCallback, owner: Owner) -> Resolution:
        """Call ``callback(addresses, error)`` from the loop once ``host`` resolves;
        the call belongs to ``owner``."""
        handle = Resolution(callback, owner)
        if is_ip_literal(host):
            try:
                result = _lookup(host, port, numeric=True)
                error = None
            except OSError as exc:
                result, error = [], connect_failure(exc)
            self._reactor.call_soon(lambda: handle.deliver(result, error), owner)
            return handle
        if self._pool is None:
            self._pool = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="resolver")

        def done(future: Future[list[Address]]) -> None:
            try:
                addresses, error = future.result(), None
            except OSError as exc:
                addresses, error = [], connect_failure(exc)
            except Exception as exc:  # noqa: BLE001 - reported as a lookup failure
                addresses, error = (
                    [],
                    Failure(FailureClass.UNRESOLVED, f"cannot resolve host: {exc}"),
                )
            # The owner is read now: a cancelled lookup's delivery belongs to nobody.
            self._reactor.call_soon_threadsafe(
                lambda: handle.deliver(addresses, error), handle.owner or PROCESS
            )

        self._pool.submit(_lookup, host, port, False).add_done_callback(done)
        return handle

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
