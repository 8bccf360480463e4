"""UDP forwarding (``-L udp:...``, ``-R udp:...``): datagrams in their own frames.

A UDP mapping has two ends.  The *listening* end (the client's for ``-L udp``,
the server's for ``-R udp``) receives datagrams on BIND:PORT; each source
address is an *association*, numbered by this end, and its datagrams travel as
DATAGRAM frames of the mapping carrying that number.  The *connecting* end gives
each association its own UDP socket connected to the target, so the target's
replies come back on it and return, under the same number, to the source.

UDP's own rules hold: a datagram that finds the channel's queue full, the
channel cut, or no room for another association is dropped and counted, never
queued without bound and never sent again after a resume.  An association idle
for ``timeout`` seconds is forgotten at both ends (conntrack's rule); the sweep
that forgets them runs only while there are associations.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from reactor_mux.io.netutil import listen_sockets
from reactor_mux.io.reactor import READ, IOWatch, Owner, Reactor, Timer
from reactor_mux.io.resolver import Address, Resolution, Resolver
from reactor_mux.protocol.failures import Failure
from reactor_mux.protocol.limits import MAX_DATAGRAM

DEFAULT_UDP_TIMEOUT = 60.0
"""Seconds an association lives without a datagram either way (``--udp-timeout``)."""
MAX_ASSOCIATIONS = 1024
"""Associations per mapping at once; a datagram from one more source is dropped."""
DATAGRAMS_PER_WAKEUP = 64
"""Datagrams read from one socket per readiness event, so one busy source cannot
keep the reactor from everything else."""
SOCKET_BUFFER = 1024 * 1024
"""SO_RCVBUF and SO_SNDBUF of every UDP socket here (as far as the system allows):
a burst from many sources, at up to 64 KiB a datagram, fits without the kernel
dropping it before the reactor can read."""
WAITING_PER_ASSOCIATION = 16
"""Datagrams kept for an association whose target is still being resolved."""
MAX_CHANNEL_ASSOCIATIONS = 1024
"""Associations of all the UDP forwards of one channel (server) or one client at
once: at the connecting end each is a socket, so a client with many mappings
cannot make the server open more than this."""
MAX_WAITING_BYTES = 1024 * 1024
"""Bytes of datagrams held, all associations of a channel together, while targets
resolve."""
ADDRESS_TTL = 60.0
"""Seconds a UDP target's resolved addresses serve new associations."""
REFUSAL_BACKOFF = 5.0
"""Seconds a UDP target that could not be used (no address, none allowed) is not
asked about again: its datagrams are dropped and counted, and it is reported
once."""

SendToChannel = Callable[[int, bytes], bool]
"""``send(association, payload)``: True if the channel queued it, False if dropped."""


@dataclass
class DatagramCounts:
    """What a mapping's datagrams did, for status; each count also goes to the
    process's totals (``totals``, the metrics')."""

    sent: int = 0
    """Into the channel."""
    received: int = 0
    """Out of the channel, handed to a local socket."""
    dropped: int = 0
    """Dropped: the channel's queue full or the channel cut, too large, no room
    for another association, a local socket that refused it."""
    totals: DatagramCounts | None = field(default=None, repr=False, compare=False)

    def count(self, sent: int = 0, received: int = 0, dropped: int = 0) -> None:
        self.sent += sent
        self.received += received
        self.dropped += dropped
        if self.totals is not None:
            self.totals.count(sent, received, dropped)


class UdpBudget:
    """What every UDP end of one channel (server) or one client shares, so a peer
    cannot multiply the per-mapping limits by its mappings: associations (each a
    socket at the connecting end), and bytes held while a target resolves."""

    def __init__(
        self, associations: int = MAX_CHANNEL_ASSOCIATIONS, waiting: int = MAX_WAITING_BYTES
    ) -> None:
        self.associations_left = associations
        self.waiting_left = waiting

    def take_association(self) -> bool:
        if self.associations_left <= 0:
            return False
        self.associations_left -= 1
        return True

    def give_association(self) -> None:
        self.associations_left += 1

    def hold(self, size: int) -> bool:
        if size > self.waiting_left:
            return False
        self.waiting_left -= size
        return True

    def release(self, size: int) -> None:
        self.waiting_left += size


