"""The reactor of one API tunnel, in a thread of its own.

The reactor stays single-threaded: the thread runs it, and the program's thread
reaches the role only through ``call``, which runs a function in the loop and
hands back its result or its exception.  The thread ends when the role stops the
reactor (a stop, or a client that gave up on its server).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from reactor_mux.io.reactor import PROCESS, Reactor
from reactor_mux.io.resolver import Resolver

T = TypeVar("T")

CALL_TIMEOUT = 30.0
"""Seconds a call into the loop may take before the caller gives up on it."""


class LoopStopped(RuntimeError):
    """The loop is not running (any more): the call was not, or not wholly, made."""


class LoopUnresponsive(RuntimeError):
    """The loop did not run the call within CALL_TIMEOUT."""


class LoopThread:
    """A Reactor and its Resolver, run by a daemon thread until stopped."""

    def __init__(self, name: str) -> None:
        self.reactor = Reactor()
        self.resolver = Resolver(self.reactor)
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reactor.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller by ``running``
            self.crashed = exc

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def call(self, function: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        """``function()`` run in the loop: its result, or its exception raised here."""
        if not self.running:
            raise LoopStopped("the tunnel's loop is not running")
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = function()
            except BaseException as exc:  # noqa: BLE001 - raised again in the caller
                box["error"] = exc
            finally:
                done.set()

        self.reactor.call_soon_threadsafe(run, PROCESS)
        while not done.wait(0.05):
            if not self.running:
                raise LoopStopped("the tunnel's loop stopped")
            timeout -= 0.05
            if timeout <= 0:
                raise LoopUnresponsive(f"the tunnel's loop did not answer within {CALL_TIMEOUT}s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def join(self, timeout: float) -> bool:
        """Wait for the loop to stop; whether it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """After the loop stopped: release the reactor's and the resolver's resources."""
        self.resolver.close()
        self.reactor.close()
