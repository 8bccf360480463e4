"""The UDP ends (tunnel/udp.py) on real loopback sockets under a real reactor, with
their limits made small enough to reach: associations per mapping, and a datagram
too large for a frame."""

from __future__ import annotations

import socket
import time

import pytest

from reactor_mux.io.reactor import Reactor
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.limits import MAX_DATAGRAM
from reactor_mux.tunnel.udp import (
    REFUSAL_BACKOFF,
    WAITING_PER_ASSOCIATION,
    DatagramCounts,
    UdpBudget,
    UdpConnector,
    UdpListener,
)

pytestmark = pytest.mark.codec_independent


class Owner:
    def close_after_bug(self) -> None:
        raise AssertionError("a callback raised")


def run_until(reactor: Reactor, predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Run the reactor until ``predicate()`` holds, or ``timeout`` passes."""
    owner = Owner()
    deadline = time.monotonic() + timeout

    def check() -> None:
        if predicate() or time.monotonic() > deadline:
            reactor.stop()
        else:
            reactor.call_later(0.02, check, owner)

    reactor.call_later(0.02, check, owner)
    reactor.run()
    return bool(predicate())


def test_sources_beyond_the_association_limit_are_dropped_and_counted():
    reactor = Reactor()
    sent: list[tuple[int, bytes]] = []
    totals = DatagramCounts()
    listener = UdpListener(reactor, "127.0.0.1", 0, lambda n, p: sent.append((n, p)) or True,
                           Owner(), limit=3, totals=totals)  # fmt: skip
    sources = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    try:
        for index, source in enumerate(sources):
            source.sendto(b"from %d" % index, ("127.0.0.1", listener.port))
        assert run_until(reactor, lambda: listener.counts.sent + listener.counts.dropped == 5)
        assert (listener.counts.sent, listener.counts.dropped) == (3, 2)
        assert listener.associations == 3 and totals.dropped == 2  # the process's totals too
        numbers = {number for number, _ in sent}
        assert len(numbers) == 3
        first = sent[0][0]
        listener.deliver(first, b"reply")  # back to the source that made the association
        assert sources[0].recv(16) == b"reply"
    finally:
        listener.close()
        for source in sources:
            source.close()
        reactor.close()


def test_a_datagram_larger_than_udp_allows_over_ipv4_is_dropped():
    """Over IPv6 loopback a datagram may be larger than IPv4's 65,507 bytes: the
    listener drops it rather than send what the far end could not pass on."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    reactor = Reactor()
    sent: list[bytes] = []
    try:
        listener = UdpListener(reactor, "::1", 0, lambda n, p: sent.append(p) or True, Owner())
    except OSError:
        pytest.skip("no IPv6 loopback")
    source = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        source.sendto(b"x" * (MAX_DATAGRAM + 10), ("::1", listener.port))
        source.sendto(b"x" * MAX_DATAGRAM, ("::1", listener.port))
        assert run_until(reactor, lambda: listener.counts.sent + listener.counts.dropped == 2)
        assert (listener.counts.sent, listener.counts.dropped) == (1, 1)
        assert [len(payload) for payload in sent] == [MAX_DATAGRAM]
    finally:
        listener.close()
        source.close()
        reactor.close()


class SilentResolver:
    """A resolver that answers only when told: the lookups asked for, kept."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int, object]] = []

    def resolve(self, host, port, callback, owner):  # type: ignore[no-untyped-def]
        self.asked.append((host, port, callback))

        class Pending:
            def cancel(self) -> None:
                pass

        return Pending()


def test_a_resolving_target_holds_few_datagrams_and_is_looked_up_once():
    """While the target resolves, an association keeps WAITING_PER_ASSOCIATION
    datagrams and the channel's budget bounds the bytes; every association waits on
    the same lookup."""
    reactor = Reactor()
    resolver = SilentResolver()
    budget = UdpBudget(associations=8, waiting=100_000)
    connector = UdpConnector(reactor, resolver, "slow.example", 53,  # type: ignore[arg-type]
                             lambda n, p: True, Owner(), budget=budget)  # fmt: skip
    try:
        for _ in range(WAITING_PER_ASSOCIATION + 5):
            connector.deliver(1, b"q" * 100)
        assert connector.counts.dropped == 5  # the rest of association 1's wait
        connector.deliver(2, b"x" * 60_000)
        connector.deliver(3, b"x" * 60_000)  # over the channel's waiting bytes
        assert connector.counts.dropped == 6 and budget.waiting_left < 100_000 - 61_000
        for number in range(4, 12):
            connector.deliver(number, b"y")  # 8 associations at most, channel-wide
        assert connector.associations == 8
        assert len(resolver.asked) == 1  # one lookup serves them all
    finally:
        connector.close()
        reactor.close()
    assert budget.associations_left == 8 and budget.waiting_left == 100_000  # all given back


def test_a_target_that_cannot_be_used_is_not_asked_about_again_for_a_while():
    reactor = Reactor()
    resolver = SilentResolver()
    refusals: list[str] = []
    connector = UdpConnector(reactor, resolver, "nosuch.invalid", 53,  # type: ignore[arg-type]
                             lambda n, p: True, Owner(), on_refused=refusals.append)  # fmt: skip
    try:
        connector.deliver(1, b"query")
        [(_, _, answer)] = resolver.asked
        answer([], Failure(FailureClass.UNRESOLVED, "name not known"))  # type: ignore[operator]
        for number in range(2, 100):
            connector.deliver(number, b"query")
        assert len(resolver.asked) == 1 and len(refusals) == 1  # one lookup, one line
        assert f"not asked again for {REFUSAL_BACKOFF:g} s" in refusals[0]
        assert connector.counts.dropped == 99 and connector.associations == 0
    finally:
        connector.close()
        reactor.close()