class _UdpEnd:
    """What both ends of a UDP mapping hold: the channel's way in, their counts and
    limits, and the sweep that forgets idle associations (armed only while there are
    associations)."""

    def __init__(
        self,
        reactor: Reactor,
        send: SendToChannel,
        owner: Owner,
        timeout: float,
        limit: int,
        totals: DatagramCounts | None,
        budget: UdpBudget | None,
    ) -> None:
        self._reactor = reactor
        self._send = send
        self._owner = owner
        self._timeout = timeout
        self._limit = limit
        self._budget = budget if budget is not None else UdpBudget()
        self.counts = DatagramCounts(totals=totals)
        self._sweeper: Timer | None = None
        self.closed = False

    def _into_channel(self, number: int, payload: bytes) -> None:
        """One datagram read here, into the channel: larger than UDP carries over IPv4,
        or refused by the channel (its queue full, the channel cut), it is dropped."""
        if len(payload) <= MAX_DATAGRAM and self._send(number, payload):
            self.counts.count(sent=1)
        else:
            self.counts.count(dropped=1)

    def _schedule_sweep(self) -> None:
        if self._sweeper is None and not self.closed:
            self._sweeper = self._reactor.call_later(self._timeout / 2, self._sweep, self._owner)

    def _sweep(self) -> None:
        raise NotImplementedError


