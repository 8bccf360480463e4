"""A single-threaded reactor over ``selectors``: I/O readiness, timers, deferred calls.

Each socket is watched through an ``IOWatch`` whose owner states the events
it *wants* (computed from its state in one place) and the watch reconciles
that with what is registered, so an fd is registered only while it wants
something and there is no busy loop on a socket we cannot serve.

A tick runs the ready I/O callbacks, then the due timers, then the callbacks
deferred with ``call_soon`` during the tick, which is where channels flush:
every frame produced while handling one ``select`` result leaves in one
``sendmsg``.  Where the compiled data plane runs, the tick's wait is the
plane's (``PlaneWait``): its epoll set holds the streams' sockets and the
selector's own, so bytes only the plane moves never wake Python, and the
selector is asked (without waiting) only when it has something ready.
Other threads (the DNS resolver) and signal handlers reach the loop only
through ``call_soon_threadsafe``, which writes a byte to a wakeup socket.

Exception isolation lives here, in one place.  Every callback is registered
with the ``Owner`` it belongs to (a channel, a stream, a listener, a
connector); when a callback raises, the reactor logs the traceback once as an
internal error and calls ``owner.close_after_bug()``, so a bug costs that
object and the loop goes on serving everything else.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("reactor_mux")

READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

TIMERS_PER_TURN = 16
"""Timer callbacks run in one turn of the loop at most; the rest run in the next turns,
each after a look at the descriptors.  10,000 idle channels' keepalive ticks fall in
bursts (their peers' PINGs do): a pass over all that were due held every active
stream for up to 3.6 ms (25 to 150 ticks of ~8 us); 16 to a pass, at most 0.46 ms."""
COMPACT_MIN_TIMERS = 64
"""The timer heap is rebuilt without its cancelled entries once it holds at least
this many and more than half of them are cancelled (see ``Timer.cancel``)."""


class Owner(Protocol):
    """The object a callback belongs to: it pays for a bug in the callback."""

    def close_after_bug(self) -> None:
        """Close or reset this object after one of its callbacks raised (the
        reactor has already logged the traceback); must not raise itself."""


class PlaneWait(Protocol):
    """The compiled data plane's hub, which the reactor waits in (io/plane.py)."""

    waits: bool
    """It makes the reactor's wait (else it is a watch in the selector like any other)."""

    def wait(self, timeout: float | None) -> bool:
        """Move bytes until Python has something to do or ``timeout`` is up; True
        when the selector has descriptors ready."""
        ...

    def stop_waiting(self) -> None:
        """Give the wait back to the selector (after the plane's wait failed)."""
        ...

    def close(self) -> None: ...


class Cancellable(Protocol):
    """Something scheduled that can be called off (a timer, a connect)."""

    def cancel(self) -> None: ...


class _NoOwner:
    """Owner of process-wide callbacks (signal handlers): a bug is only logged."""

    def close_after_bug(self) -> None:
        pass

    def __repr__(self) -> str:
        return "the process"


PROCESS: Owner = _NoOwner()


def _describe(owner: Owner) -> str:
    return str(getattr(owner, "name", None) or getattr(owner, "label", None) or owner)


class Timer:
    """A scheduled call; ``cancel()`` drops the callback (and what it references)."""

    __slots__ = ("_reactor", "callback", "cancelled", "owner", "when")

    def __init__(
        self, reactor: Reactor, when: float, callback: Callable[[], None], owner: Owner
    ) -> None:
        self._reactor: Reactor | None = reactor
        self.when = when
        self.callback: Callable[[], None] | None = callback
        self.owner: Owner | None = owner
        self.cancelled = False

    def cancel(self) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = None
        self.owner = None
        reactor, self._reactor = self._reactor, None
        if reactor is not None:
            reactor._timer_cancelled()


class IOWatch:
    """Registration of one file object with the reactor."""

    __slots__ = ("_reactor", "callback", "closed", "fileobj", "mask", "owner")

    def __init__(
        self, reactor: Reactor, fileobj: Any, callback: Callable[[int], None], owner: Owner
    ) -> None:
        self._reactor = reactor
        self.fileobj = fileobj
        self.callback = callback
        self.owner = owner
        self.mask = 0
        self.closed = False

    def want(self, mask: int) -> None:
        """Make the registered interest equal ``mask`` (0 unregisters)."""
        if mask == self.mask or self.closed:
            return
        selector = self._reactor.selector
        if self.mask == 0:
            selector.register(self.fileobj, mask, self)
        elif mask == 0:
            selector.unregister(self.fileobj)
        else:
            selector.modify(self.fileobj, mask, self)
        self.mask = mask

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


_Call = tuple[Callable[[], None], Owner]


class Reactor:
    """The event loop; ``selector`` is the one it waits with (the platform's best by
    default; an epoll selector lets the data plane make the wait)."""

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        self.selector = selector if selector is not None else selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled_timers = 0
        self._sequence = itertools.count()
        self._soon: deque[_Call] = deque()
        self._threadsafe: deque[_Call] = deque()
        self._stopping = False
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._wakeup_write.setblocking(False)
        self._wakeup_watch = IOWatch(self, self._wakeup_read, self._on_wakeup, PROCESS)
        self._wakeup_watch.want(READ)
        self._signal_handlers: dict[int, Callable[[], None]] = {}
        self._previous_handlers: dict[int, Any] = {}
        self._previous_wakeup_fd: int | None = None
        self.plane_hub: PlaneWait | None = None
        """The compiled data plane's hub (io/plane.py), once a channel asked for it."""

    # ------------------------------------------------------------ scheduling

    time = staticmethod(time.monotonic)
    """The loop's clock (the builtin itself: it is read several times a tick)."""

    def call_later(self, delay: float, callback: Callable[[], None], owner: Owner) -> Timer:
        timer = Timer(self, self.time() + max(0.0, delay), callback, owner)
        heapq.heappush(self._timers, (timer.when, next(self._sequence), timer))
        return timer

    def call_soon(self, callback: Callable[[], None], owner: Owner) -> None:
        """Run ``callback`` at the end of this tick (after the I/O callbacks)."""
        self._soon.append((callback, owner))

    def call_soon_threadsafe(self, callback: Callable[[], None], owner: Owner) -> None:
        """Schedule from another thread (or a signal handler) and wake the loop."""
        self._threadsafe.append((callback, owner))
        try:
            self._wakeup_write.send(b"\0")
        except OSError:
            pass  # full (the loop is already due to wake up) or closed

    def _on_wakeup(self, _mask: int) -> None:
        try:
            while self._wakeup_read.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    @property
    def timer_count(self) -> int:
        """Entries in the timer heap, cancelled ones included (for tests)."""
        return len(self._timers)

    def _timer_cancelled(self) -> None:
        """Compact the heap when most of it is cancelled timers, so a pattern of
        long timeouts that finish early (connects) cannot grow it without bound."""
        self._cancelled_timers += 1
        timers = self._timers
        if len(timers) >= COMPACT_MIN_TIMERS and 2 * self._cancelled_timers > len(timers):
            live = [entry for entry in timers if not entry[2].cancelled]
            heapq.heapify(live)
            self._timers = live
            self._cancelled_timers = 0

    # ------------------------------------------------------- isolation guard

    def call_guarded(self, owner: Owner, callback: Callable[..., None], *args: Any) -> bool:
        """Run ``callback(*args)`` now under the guard, charged to ``owner``: for
        work a callback hands to another object's account (an accept handler
        setting up a connection).  Returns False if it raised."""
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - the guard: a bug costs its owner only
            self._internal_error(owner)
            return False
        return True

    def _internal_error(self, owner: Owner) -> None:
        """The one place a raising callback is handled: log it, close its owner."""
        if owner is PROCESS:
            log.exception("internal error in a process-wide callback; carrying on")
            return
        log.exception("internal error in %s; closing it", _describe(owner))
        try:
            owner.close_after_bug()
        except Exception:  # closing after a bug must not stop the loop
            log.exception("internal error while closing %s", _describe(owner))

    # --------------------------------------------------------------- signals

    def add_signal_handler(self, signum: int, callback: Callable[[], None]) -> None:
        """Run ``callback`` in the loop when ``signum`` arrives (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        if self._previous_wakeup_fd is None:
            # A burst of signals must not print "buffer full" warnings: the loop
            # wakes up once either way, and the handler queue holds every signal.
            self._previous_wakeup_fd = signal.set_wakeup_fd(
                self._wakeup_write.fileno(), warn_on_full_buffer=False
            )
        if signum not in self._previous_handlers:
            self._previous_handlers[signum] = signal.getsignal(signum)
        self._signal_handlers[signum] = callback
        signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        callback = self._signal_handlers.get(signum)
        if callback is not None:
            self._threadsafe.append((callback, PROCESS))

    # ------------------------------------------------------------------ loop

    def stop(self) -> None:
        self._stopping = True

    def run(self) -> None:
        """Run until ``stop()`` (a stop requested before ``run`` ends it at once);
        after it returns, ``run`` may be called again."""
        try:
            self._run()
        finally:
            self._stopping = False

    def _run(self) -> None:
        select = self.selector.select
        while not self._stopping:
            hub = self.plane_hub
            if hub is None or not hub.waits:
                ready = select(self._next_timeout())
            elif self._wait_in_plane(hub):
                ready = select(0)
            else:
                ready = []  # the plane moved bytes, or a signal came: nothing to dispatch
            for key, mask in ready:
                watch: IOWatch = key.data
                if watch.closed:
                    continue
                try:
                    watch.callback(mask)
                except Exception:  # noqa: BLE001 - the guard: a bug costs its owner only
                    self._internal_error(watch.owner)
            timers = self._timers
            if timers and timers[0][0] <= self.time():  # most wake-ups have none due
                self._run_timers()
            if self._soon or self._threadsafe:
                self._run_soon()

    def _wait_in_plane(self, hub: PlaneWait) -> bool:
        """The tick's wait, made by the plane; True when the selector has descriptors
        ready.  Under the guard, as the plane's callbacks were while it was a watch:
        a failure is logged once, the hub goes back to being a watch in the selector
        (``stop_waiting``), and the loop goes on."""
        try:
            return hub.wait(self._next_timeout())
        except Exception:  # noqa: BLE001 - the guard: a bug costs its owner only
            self._internal_error(PROCESS)
        try:
            hub.stop_waiting()
        except Exception:  # noqa: BLE001 - the engine may be past saving; the loop is not
            self._internal_error(PROCESS)
        return True

    def _next_timeout(self) -> float | None:
        if self._soon or self._threadsafe:
            return 0
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
            self._cancelled_timers -= 1
        if not timers:
            return None
        return max(0.0, timers[0][0] - self.time())

    def _run_timers(self) -> None:
        """The due timers, ``TIMERS_PER_TURN`` at most (the next turn's wait is then 0)."""
        now = self.time()
        budget = TIMERS_PER_TURN
        # self._timers is read afresh each time: a callback that cancels timers
        # may have compacted the heap into a new list.
        while self._timers and self._timers[0][0] <= now and budget:
            timer = heapq.heappop(self._timers)[2]
            if timer.cancelled:
                self._cancelled_timers -= 1
                continue
            budget -= 1
            callback, owner = timer.callback, timer.owner
            timer.cancelled = True
            timer.callback = timer.owner = timer._reactor = None
            assert callback is not None and owner is not None
            try:
                callback()
            except Exception:  # noqa: BLE001 - the guard: a bug costs its owner only
                self._internal_error(owner)

    def _run_soon(self) -> None:
        soon, threadsafe = self._soon, self._threadsafe
        while threadsafe:
            soon.append(threadsafe.popleft())
        # Only what was queued when this pass began, so nothing can starve I/O.
        for _ in range(len(soon)):
            callback, owner = soon.popleft()
            try:
                callback()
            except Exception:  # noqa: BLE001 - the guard: a bug costs its owner only
                self._internal_error(owner)

    def close(self) -> None:
        """Release the loop's resources and give back the signal handling it took."""
        for signum, previous in self._previous_handlers.items():
            # None: the handler was not installed from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous_handlers.clear()
        self._signal_handlers.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        if self.plane_hub is not None:
            self.plane_hub.close()
            self.plane_hub = None
        self._wakeup_watch.close()
        self._wakeup_read.close()
        self._wakeup_write.close()
        self.selector.close()
