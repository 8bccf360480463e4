"""Admission: which new connections a server takes on before they authenticate.

A connection that has not yet authenticated (or, with no authentication
configured, not yet finished its HELLO) is a *startup*.  Startups never count
against ``--max-channels``, which counts authenticated channels only, so
strangers cannot fill the room kept for clients and their resumes.  They are
bounded on their own, by the rules OpenSSH uses, per *source block*
(``sourceblock``), each decided at accept before a byte is read:

1. a block serving a penalty (``penalties``) is turned away;
2. a block with ``--per-source-max-startups`` startups gets no more;
3. above START startups in all (``--max-startups START:RATE:FULL``), a new
   connection from a block that already has one is refused with probability
   RATE%, rising linearly to 100% at FULL: ssh's random early drop.

Where this goes beyond ssh: a block with *no* startup is never refused for the
others' sake.  At FULL it takes the place of the oldest startup of the block
holding the most, so a stranger with many connections, even from many
addresses, cannot crowd out a client whose handshake takes a few milliseconds;
only an attacker with more source blocks than FULL comes close, and then new
connections still displace old idle ones.  One exception keeps a reconnect
storm from undoing its own handshakes (there, the oldest startup is the one
nearest to done): the oldest startups within their protection are shielded,
as many as the server lately finished at once, half of them at most
(``protection``).  A flood's startups never finish, so its shield stays small.
Evicted startups count as ``noauth`` offences, which repeat quickly only for a
block that keeps many connections idle.  A balancer's health check is never
refused for the startups' sake and never evicts one, nor is it evicted: it may
exceed FULL (the balancer's connections still sending their PROXY header are
bounded by FULL too).

The class is sans-I/O: it keeps counts and answers questions, given the time
and a random source; the server closes what it says to close.  A server of
several workers (``--workers``) counts the limits across all of them: each
worker's Admission adds what its siblings hold (``SharedStartups``, a page of
counters they all map) and publishes its own.  A worker with no startup of its
own admits a new source even when its siblings hold FULL (it has none to
evict): the whole server may then exceed FULL by one per worker at most.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import random
from collections import deque
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Protocol

from reactor_mux.security.penalties import Offence, PenaltyBox, PenaltySpec
from reactor_mux.security.protection import Protection
from reactor_mux.security.sourceblock import Netblock

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class MaxStartupsError(ValueError):
    """A ``--max-startups`` value that cannot be used."""


@dataclass(frozen=True)
class MaxStartups:
    """``--max-startups START:RATE:FULL`` (or ``N``: refuse above N, no randomness)."""

    start: int = 10
    rate: int = 30
    full: int = 100

    @classmethod
    def parse(cls, text: str) -> MaxStartups:
        parts = text.strip().split(":")
        try:
            numbers = [int(part) for part in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            numbers = [numbers[0], 100, numbers[0]]
        if len(numbers) != 3:
            raise MaxStartupsError(f"{text!r} is not START:RATE:FULL (such as 10:30:100) or N")
        start, rate, full = numbers
        if not 1 <= start <= full <= 1 << 20 or not 0 <= rate <= 100:
            raise MaxStartupsError(f"{text!r}: need 1 <= START <= FULL <= 1048576 and RATE "
                                   "in 0..100")  # fmt: skip
        return cls(start, rate, full)

    def spell(self) -> str:
        return f"{self.start}:{self.rate}:{self.full}"

    def drop_probability(self, startups: int) -> float:
        """The chance a connection is refused with ``startups`` already in progress."""
        if startups < self.start:
            return 0.0
        if startups >= self.full:
            return 1.0
        span = self.full - self.start
        return (self.rate + (100 - self.rate) * (startups - self.start) / span) / 100


DEFAULT_PER_SOURCE_MAX_STARTUPS = 10
"""Startups from one source block at once (ssh has no default; 10 is its START)."""


@dataclass(frozen=True)
class AdmissionConfig:
    """The admission options, as the command line gives them."""

    max_startups: MaxStartups = field(default_factory=MaxStartups)
    per_source_max_startups: int = DEFAULT_PER_SOURCE_MAX_STARTUPS
    netblock: Netblock = field(default_factory=Netblock)
    penalties: PenaltySpec = field(default_factory=PenaltySpec)
    exempt: tuple[Network, ...] = ()
    """``--penalty-exempt``: sources never penalised."""


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """``address`` (an IPv4-mapped IPv6 one as its IPv4 self) is in one of ``networks``."""
    if not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


class Refusal(enum.Enum):
    """Why a connection was turned away at accept; the value is its metric label."""

    PENALTY = "penalty"
    PER_SOURCE = "per_source"
    STARTUPS = "startups"

    @property
    def reason(self) -> str:
        """For the log and for the client (after ``busy:``)."""
        return _REASONS[self]


_REASONS = {
    Refusal.PENALTY: "its source failed or misbehaved before authenticating, and is turned "
    "away for a while (--per-source-penalties)",
    Refusal.PER_SOURCE: "too many unauthenticated connections from its source "
    "(--per-source-max-startups)",
    Refusal.STARTUPS: "too many unauthenticated connections (--max-startups)",
}


class Startup:
    """One connection that has not authenticated yet."""

    __slots__ = ("address", "block", "evicted", "owner", "serial", "since", "unpenalised")

    def __init__(self, address: str, block: str, since: float, owner: object,
                 serial: int) -> None:  # fmt: skip
        self.address = address
        self.block = block
        self.since = since
        self.serial = serial
        """Its place in the order of admission (as ``since``, without ties)."""
        self.owner = owner
        """What the server closes if this startup is evicted (its channel)."""
        self.evicted = False
        """It was dropped to make room for a source that had none."""
        self.unpenalised = False
        """However it ends, its source is not penalised (a balancer's health check)."""


@dataclass(frozen=True, slots=True)
class Admitted:
    startup: Startup
    evicted: Startup | None = None
    """A startup that made room for this one: the caller closes its owner."""


@dataclass(frozen=True, slots=True)
class Refused:
    refusal: Refusal
    block: str


def _first_exposed(queue: deque[Startup], first: int, last: int) -> Startup | None:
    """The oldest of ``queue`` neither shielded (serials ``first`` to ``last``) nor a
    balancer's health check."""
    for startup in queue:
        if not first <= startup.serial <= last and not startup.unpenalised:
            return startup
    return None


class SharedStartups(Protocol):
    """The startups of a server's other workers (roles/cluster.py)."""

    def exclusive(self) -> AbstractContextManager[None]:
        """Held around a decision and its update, so no sibling decides in between."""

    def elsewhere(self, block: str) -> tuple[int, int]:
        """The siblings' startups: all of them, and those from ``block``."""

    def publish_startups(self, block: str, from_block: int, total: int) -> None:
        """This worker has ``total`` startups, ``from_block`` of them from ``block``."""


class Admission:
    """Startups in progress, per source block, and the penalties."""

    def __init__(self, config: AdmissionConfig, rng: random.Random | None = None,
                 shared: SharedStartups | None = None) -> None:  # fmt: skip
        self.config = config
        self.penalties = PenaltyBox(config.penalties)
        self.protection = Protection()
        self._random = rng or random.Random()
        self._by_block: dict[str, deque[Startup]] = {}
        self._in_order: dict[Startup, None] = {}
        """Every startup, oldest first (a dict: ordered, and quick to remove from)."""
        self._serials = itertools.count()
        self.startups = 0
        """Connections admitted here and not yet authenticated or closed."""
        self.shared = shared
        """The other workers' startups, which count too (None: a single process)."""

    def block_of(self, address: str) -> str:
        return self.config.netblock.block_of(address)

    def admit(self, address: str, now: float, owner: object, *,
              health_check: bool = False) -> Admitted | Refused:  # fmt: skip
        """Take a new connection from ``address`` on, or say why not.  A balancer's
        ``health_check`` is never refused for the startups' sake, nor penalised."""
        block = self.block_of(address)
        if self.penalties.refused_until(block, now) is not None and not self._exempt(address):
            return Refused(Refusal.PENALTY, block)
        shared = self.shared
        with shared.exclusive() if shared is not None else nullcontext():
            elsewhere, from_block = shared.elsewhere(block) if shared is not None else (0, 0)
            decision = self._decide(block, address, now, owner, elsewhere, from_block,
                                    health_check)  # fmt: skip
            if isinstance(decision, Admitted):
                self._publish(block)
                if decision.evicted is not None:
                    self._publish(decision.evicted.block)
        return decision

    def _decide(self, block: str, address: str, now: float, owner: object, elsewhere: int,
                from_block: int, health_check: bool) -> Admitted | Refused:  # fmt: skip
        """The limits, on the whole server's counts: this worker's, plus ``elsewhere``
        startups in its siblings, ``from_block`` of them from ``block``."""
        config = self.config
        mine = self._by_block.get(block)
        held = (len(mine) if mine is not None else 0) + from_block
        if held >= config.per_source_max_startups:
            return Refused(Refusal.PER_SOURCE, block)
        evicted = None
        startups = self.startups + elsewhere
        if held and not health_check:
            chance = config.max_startups.drop_probability(startups)
            if chance and (chance >= 1.0 or self._random.random() < chance):
                return Refused(Refusal.STARTUPS, block)
        elif startups >= config.max_startups.full and self.startups and not health_check:
            evicted = self._evict(now, self.startups / startups)
        startup = Startup(address, block, now, owner, next(self._serials))
        startup.unpenalised = health_check
        if mine is None:
            mine = self._by_block[block] = deque()
        mine.append(startup)
        self._in_order[startup] = None
        self.startups += 1
        return Admitted(startup, evicted)

    def _publish(self, block: str) -> None:
        if self.shared is not None:
            self.shared.publish_startups(block, self.startups_from(block), self.startups)

    def _evict(self, now: float, share: float) -> Startup | None:
        """The oldest startup of the block holding the most (ties: the oldest first),
        leaving out the shield (the oldest within their protection) and health checks;
        None if only those are left.  ``share``: this worker's of the server's startups."""
        shield, protection = self.protection.shield(self.startups, share, now)
        ripe = now - protection
        first = last = -1  # the shield's serials: a run of the order of admission
        for startup in self._in_order:  # oldest first: the ripe ones, then the young
            if shield <= 0:
                break
            if startup.since > ripe:
                first = startup.serial if first < 0 else first
                last = startup.serial
                if not startup.unpenalised:  # a health check is never evicted anyway
                    shield -= 1
        victim: Startup | None = None
        best = (0, 0.0)
        for queue in self._by_block.values():
            exposed = _first_exposed(queue, first, last)
            if exposed is not None:
                rank = (len(queue), -exposed.since)
                if victim is None or rank > best:
                    victim, best = exposed, rank
        if victim is None:
            return None
        if victim.since <= ripe:
            self.protection.outlived(now - victim.since, now)
        victim.evicted = True
        self._forget(victim)
        return victim

    def authenticated(self, startup: Startup, now: float) -> None:
        """The startup proved itself: how long it took sets the protection."""
        if self._forget(startup):
            self.protection.handshake_took(now - startup.since, now)
            self._publish(startup.block)

    def finish(self, startup: Startup) -> None:
        """The startup authenticated, or ended: it no longer counts (idempotent)."""
        if self._forget(startup):
            self._publish(startup.block)

    def _forget(self, startup: Startup) -> bool:
        mine = self._by_block.get(startup.block)
        if mine is None:
            return False
        try:
            mine.remove(startup)
        except ValueError:
            return False
        del self._in_order[startup]
        self.startups -= 1
        if not mine:
            del self._by_block[startup.block]
        return True

    def offended(self, address: str, offence: Offence, now: float) -> float | None:
        """Penalise ``address``'s block for ``offence`` (unless the address is exempt);
        if that starts turning the block away, until when."""
        if self._exempt(address):
            return None
        return self.penalties.penalise(self.block_of(address), offence, now)

    def _exempt(self, address: str) -> bool:
        return in_networks(address, self.config.exempt)

    def startups_from(self, block: str) -> int:
        mine = self._by_block.get(block)
        return len(mine) if mine is not None else 0

    def reconfigure(self, config: AdmissionConfig) -> None:
        """A reload: new limits apply to new connections.  The netblock stays what it
        was at start (the counts are kept by block)."""
        self.config = replace(config, netblock=self.config.netblock)
        self.penalties.reconfigure(config.penalties)
