"""In-process helpers: a real reactor in a thread, with a server and clients on it.

The end-to-end tests drive ``reactor-mux`` processes; these drive the same
objects inside the test process, on real sockets on 127.0.0.1, so a test can
reach into them: plant a fault through a hook, read a channel's state, count
timers.  The loop runs in a background thread; the test touches loop objects
only through ``LoopThread.call`` (which runs a function in the loop and
returns its result), never directly.
"""

from __future__ import annotations

import logging
import selectors
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from reactor_mux.io.reactor import PROCESS, Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.roles.client import Client, ClientConfig
from reactor_mux.roles.server import Server, ServerConfig
from reactor_mux.roles.specs import ForwardKind, parse_forward
from reactor_mux.tunnel.settings import ChannelSettings

T = TypeVar("T")


class Owner:
    """An owner that records what the guard did to it."""

    def __init__(self, name: str = "owner", fail_to_close: bool = False) -> None:
        self.name = name
        self.closed_after_bug = 0
        self._fail_to_close = fail_to_close

    def close_after_bug(self) -> None:
        self.closed_after_bug += 1
        if self._fail_to_close:
            raise RuntimeError("closing failed too")


def run_until(reactor: Reactor, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run the loop until ``predicate()`` holds (checked every millisecond)."""
    deadline = time.monotonic() + timeout
    owner = Owner("poll")

    def check() -> None:
        if predicate() or time.monotonic() > deadline:
            reactor.stop()
        else:
            reactor.call_later(0.001, check, owner)

    reactor.call_soon(check, owner)
    reactor.run()
    assert predicate(), "condition not met in time"


class LoopThread:
    """A ``Reactor`` and ``Resolver`` running in a daemon thread."""

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        self.reactor = Reactor(selector)
        self.resolver = Resolver(self.reactor)
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="reactor", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reactor.run()
        except BaseException as exc:  # noqa: BLE001 - the test asserts there was none
            self.crashed = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.crashed is None

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        """Run ``function()`` in the loop thread; return its result or raise its error."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = function()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                box["error"] = exc
            finally:
                done.set()

        self.reactor.call_soon_threadsafe(run, PROCESS)
        if not done.wait(timeout):
            raise TimeoutError(f"the loop did not run {function!r} within {timeout}s")
        if "error" in box:
            raise box["error"]
        return box["value"]  # type: ignore[no-any-return]

    def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()``, evaluated in the loop, is true."""
        deadline = time.monotonic() + timeout
        while not self.call(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(0.01)

    def close(self) -> None:
        if self._thread.is_alive():
            self.reactor.call_soon_threadsafe(self.reactor.stop, PROCESS)
            self._thread.join(10)
        self.resolver.close()
        self.reactor.close()


class InProcessTunnel:
    """A server and its clients, all on one ``LoopThread``."""

    def __init__(self, loop: LoopThread, settings: ChannelSettings | None = None) -> None:
        self.loop = loop
        self.settings = settings or ChannelSettings()
        config = ServerConfig(listen=[("127.0.0.1", 0)], settings=self.settings)
        self.server = Server(loop.reactor, loop.resolver, config)
        loop.call(self.server.start)
        self.port = self.server.listeners[0].port
        self.clients: list[Client] = []

    def client(
        self,
        *forwards: str,
        settings: ChannelSettings | None = None,
        client_id: str | None = None,
        wait: bool = True,
    ) -> Client:
        """Start a client with ``forwards`` (``"-L 0:127.0.0.1:80"`` ...) and (with
        ``wait``) wait until its channel is open and every mapping is answered."""
        specs = []
        for text in forwards:
            flag, spec = text.split(" ", 1)
            kind = ForwardKind.LOCAL if flag == "-L" else ForwardKind.REMOTE
            specs.append(parse_forward(kind, spec))
        config = ClientConfig(
            server=("127.0.0.1", self.port),
            forwards=specs,
            settings=settings or self.settings,
            reconnect_min=0.05,
            reconnect_max=0.2,
        )
        client = Client(self.loop.reactor, self.loop.resolver, config)
        if client_id is not None:
            client.client_id = client_id
        self.loop.call(client.start)
        self.clients.append(client)
        if not wait:
            return client
        self.loop.wait(lambda: self.server_channel(client) is not None)
        remote = sum(1 for spec in specs if spec.kind is ForwardKind.REMOTE)
        self.loop.wait(lambda: len(self._binds(client)) == remote)
        return client

    def server_channel(self, client: Client) -> Any:
        """The server's channel for ``client`` once both ends said HELLO (loop thread)."""
        channel = client.channel
        if channel is None or not channel.ready:
            return None
        for server_side, state in self.server.clients.items():
            if state.client_id == client.client_id and server_side.ready:
                return server_side
        return None

    def _binds(self, client: Client) -> dict[int, Any]:
        channel = self.server_channel(client)
        return {} if channel is None else self.server.clients[channel].binds

    def local_port(self, client: Client, index: int = 0) -> int:
        """The port of ``client``'s ``index``-th ``-L`` listener."""
        return list(client.local_listeners.values())[index].port

    def remote_port(self, client: Client, index: int = 0) -> int:
        """The port the server bound for ``client``'s ``index``-th ``-R`` mapping."""
        binds = self.loop.call(lambda: self._binds(client))
        return list(binds.values())[index].port

    def close(self) -> None:
        def close_all() -> None:
            for client in self.clients:
                client.close()
            self.server.close()

        if self.loop.alive:
            self.loop.call(close_all)


class LogRecords(logging.Handler):
    """Collects the ``reactor_mux`` logger's records (from any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def matching(self, text: str) -> list[logging.LogRecord]:
        with self._lock_records:
            return [r for r in self.records if text in r.getMessage()]

    def wait_for(self, text: str, timeout: float = 10.0) -> logging.LogRecord:
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(text)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                messages = "\n".join(r.getMessage() for r in self.records[-30:])
                raise TimeoutError(f"no log record with {text!r}; last records:\n{messages}")
            time.sleep(0.01)
