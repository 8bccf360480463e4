"""A single-threaded reactor over ``selectors``: I/O readiness, timers, deferred calls.

Each socket is watched through an ``IOWatch`` whose owner states the events
it *wants* (computed from its state in one place) and the watch reconciles
that with what is registered, so an fd is registered only while it wants
something and there is no busy loop on a socket we cannot serve.

A tick runs the ready I/O callbacks, then the due timers, then the callbacks
deferred with ``call_soon`` during the tick, which is where channels flush:
every frame produced while handling one ``select`` result leaves in one
``sendmsg``.  Other threads (the DNS resolver) and signal handlers reach the
loop only through ``call_soon_threadsafe``, which writes a byte to a wakeup
socket.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE


class Timer:
    """A scheduled call; ``cancel()`` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class IOWatch:
    """Registration of one file object with the reactor."""

    __slots__ = ("_callback", "_reactor", "closed", "fileobj", "mask")

    def __init__(self, reactor: Reactor, fileobj: Any, callback: Callable[[int], None]) -> None:
        self._reactor = reactor
        self.fileobj = fileobj
        self._callback = callback
        self.mask = 0
        self.closed = False

    def want(self, mask: int) -> None:
        """Make the registered interest equal ``mask`` (0 unregisters)."""
        if mask == self.mask or self.closed:
            return
        selector = self._reactor.selector
        if self.mask == 0:
            selector.register(self.fileobj, mask, self._dispatch)
        elif mask == 0:
            selector.unregister(self.fileobj)
        else:
            selector.modify(self.fileobj, mask, self._dispatch)
        self.mask = mask

    def _dispatch(self, mask: int) -> None:
        if not self.closed:
            self._callback(mask)

    def close(self) -> None:
        """Unregister for good; a pending event for this watch is dropped."""
        if self.closed:
            return
        if self.mask:
            try:
                self._reactor.selector.unregister(self.fileobj)
            except (KeyError, ValueError, OSError):
                pass
            self.mask = 0
        self.closed = True


class Reactor:
    """The event loop."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()
        self._soon: deque[Callable[[], None]] = deque()
        self._threadsafe: deque[Callable[[], None]] = deque()
        self._stopping = False
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        self._wakeup_watch = IOWatch(self, self._wakeup_read, self._on_wakeup)
        self._wakeup_watch.want(READ)
        self._signal_handlers: dict[int, Callable[[], None]] = {}
        self._old_wakeup_fd: int | None = None

    # ------------------------------------------------------------ scheduling

    @staticmethod
    def time() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self.time() + max(0.0, delay), callback)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the end of this tick (after the I/O callbacks)."""
        self._soon.append(callback)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Schedule from another thread (or a signal handler) and wake the loop."""
        self._threadsafe.append(callback)
        try:
            self._wakeup_write.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # the loop is already due to wake up

    def _on_wakeup(self, _mask: int) -> None:
        try:
            while self._wakeup_read.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # --------------------------------------------------------------- signals

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop when ``signum`` arrives (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wakeup_write.fileno())
        self._signal_handlers[signum] = callback
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        callback = self._signal_handlers.get(signum)
        if callback is not None:
            self._threadsafe.append(callback)

    # ------------------------------------------------------------------ loop

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        """Run until ``stop()`` (a stop requested before ``run`` ends it at once)."""
        select = self.selector.select
        while not self._stopping:
            timeout = self._next_timeout()
            for key, mask in select(timeout):
                key.data(mask)
            self._run_timers()
            self._run_soon()

    def run_once(self, timeout: float = 0.0) -> None:
        """One tick (for tests and tools)."""
        for key, mask in self.selector.select(timeout):
            key.data(mask)
        self._run_timers()
        self._run_soon()

    def _next_timeout(self) -> float | None:
        if self._soon or self._threadsafe:
            return 0
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return None
        return max(0.0, timers[0][0] - self.time())

    def _run_timers(self) -> None:
        timers = self._timers
        if not timers:
            return
        now = self.time()
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()

    def _run_soon(self) -> None:
        threadsafe = self._threadsafe
        while threadsafe:
            self._soon.append(threadsafe.popleft())
        # Only what was queued when this pass began, so nothing can starve I/O.
        for _ in range(len(self._soon)):
            self._soon.popleft()()

    def close(self) -> None:
        for signum in list(self._signal_handlers):
            signal.signal(signum, signal.SIG_DFL)
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        self._wakeup_watch.close()
        self._wakeup_read.close()
        self._wakeup_write.close()
        self.selector.close()


def cpu_seconds() -> float:
    """User + system CPU time of this process (for idle checks and the demo)."""
    times = os.times()
    return times.user + times.system
