"""How long a new startup is safe from eviction: a few times what handshakes take.

At FULL a connection from a source with no startup takes the place of an
older startup (``admission``), which keeps a flood of idle strangers from
crowding clients out.  But in a reconnect storm every startup is a client,
and the oldest is the one nearest to done: evicting it at once means that,
once connections arrive faster than the server finishes handshakes, almost
none finishes (measured: 10,000 clients took 238 s to come back, with 223,207
evictions).  So a startup is *protected* for a while after accept, and a
newcomer finding every startup protected is told ``busy`` (its client retries
soon, with jitter) instead of undoing work in progress.

The while is measured, from what strangers cannot fake: how long recent
handshakes took from accept until the client authenticated.  An unloaded
server whose clients authenticate in milliseconds protects a startup for
``FLOOR``; a server slowed by a storm protects it for longer, up to
``CEILING``.  A stranger who wants every place kept from clients must open
FULL connections per protection, from more source blocks than FULL, and each
one evicted counts against its block (``noauth``).
"""

from __future__ import annotations

from collections import deque

SAMPLES = 64
"""Handshakes remembered: the most recent ones."""
MIN_SAMPLES = 8
"""Fewer than this, and the protection is ``UNMEASURED``."""
FACTOR = 4.0
"""A startup is protected for this many times the 90th percentile of the samples."""
FLOOR = 0.1
"""The shortest protection (s): a client on a long path needs a few round trips."""
CEILING = 2.0
"""The longest protection (s): it bounds what a flood of young startups can hold."""
UNMEASURED = 1.0
"""The protection before ``MIN_SAMPLES`` handshakes were seen (a server just started,
as in a reconnect storm)."""


class Protection:
    """Recent handshake durations, and the protection they give a startup."""

    def __init__(self) -> None:
        self._durations: deque[float] = deque(maxlen=SAMPLES)
        self._seconds: float | None = UNMEASURED
        """The protection, or None until asked again after a new sample."""

    def handshake_took(self, seconds: float) -> None:
        """A client authenticated ``seconds`` after it was accepted."""
        self._durations.append(max(seconds, 0.0))
        self._seconds = None

    @property
    def seconds(self) -> float:
        """How long after accept a startup cannot be evicted."""
        if self._seconds is None:
            self._seconds = self._measure()
        return self._seconds

    def _measure(self) -> float:
        durations = self._durations
        if len(durations) < MIN_SAMPLES:
            return UNMEASURED
        ranked = sorted(durations)
        p90 = ranked[int(0.9 * (len(ranked) - 1))]
        return min(max(FACTOR * p90, FLOOR), CEILING)