class UdpListener(_UdpEnd):
    """The listening end: sockets on BIND:PORT (``localhost`` is both loopbacks);
    each source address an association."""

    def __init__(
        self,
        reactor: Reactor,
        host: str,
        port: int,
        send: SendToChannel,
        owner: Owner,
        *,
        timeout: float = DEFAULT_UDP_TIMEOUT,
        limit: int = MAX_ASSOCIATIONS,
        totals: DatagramCounts | None = None,
        budget: UdpBudget | None = None,
    ) -> None:
        super().__init__(reactor, send, owner, timeout, limit, totals, budget)
        self.sockets = listen_sockets(host, port, udp=True)
        for sock in self.sockets:
            _roomy(sock)
        first = self.sockets[0].getsockname()
        self.host, self.port = first[0], first[1]
        self.address = " and ".join("udp/" + _display(sock.getsockname())
                                    for sock in self.sockets)  # fmt: skip
        """Every address, for the log: ``udp/127.0.0.1:5353 and udp/[::1]:5353``."""
        self._watches = [IOWatch(reactor, sock, self._reader(index), owner)
                         for index, sock in enumerate(self.sockets)]  # fmt: skip
        for watch in self._watches:
            watch.want(READ)
        self._numbers: dict[tuple[int, tuple[object, ...]], int] = {}
        self._sources: dict[int, tuple[int, tuple[object, ...], float]] = {}
        self._next = 1

    @property
    def associations(self) -> int:
        return len(self._sources)

    def _reader(self, index: int) -> Callable[[int], None]:
        return lambda _mask: self._read(index)

    def _read(self, index: int) -> None:
        sock = self.sockets[index]
        now = time.monotonic()
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                payload, source = sock.recvfrom(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error for an earlier reply: nothing to read now
                continue
            number = self._numbers.get((index, source))
            if number is None:
                if len(self._sources) >= self._limit or not self._budget.take_association():
                    self.counts.count(dropped=1)
                    continue
                number = self._next
                self._next = self._next % 0xFFFFFFFF + 1
                self._numbers[(index, source)] = number
                self._schedule_sweep()
            self._sources[number] = (index, source, now)
            self._into_channel(number, payload)
            if self.closed:
                return

    def deliver(self, number: int, payload: bytes) -> None:
        """A reply for association ``number``: to its source (dropped if it is gone)."""
        entry = self._sources.get(number)
        if entry is None:
            self.counts.count(dropped=1)
            return
        index, source, _ = entry
        try:
            self.sockets[index].sendto(payload, source)
        except OSError:  # full, or the source is gone: UDP drops it
            self.counts.count(dropped=1)
            return
        self._sources[number] = (index, source, time.monotonic())
        self.counts.count(received=1)

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self._timeout
        for number, (index, source, seen) in list(self._sources.items()):
            if seen < cutoff:
                del self._sources[number]
                del self._numbers[(index, source)]
                self._budget.give_association()
        if self._sources:
            self._schedule_sweep()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for watch in self._watches:
            watch.close()
        for sock in self.sockets:
            sock.close()
        for _ in self._sources:
            self._budget.give_association()
        self._sources.clear()
        self._numbers.clear()


@dataclass
class _Association:
    sock: socket.socket | None
    watch: IOWatch | None
    seen: float
    waiting: list[bytes]


class UdpConnector(_UdpEnd):
    """The connecting end: one UDP socket per association, connected to the target.
    The target is resolved once for all associations (again after ``ADDRESS_TTL``),
    each address checked by ``check``; a target that cannot be used is not asked
    about again, nor reported again, for ``REFUSAL_BACKOFF``."""

    def __init__(
        self,
        reactor: Reactor,
        resolver: Resolver,
        host: str,
        port: int,
        send: SendToChannel,
        owner: Owner,
        *,
        check: Callable[[str, str, int], str | None] | None = None,
        timeout: float = DEFAULT_UDP_TIMEOUT,
        limit: int = MAX_ASSOCIATIONS,
        on_refused: Callable[[str], None] | None = None,
        totals: DatagramCounts | None = None,
        budget: UdpBudget | None = None,
    ) -> None:
        super().__init__(reactor, send, owner, timeout, limit, totals, budget)
        self._resolver = resolver
        self.host, self.port = host, port
        self._check = check
        self._on_refused = on_refused
        self._associations: dict[int, _Association] = {}
        self._addresses: list[Address] = []
        self._fresh_until = 0.0
        self._refused_until = 0.0
        self._resolution: Resolution | None = None
        self._unresolved: list[int] = []  # associations waiting for the lookup

    @property
    def associations(self) -> int:
        return len(self._associations)

    def deliver(self, number: int, payload: bytes) -> None:
        """A datagram of association ``number``: to the target, from its own socket."""
        association = self._associations.get(number)
        now = time.monotonic()
        if association is None:
            if (now < self._refused_until or len(self._associations) >= self._limit
                    or not self._budget.take_association()):  # fmt: skip
                self.counts.count(dropped=1)
                return
            association = _Association(None, None, now, [])
            self._associations[number] = association
            self._schedule_sweep()
            self._wait(association, payload)
            if self._addresses and now < self._fresh_until:
                self._open(number)
            else:
                self._unresolved.append(number)
                self._lookup()
            return
        association.seen = now
        if association.sock is None:
            self._wait(association, payload)
            return
        self._send_out(association, payload)

    def _wait(self, association: _Association, payload: bytes) -> None:
        if len(association.waiting) < WAITING_PER_ASSOCIATION and self._budget.hold(len(payload)):
            association.waiting.append(payload)
        else:
            self.counts.count(dropped=1)

    def _lookup(self) -> None:
        if self._resolution is None:
            self._resolution = self._resolver.resolve(self.host, self.port, self._resolved,
                                                      self._owner)  # fmt: skip

    def _send_out(self, association: _Association, payload: bytes) -> None:
        assert association.sock is not None
        try:
            association.sock.send(payload)
        except OSError:  # full, or ICMP said nobody listens: UDP drops it
            self.counts.count(dropped=1)
            return
        self.counts.count(received=1)

    def _resolved(self, found: list[Address], error: Failure | None) -> None:
        self._resolution = None
        if self.closed:
            return
        refusal = None if found else f"cannot resolve {self.host}: {error}"
        allowed = []
        for family, address in found:
            why = self._check(self.host, address[0], self.port) if self._check else None
            if why is None:
                allowed.append((family, address))
            else:
                refusal = why
        now = time.monotonic()
        waiting, self._unresolved = self._unresolved, []
        if allowed:
            self._addresses, self._fresh_until = allowed, now + ADDRESS_TTL
            for number in waiting:
                if number in self._associations:
                    self._open(number)
            return
        self._refused_until = now + REFUSAL_BACKOFF
        for number in waiting:
            if number in self._associations:
                self._drop(number)
        if refusal is not None and self._on_refused is not None:
            self._on_refused(f"{refusal} (not asked again for {REFUSAL_BACKOFF:g} s)")

    def _open(self, number: int) -> None:
        """Give association ``number`` its socket, connected to the first address that
        takes it, and send what waited."""
        association = self._associations[number]
        for family, address in self._addresses:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                _roomy(sock)
                sock.connect(address)
            except OSError:
                sock.close()
                continue
            association.sock = sock
            association.watch = IOWatch(self._reactor, sock, lambda _m: self._read(number),
                                        self._owner)  # fmt: skip
            association.watch.want(READ)
            waiting, association.waiting = association.waiting, []
            for payload in waiting:
                self._budget.release(len(payload))
                self._send_out(association, payload)
            return
        self._drop(number)

    def _drop(self, number: int) -> None:
        association = self._associations[number]
        self.counts.count(dropped=len(association.waiting))
        self._forget(number)

    def _read(self, number: int) -> None:
        association = self._associations.get(number)
        if association is None or association.sock is None:
            return
        for _ in range(DATAGRAMS_PER_WAKEUP):
            try:
                payload = association.sock.recv(MAX_DATAGRAM + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ICMP port unreachable for an earlier datagram
                continue
            association.seen = time.monotonic()
            self._into_channel(number, payload)
            if self.closed or number not in self._associations:
                return

    def _sweep(self) -> None:
        self._sweeper = None
        cutoff = time.monotonic() - self._timeout
        for number, association in list(self._associations.items()):
            if association.seen < cutoff:
                self._forget(number)
        if self._associations:
            self._schedule_sweep()

    def _forget(self, number: int) -> None:
        association = self._associations.pop(number)
        self._budget.give_association()
        for payload in association.waiting:
            self._budget.release(len(payload))
        if association.watch is not None:
            association.watch.close()
        if association.sock is not None:
            association.sock.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._resolution is not None:
            self._resolution.cancel()
            self._resolution = None
        for number in list(self._associations):
            self._forget(number)


def _display(address: tuple[object, ...]) -> str:
    host, port = str(address[0]), int(str(address[1]))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _roomy(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:  # capped by the system (net.core.rmem_max): what it gives
            pass
