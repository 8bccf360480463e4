"""Reconnect delays: exponential, capped, with jitter.

Delays double from ``minimum`` up to ``maximum``; each is then drawn from
[delay/2, delay] so that many clients cut off by the same outage do not
reconnect in lockstep.
"""

from __future__ import annotations

import random

DEFAULT_RECONNECT_MIN = 0.5
DEFAULT_RECONNECT_MAX = 30.0


class Backoff:
    def __init__(
        self,
        minimum: float = DEFAULT_RECONNECT_MIN,
        maximum: float = DEFAULT_RECONNECT_MAX,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < minimum <= maximum:
            raise ValueError("need 0 < minimum <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self._rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.minimum * (2 ** min(self.attempts, 32)))
        self.attempts += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempts = 0

    def give_up_fast(self) -> None:
        """Retrying soon cannot help (authentication failed): wait the longest from now."""
        self.attempts = 64
