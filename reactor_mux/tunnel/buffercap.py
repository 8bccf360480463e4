"""A cap on the buffer storage a channel holds in one direction, with hysteresis.

Each stream is bounded by its window, but a channel carries thousands of
streams; the cap bounds their sum.  It counts storage (ring capacities), not
contents: rings keep their storage while they empty and refill, so the data
path never allocates.  At the cap, the empty rings give their storage back
first, and only if that is not enough does the direction pause (local reads
for outbound data, the channel read for inbound).  It resumes once the
storage is down to half the cap, so it does not flap at the boundary.

The class holds no buffers: it is told how much is held and whom to ask for
idle storage, so it is tested with plain numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("reactor_mux")


class BufferCap:
    """Pause at ``limit`` bytes of storage held, resume at half of it."""

    __slots__ = (
        "_held",
        "_on_change",
        "_pause_event",
        "_pause_message",
        "_release_idle",
        "_resume_event",
        "_resume_message",
        "limit",
        "paused",
    )

    def __init__(
        self,
        limit: int,
        held: Callable[[], int],
        release_idle: Callable[[], object],
        on_change: Callable[[bool], None],
        *,
        pause_message: str,
        resume_message: str,
        pause_event: Mapping[str, Any] | None = None,
        resume_event: Mapping[str, Any] | None = None,
    ) -> None:
        """``pause_event`` and ``resume_event``: the log lines' ``extra=`` (their
        event names, for ``--log-format json``)."""
        self.limit = limit
        self.paused = False
        self._held = held
        self._release_idle = release_idle
        self._on_change = on_change
        self._pause_message = pause_message
        self._resume_message = resume_message
        self._pause_event = pause_event
        self._resume_event = resume_event

    def check(self) -> None:
        """Pause if the storage held reached the cap after idle storage was
        given back; resume if paused and it is down to half."""
        if not self.paused:
            if self._held() < self.limit:
                return
            self._release_idle()
            held = self._held()
            if held < self.limit:
                return
            self.paused = True
            extra = None if self._pause_event is None else {**self._pause_event, "bytes": held}
            log.info(self._pause_message, held, self.limit, extra=extra)
            self._on_change(True)
        elif self._held() <= self.limit // 2:
            self.paused = False
            log.info(self._resume_message, extra=self._resume_event)
            self._on_change(False)
