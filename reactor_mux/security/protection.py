"""How long a new startup is safe from eviction: a few times what handshakes take.

At FULL a connection from a source with no startup takes the place of an
older startup (``admission``), which keeps a flood of idle strangers from
crowding clients out.  But in a reconnect storm every startup is a client,
and the oldest is the one nearest to done: evicting it at once means that,
once connections arrive faster than the server finishes handshakes, almost
none finishes (measured: 10,000 clients took 238 s to come back, with 223,207
evictions).  So the oldest startups within their *protection* are shielded from eviction,
as many as the server lately finishes within it (``Protection.shield``); the
newcomer takes the place of one of the others.

The protection is measured: ``FACTOR`` times the 90th percentile of how long
the handshakes of the last ``SAMPLE_LIFETIME`` took, from accept until the
client authenticated (said HELLO, where no authentication is configured).  A
startup evicted once past its protection counts too, with its age: its
handshake took longer than that, if it was a client's, so a storm on a server
whose last handshakes were quick does not keep a protection too short for it
to finish any.  An unloaded server whose clients authenticate in milliseconds
protects a startup for ``FLOOR``; a server slowed by a storm, for longer, up to
``CEILING``.  A stranger can stretch it (with startups left to age), but what
it then holds is the shield: ``SHIELD_MIN`` places, since its startups never
finish.  Without authentication configured strangers' HELLOs count as
handshakes, so they can move the protection either way and grow the shield to
``SHARE`` of FULL.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable

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
CEILING = 8.0
"""The longest protection (s), below the default ``--handshake-timeout`` (10 s): in a
TLS storm on this machine with 2 s, every startup outlived it for 50 s."""
SHARE = 0.5
"""At most this share of the startups is shielded: the rest take newcomers, so a source
with none is never refused for the others' sake."""
SHIELD_MIN = 16
"""Startups shielded whatever the pace of handshakes (see ``Protection.shield``)."""
HEADROOM = 4
"""The shield is this many times the startups Little's law has finishing at once, so it
can grow as fast as the server finishes more."""
RATE_WINDOW = 2.0
"""Seconds over which the pace of finished handshakes is measured (a decaying count)."""
UNMEASURED = CEILING
"""The protection with fewer than ``MIN_SAMPLES`` recent handshakes: a server just
started, as in a reconnect storm, where none may finish if the first were evicted."""


class Protection:
    """Recent handshake durations, and the protection they give a startup."""

    def __init__(self) -> None:
        self._took: deque[tuple[float, float]] = deque(maxlen=SAMPLES)
        """(when, how long) of the handshakes that finished, oldest first."""
        self._outlived: deque[tuple[float, float]] = deque(maxlen=SAMPLES)
        """(when, at what age) startups were evicted past their protection: kept apart,
        so a flood's cannot push the finished handshakes out."""
        self._finished = 0.0
        """Handshakes finished, each counted down by e every ``RATE_WINDOW``."""
        self._finished_at = 0.0

    def handshake_took(self, seconds: float, now: float) -> None:
        """A client authenticated at ``now``, ``seconds`` after it was accepted."""
        self._took.append((now, max(seconds, 0.0)))
        self._finished = self._decayed(now) + 1.0
        self._finished_at = now

    def outlived(self, age: float, now: float) -> None:
        """A startup ``age`` old was evicted past its protection, unauthenticated."""
        self._outlived.append((now, max(age, 0.0)))

    def _decayed(self, now: float) -> float:
        elapsed = max(now - self._finished_at, 0.0)
        return self._finished * math.exp(-elapsed / RATE_WINDOW)

    def shield(self, startups: int, share: float, now: float) -> tuple[int, float]:
        """How many of this process's ``startups`` to shield (the oldest within the
        protection), and the protection.

        ``HEADROOM`` times as many as it lately had finishing at once (Little's law: the pace
        of finished handshakes times the 90th percentile of how long they took), at
        most ``SHARE`` of them, and at least its ``share`` of ``SHIELD_MIN`` (a worker
        of a server holding a share of its startups) however slow it has been, so that
        a storm on a server that just started finishes its first handshakes.  So a
        flood of strangers, whose startups never finish, has few of them shielded."""
        protection = self.seconds(now)
        took = _percentile(self._took, now)
        pace = self._decayed(now) / RATE_WINDOW
        finishing = int(HEADROOM * pace * took) if took is not None else 0
        least = math.ceil(SHIELD_MIN * min(max(share, 0.0), 1.0))
        return min(int(SHARE * startups), max(least, finishing)), protection

    def seconds(self, now: float) -> float:
        """How long after accept a startup is protected (the 90th percentile of 64 is
        the 8th slowest)."""
        p90 = _percentile([*self._took, *self._outlived], now)
        return UNMEASURED if p90 is None else min(max(FACTOR * p90, FLOOR), CEILING)


def _percentile(samples: Iterable[tuple[float, float]], now: float) -> float | None:
    """The 90th percentile of the last ``SAMPLE_LIFETIME``'s samples, if enough."""
    since = now - SAMPLE_LIFETIME
    durations = sorted(took for when, took in samples if when >= since)
    if len(durations) < MIN_SAMPLES:
        return None
    return durations[int(0.9 * (len(durations) - 1))]
