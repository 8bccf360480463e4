"""How long a new startup is safe from eviction: a few times what handshakes take.

At FULL a connection from a source with no startup takes the place of an
older startup (``admission``), which keeps a flood of idle strangers from
crowding clients out.  But in a reconnect storm every startup is a client,
and the oldest is the one nearest to done: evicting it at once means that,
once connections arrive faster than the server finishes handshakes, almost
none finishes (measured: 10,000 clients took 238 s to come back, with 223,207
evictions).  So the older half of the startups younger than a *protection*
cannot be evicted; the newcomer takes the place of one of the others.

The protection is measured: ``FACTOR`` times the 90th percentile of how long
the handshakes of the last ``SAMPLE_LIFETIME`` took, from accept until the
client authenticated (said HELLO, where no authentication is configured).  An
unloaded server whose clients authenticate in milliseconds protects a startup
for ``FLOOR``; a server slowed by a storm, for longer, up to ``CEILING``.
"""

from __future__ import annotations

from collections import deque

SAMPLES = 64
"""Handshakes remembered: the most recent ones."""
SAMPLE_LIFETIME = 60.0
"""Seconds a handshake counts for (a storm's slow ones are forgotten after it)."""
MIN_SAMPLES = 8
"""Fewer recent handshakes than this, and the protection is ``UNMEASURED``."""
FACTOR = 4.0
"""A startup is protected for this many times the 90th percentile of the samples."""
FLOOR = 0.1
"""The shortest protection (s): a client on a long path needs a few round trips."""
CEILING = 2.0
"""The longest protection (s): it bounds how long a stranger's startup is safe."""
UNMEASURED = CEILING
"""The protection with fewer than ``MIN_SAMPLES`` recent handshakes: a server just
started, as in a reconnect storm, where none may finish if the first were evicted."""


class Protection:
    """Recent handshake durations, and the protection they give a startup."""

    def __init__(self) -> None:
        self._recent: deque[tuple[float, float]] = deque(maxlen=SAMPLES)
        """(when a handshake finished, how long it took), oldest first."""

    def handshake_took(self, seconds: float, now: float) -> None:
        """A client authenticated at ``now``, ``seconds`` after it was accepted."""
        self._recent.append((now, max(seconds, 0.0)))

    def seconds(self, now: float) -> float:
        """How long after accept a startup is protected (the 90th percentile of 64 is
        the 8th slowest)."""
        since = now - SAMPLE_LIFETIME
        durations = sorted(took for finished, took in self._recent if finished >= since)
        if len(durations) < MIN_SAMPLES:
            return UNMEASURED
        p90 = durations[int(0.9 * (len(durations) - 1))]
        return min(max(FACTOR * p90, FLOOR), CEILING)
