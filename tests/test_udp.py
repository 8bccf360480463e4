"""The UDP ends (tunnel/udp.py) on real loopback sockets under a real reactor, with
their limits made small enough to reach: associations per mapping, and a datagram
too large for a frame."""

from __future__ import annotations

import socket
import time

import pytest

from reactor_mux.io.reactor import Reactor
from reactor_mux.protocol.limits import MAX_DATAGRAM
from reactor_mux.tunnel.udp import DatagramCounts, UdpListener

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
