"""The log of connections turned away before they authenticated, summarised.

An attacker decides how many connections a server refuses, so a line per
refusal would let it write the disk full (an unthrottled one wrote 55 MB in
30 s before this existed).  Here a source block that starts misbehaving gets
a line at once, saying what happened in full (a refusal at accept: one line;
a connection that failed its handshake: up to ``burst`` lines, so the
details of a few failures are seen as they happen); while it goes on, the
rest are counted and said in one line at the end of each ``interval``
(so never more than one line per block and interval after its first):
"turned away 4,213
connections from 127.0.0.2/32 in the last 10 s: too many unauthenticated
connections (4,100), handshake timed out (113)".  At most ``max_lines``
lines go out per interval over all blocks; the rest are added up in one
more line.  A block that stays quiet for a whole interval is forgotten, so
the table holds only blocks seen in the last two intervals.

Each summary line has the event ``connections_turned_away``, the block as
``peer`` and the reasons as ``reason``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from reactor_mux.logformat import event as log_event
from reactor_mux.reactor import Cancellable, Owner

log = logging.getLogger("reactor_mux")

SUMMARY_INTERVAL = 10.0
"""Seconds between the summary lines of one source block."""
MAX_LINES = 20
"""Lines about turned-away connections per interval, over all source blocks."""


class Clock(Protocol):
    def time(self) -> float: ...

    def call_later(
        self, delay: float, callback: Callable[[], None], owner: Owner
    ) -> Cancellable: ...


class _Block:
    __slots__ = ("counts", "lines", "noted", "since", "summarised")

    def __init__(self, since: float) -> None:
        self.counts: Counter[str] = Counter()
        self.since = since
        self.lines = 0  # lines it had this interval
        self.noted = True  # something happened this interval
        self.summarised = False  # it had a summary and has not been quiet since


class TurnedAwayLog:
    """Counts and summarises what each source block had refused or closed."""

    name = "turned-away log"

    def __init__(
        self, clock: Clock, *, interval: float = SUMMARY_INTERVAL, max_lines: int = MAX_LINES
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._max_lines = max_lines
        self._blocks: dict[str, _Block] = {}
        self._lines = 0  # this interval
        self._timer: Cancellable | None = None

    @property
    def interval(self) -> float:
        """Seconds between the summary lines of one source block."""
        return self._interval

    def note(
        self,
        block: str,
        reason: str,
        level: int,
        message: str,
        *args: object,
        burst: int = 1,
        extra: dict[str, object] | None = None,
    ) -> None:
        """A connection from ``block`` was turned away for ``reason`` (a short label).
        ``message % args`` says it in full: logged only while the block has had fewer
        than ``burst`` lines since it was last summarised (and the cap allows)."""
        state = self._blocks.get(block)
        if state is None:
            state = self._blocks[block] = _Block(self._clock.time())
        state.noted = True
        self._arm()
        if (state.lines < burst and not state.counts and not state.summarised
                and self._lines < self._max_lines):  # fmt: skip
            self._lines += 1
            state.lines += 1
            log.log(level, message, *args, extra=extra)
            return
        state.counts[reason] += 1

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._clock.call_later(self._interval, self._flush, self)

    def _flush(self) -> None:
        self._timer = None
        now = self._clock.time()
        self._lines = 0
        over = 0  # connections of blocks the cap left without a line of their own
        over_blocks = 0
        for block, state in list(self._blocks.items()):
            if state.counts:
                total = sum(state.counts.values())
                if self._lines < self._max_lines:
                    self._lines += 1
                    self._say(block, state, total, now)
                else:
                    over += total
                    over_blocks += 1
                state.counts.clear()
                state.since = now
                state.summarised = True
            if not state.noted and not state.counts:
                del self._blocks[block]  # quiet for a whole interval
                continue
            state.lines = 0
            state.noted = False
        if over:
            log.warning("turned away %s more connections from %d other source block(s) in the "
                        "last %g s (at most %d lines per %g s)", f"{over:,}", over_blocks,
                        self._interval, self._max_lines, self._interval,
                        extra=log_event("connections_turned_away"))  # fmt: skip
        if self._blocks:
            self._arm()

    def _say(self, block: str, state: _Block, total: int, now: float) -> None:
        reasons = ", ".join(f"{reason} ({count:,})" for reason, count in state.counts.most_common())
        seconds = max(now - state.since, self._interval)
        log.warning("turned away %s connection%s from %s in the last %.0f s: %s", f"{total:,}",
                    "" if total == 1 else "s", block, seconds, reasons,
                    extra=log_event("connections_turned_away", peer=block,
                                    reason=reasons))  # fmt: skip

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_after_bug(self) -> None:
        self.close()
