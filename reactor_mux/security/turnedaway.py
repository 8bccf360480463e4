"""The log of connections turned away or closed before they authenticated, summarised.

An attacker decides how many connections a server refuses, so a line per
refusal would let it write the disk full (an unthrottled one wrote 55 MB in
30 s before this existed).  Here a source block that starts misbehaving gets
a line at once, saying what happened in full (a refusal at accept: one line;
a connection that failed its handshake: up to ``burst`` lines, so the
details of a few failures are seen as they happen); while it goes on, the
rest are counted and said in one line at the end of each ``interval`` (so
never more than one line per block and interval after its first):
"turned away or closed 4,213 unauthenticated connections from 127.0.0.2/32
in the last 10 s: too many unauthenticated connections from the source
(4,100), handshake timed out (113)".  The labels are this side's own words,
from a fixed set: nothing a peer sends reaches a summary.

At most ``max_lines`` lines go out per interval over all blocks (first lines,
summaries and ``announce``d penalties alike); the rest are added up in one
more line, and the penalties held back in another.  A block that stays quiet
for a whole interval is forgotten, and at most ``max_blocks`` blocks are
followed at once (a flood from more sources is counted in one sum), so the
table's memory is bounded whatever the sources.

Each summary line has the event ``connections_turned_away``, the block as
``peer`` and the reasons as ``reason``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from reactor_mux.io.reactor import Cancellable, Owner
from reactor_mux.logformat import event as log_event

log = logging.getLogger("reactor_mux")

SUMMARY_INTERVAL = 10.0
"""Seconds between the summary lines of one source block."""
MAX_LINES = 20
"""Lines about turned-away connections per interval, over all source blocks."""
MAX_BLOCKS = 4096
"""Source blocks followed at once; more are counted together (a few hundred KiB)."""


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
        self,
        clock: Clock,
        *,
        interval: float = SUMMARY_INTERVAL,
        max_lines: int = MAX_LINES,
        max_blocks: int = MAX_BLOCKS,
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._max_lines = max_lines
        self._max_blocks = max_blocks
        self._blocks: dict[str, _Block] = {}
        self._lines = 0  # this interval
        self._unfollowed = 0  # connections of blocks beyond max_blocks, this interval
        self._unannounced = 0  # announcements the cap held back, this interval
        self._timer: Cancellable | None = None

    @property
    def interval(self) -> float:
        """Seconds between the summary lines of one source block."""
        return self._interval

    def __len__(self) -> int:
        """Source blocks followed now."""
        return len(self._blocks)

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
        """A connection from ``block`` was turned away for ``reason`` (a short label of
        this side's own).  ``message % args`` says it in full: logged only while the
        block has had fewer than ``burst`` lines since it was last summarised (and the
        cap allows)."""
        self._arm()
        state = self._blocks.get(block)
        if state is None:
            if len(self._blocks) >= self._max_blocks:
                self._unfollowed += 1
                return
            state = self._blocks[block] = _Block(self._clock.time())
        state.noted = True
        if (state.lines < burst and not state.counts and not state.summarised
                and self._lines < self._max_lines):  # fmt: skip
            self._lines += 1
            state.lines += 1
            log.log(level, message, *args, extra=extra)
            return
        state.counts[reason] += 1

    def announce(self, level: int, message: str, *args: object, **extra: object) -> bool:
        """A line that must not wait for a summary (a source starts serving a penalty),
        within the cap of lines per interval; False if the cap held it back."""
        self._arm()
        if self._lines >= self._max_lines:
            self._unannounced += 1  # counted in the interval's last line
            return False
        self._lines += 1
        log.log(level, message, *args, extra=extra or None)
        return True

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._clock.call_later(self._interval, self._flush, self)

    def _flush(self) -> None:
        self._timer = None
        now = self._clock.time()
        self._lines = 0
        unfollowed = self._unfollowed
        over = unfollowed  # connections without a line of their own this time
        over_blocks = 0
        self._unfollowed = 0
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
            if not state.noted:
                del self._blocks[block]  # quiet for a whole interval
                continue
            state.lines = 0
            state.noted = False
        if over:
            sources = f"{over_blocks:,} source block(s)" if over_blocks else ""
            if unfollowed:  # too many sources to follow each: how many is not known
                sources += (" and " if sources else "") + "more"
            log.warning("turned away or closed %s more unauthenticated connections in the last "
                        "%g s, from %s (at most %d lines per %g s)", f"{over:,}",
                        self._interval, sources, self._max_lines, self._interval,
                        extra=log_event("connections_turned_away"))  # fmt: skip
        if self._unannounced:
            log.warning("%s more source block(s) started serving a penalty in the last %g s "
                        "(at most %d lines per %g s)", f"{self._unannounced:,}",
                        self._interval, self._max_lines, self._interval,
                        extra=log_event("source_penalised"))  # fmt: skip
            self._unannounced = 0
        if self._blocks:
            self._arm()

    def _say(self, block: str, state: _Block, total: int, now: float) -> None:
        reasons = ", ".join(f"{reason} ({count:,})" for reason, count in state.counts.most_common())
        seconds = max(now - state.since, self._interval)
        log.warning("turned away or closed %s unauthenticated connection%s from %s in the last "
                    "%.0f s: %s", f"{total:,}", "" if total == 1 else "s", block, seconds,
                    reasons, extra=log_event("connections_turned_away", peer=block,
                                             reason=reasons))  # fmt: skip

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_after_bug(self) -> None:
        self.close()
