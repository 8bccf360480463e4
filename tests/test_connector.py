"""The connector in-process, on real loopback sockets: address fallback, the
deadline, cancellation, name resolution, and that a finished connect lets go."""

from __future__ import annotations

import gc
import socket
import time
import weakref

import pytest
from inprocess import Owner, run_until
from support import BlackHole

from reactor_mux.io.connector import ATTEMPT_DELAY, Connector
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.resolver import ResolveCallback
from reactor_mux.protocol.failures import Failure, FailureClass

pytestmark = pytest.mark.codec_independent


class FixedAnswers:
    """A resolver whose every answer is the same list of addresses (a name with
    several A records, without needing one in DNS)."""

    def __init__(self, reactor: Reactor, addresses: list[tuple[str, int]]) -> None:
        self._reactor = reactor
        self._addresses = [(socket.AF_INET, address) for address in addresses]

    def resolve(self, host: str, port: int, callback: ResolveCallback, owner: Owner):  # type: ignore[no-untyped-def]
        self._reactor.call_soon(lambda: callback(list(self._addresses), None), owner)
        return None


class Result:
    def __init__(self) -> None:
        self.calls: list[tuple[socket.socket | None, Failure | None]] = []

    def __call__(self, sock: socket.socket | None, error: Failure | None) -> None:
        self.calls.append((sock, error))


def listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


def closed_port() -> tuple[str, int]:
    """An address where nothing listens (held bound, not listening, so it stays so)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    closed_port.holders.append(holder)  # type: ignore[attr-defined]
    return holder.getsockname()


closed_port.holders = []  # type: ignore[attr-defined]


def test_a_refused_address_falls_back_to_the_next(reactor):
    server = listening()
    result = Result()
    names = FixedAnswers(reactor, [closed_port(), server.getsockname()])
    Connector(reactor, names, "db.example", 1, result, 5, Owner()).start()  # type: ignore[arg-type]
    run_until(reactor, lambda: bool(result.calls))
    sock, error = result.calls[0]
    assert error is None and sock is not None
    assert sock.getpeername() == server.getsockname()
    sock.close()
    server.close()


def test_every_address_refused_reports_the_last_reason(reactor):
    result = Result()
    names = FixedAnswers(reactor, [closed_port(), closed_port()])
    Connector(reactor, names, "db.example", 1, result, 5, Owner()).start()  # type: ignore[arg-type]
    run_until(reactor, lambda: bool(result.calls))
    assert result.calls == [(None, Failure(FailureClass.REFUSED, "connection refused"))]


def test_an_address_that_hangs_gets_company_and_the_next_one_wins(reactor):
    """Happy eyeballs: the second address starts ATTEMPT_DELAY after the first,
    and connects long before the first one's timeout."""
    hole = BlackHole()
    server = listening()
    result = Result()
    names = FixedAnswers(reactor, [("127.0.0.1", hole.port), server.getsockname()])
    started = time.monotonic()
    connector = Connector(reactor, names, "db.example", 1, result, 5, Owner()).start()  # type: ignore[arg-type]
    run_until(reactor, lambda: bool(result.calls))
    took = time.monotonic() - started
    sock, error = result.calls[0]
    assert error is None and sock is not None
    assert sock.getpeername() == server.getsockname()
    assert ATTEMPT_DELAY <= took < 2.5, took
    assert not connector._attempts, "the losing attempt was left open"
    sock.close()
    server.close()
    hole.close()


def test_a_connect_that_hangs_times_out(reactor, resolver):
    hole = BlackHole()
    result = Result()
    try:
        Connector(reactor, resolver, "127.0.0.1", hole.port, result, 0.2, Owner()).start()
        run_until(reactor, lambda: bool(result.calls))
    finally:
        hole.close()
    assert result.calls == [(None, Failure(FailureClass.TIMEOUT, "timed out after 0.2s"))]


def test_cancel_reports_nothing_and_closes_the_socket(reactor, resolver):
    hole = BlackHole()
    result = Result()
    connector = Connector(reactor, resolver, "127.0.0.1", hole.port, result, 5, Owner()).start()
    run_until(reactor, lambda: bool(connector._attempts))  # connecting, socket open
    [sock] = connector._attempts
    assert sock.fileno() >= 0
    connector.cancel()
    assert sock.fileno() == -1, "the connecting socket was left open"
    reactor.call_later(0.05, reactor.stop, Owner())
    reactor.run()
    hole.close()
    assert result.calls == []


def test_names_resolve_off_the_loop(reactor, resolver):
    server = listening()
    result = Result()
    port = server.getsockname()[1]
    Connector(reactor, resolver, "localhost", port, result, 5, Owner()).start()
    run_until(reactor, lambda: bool(result.calls))
    sock, error = result.calls[0]
    assert error is None and sock is not None and sock.getpeername()[1] == port
    sock.close()
    server.close()

    unknown = Result()
    Connector(reactor, resolver, "nonexistent.invalid", 80, unknown, 5, Owner()).start()
    run_until(reactor, lambda: bool(unknown.calls))
    assert unknown.calls[0][0] is None
    failure = unknown.calls[0][1]
    assert failure is not None and failure.kind is FailureClass.UNRESOLVED
    assert failure.text.startswith("cannot resolve host")


def test_a_finished_connector_does_not_keep_its_owner_alive(reactor, resolver):
    """The deadline timer stays in the heap until its time; it must not hold the
    connect's callback (and through it a channel) for ``--connect-timeout``."""
    server = listening()
    owner = Owner()
    result = Result()
    owner_ref, result_ref = weakref.ref(owner), weakref.ref(result)
    Connector(reactor, resolver, "127.0.0.1", server.getsockname()[1], result, 3600, owner).start()
    calls = result.calls
    run_until(reactor, lambda: bool(calls))
    calls[0][0].close()  # type: ignore[union-attr]
    del owner, result
    gc.collect()
    assert reactor.timer_count >= 1, "the cancelled deadline is still in the heap"
    assert owner_ref() is None and result_ref() is None
    server.close()


def test_a_cancelled_lookup_lets_go_while_the_name_is_still_resolving(
    reactor, resolver, monkeypatch
):
    """A slow DNS answer for an abandoned connect must not keep its owner (a
    closed channel, say) alive until getaddrinfo returns."""
    import threading

    from reactor_mux.io import resolver as resolver_module

    answer = threading.Event()
    real_lookup = resolver_module._lookup

    def slow_lookup(host: str, port: int, numeric: bool):  # type: ignore[no-untyped-def]
        answer.wait(10)
        return real_lookup(host, port, numeric)

    monkeypatch.setattr(resolver_module, "_lookup", slow_lookup)
    owner, result = Owner(), Result()
    owner_ref, result_ref = weakref.ref(owner), weakref.ref(result)
    connector = Connector(reactor, resolver, "localhost", 9, result, 5, owner).start()
    connector.cancel()
    del owner, result, connector
    gc.collect()
    assert owner_ref() is None and result_ref() is None, "the pending lookup holds them"
    answer.set()
    reactor.call_later(0.1, reactor.stop, Owner())
    reactor.run()  # the late answer is delivered to nobody
