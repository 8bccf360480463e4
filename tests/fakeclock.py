"""A clock for the parts that only know ``time`` and ``call_later``: time moves when
the test says so, and the timers due then run in order."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class FakeTimer:
    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Time moves only when the test says so; due timers then run in order."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, FakeTimer]] = []
        self._order = itertools.count()
        self.fired = 0
        """Timers run so far (what a part's idle costs)."""

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None], owner: object) -> FakeTimer:
        timer = FakeTimer(self.now + delay, callback)
        heapq.heappush(self._heap, (timer.when, next(self._order), timer))
        return timer

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while self._heap and self._heap[0][0] <= end:
            when, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                self.now = when
                self.fired += 1
                timer.callback()
        self.now = end

    @property
    def pending(self) -> int:
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)
