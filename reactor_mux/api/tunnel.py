"""A client or a server started from Python, with the command line's settings.

Keyword arguments are the long options with underscores (``keepalive_interval=15``,
``secret_file="..."``, ``persist=True``); ``local_forward``, ``remote_forward`` and
``dynamic_forward`` take lists of the ``-L``, ``-R`` and ``-D`` specs.  They go
through the command line's own parser and checks, so a setting means exactly
what it means there.  ``start()`` (or ``with``) returns once every forward is up,
or raises one of api/errors.py's exceptions; ``stop()`` drains open streams.
The reactor runs in a thread of its own (api/loop.py); the async classes run
``start`` and ``stop`` in a worker thread, so an asyncio loop never blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from reactor_mux.api.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ForwardFailed,
    ServerUnreachable,
    ServerUnusable,
    TunnelError,
    TunnelStopped,
)
from reactor_mux.api.loop import LoopStopped, LoopThread, LoopUnresponsive
from reactor_mux.cli.commands import client_config, server_config
from reactor_mux.cli.parser import UsageError, checked, long_options, parse_arguments
from reactor_mux.cli.security import ClientSecurity, SecurityOptionError, ServerSecurity
from reactor_mux.errors import StartupError
from reactor_mux.io.reactor import PROCESS
from reactor_mux.roles.client import Client as ClientRole
from reactor_mux.roles.client import Ending, GaveUp
from reactor_mux.roles.server import Server as ServerRole
from reactor_mux.roles.specs import ForwardSpec, SpecError
from reactor_mux.service.configfile import ConfigError
from reactor_mux.service.control import parse_forward_words
from reactor_mux.service.status import snapshot

T = TypeVar("T")

DEFAULT_START_TIMEOUT = 30.0
"""Seconds ``start()`` waits for every forward to be up before it gives up."""

_SHORT_FLAGS = {"local_forward": "-L", "remote_forward": "-R", "dynamic_forward": "-D"}

_PROCESS_ONLY = {
    "control": "status() and the forward methods answer here",
    "metrics": "status() gives the figures",
    "log_file": "the reactor_mux logger goes where the program's logging sends it",
    "log_format": "the reactor_mux logger goes where the program's logging sends it",
    "verbose": "set the reactor_mux logger's level",
    "quiet": "set the reactor_mux logger's level",
    "background": "the tunnel runs in its own thread already",
    "stdio": "a program has no standard input and output to give",
}
"""Options of a process, not of a tunnel: refused, with what to use instead, whether
given as keyword arguments or in the ``config`` file."""

Role = ClientRole | ServerRole


def check_keywords(command: str, options: Mapping[str, Any]) -> None:
    """A misspelt keyword is named, with the one it resembles (argparse would take a
    prefix of an option, or call the word an unrecognized argument)."""
    known = {name[2:].replace("-", "_") for name in long_options(command)} | set(_SHORT_FLAGS)
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(f"{command} has no option {name}{hint}")


def options_to_argv(options: Mapping[str, Any]) -> list[str]:
    """Keyword arguments as the command line's words: ``keepalive_interval=15`` is
    ``--keepalive-interval=15``, ``persist=True`` is ``--persist``, a list repeats."""
    argv: list[str] = []
    for name, value in options.items():
        flag = _SHORT_FLAGS.get(name, "--" + name.replace("_", "-"))
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if item is None or item is False:
                continue
            if item is True:
                argv.append(flag)
            elif flag.startswith("--"):
                argv.append(f"{flag}={item}")
            else:
                argv.append(f"{flag}{item}")
    return argv


@dataclass(frozen=True)
class Forward:
    """One forward of a running client, as ``status`` reports it."""

    forward: str
    """As the command line writes it: ``-L 0:db.internal:5432``."""
    state: str
    """``forwarding``, ``asked the server``, ``refused by the server: ...``."""
    listening: tuple[tuple[str, int], ...]
    """Where an ``-L`` or ``-D`` listens here (every address)."""
    bound: tuple[str, int] | None
    """Where the server listens for an ``-R``."""
    path: str | None = None
    """The Unix socket this forward listens on instead of a port: here for an ``-L
    /PATH:...``, on the server for an ``-R /PATH:...`` (once it is up)."""

    @property
    def port(self) -> int:
        """The port to connect to: the local one of an ``-L``/``-D``, the server's of an ``-R``."""
        if self.path is not None:
            raise TunnelError(f"{self.forward} listens on the Unix socket {self.path}, not a port")
        if self.listening:
            return self.listening[0][1]
        if self.bound is not None:
            return self.bound[1]
        raise TunnelError(f"{self.forward} listens nowhere ({self.state})")


class _Tunnel:
    """What a client and a server share: the loop thread, start, stop, status."""

    _role_name = ""

    def __init__(self, argv: list[str], start_timeout: float) -> None:
        self._argv = argv
        self._start_timeout = start_timeout
        self._loop: LoopThread | None = None
        self._role: Role | None = None
        self._drain_timeout = 0.0
        self._lock = threading.RLock()
        self._started = False
        self._abandoned = threading.Event()

    def _parse(self) -> tuple[Any, ClientSecurity | ServerSecurity]:
        try:
            args = parse_arguments(self._argv, raise_errors=True)
            for dest, instead in _PROCESS_ONLY.items():
                if getattr(args, dest, None) not in (None, False, "text"):
                    raise ConfigurationError(f"{dest} is a process's option, not a "
                                             f"tunnel's: {instead}")  # fmt: skip
            return args, checked(args)
        except (UsageError, ConfigError, SecurityOptionError) as exc:
            raise ConfigurationError(str(exc)) from None
        except SystemExit:  # help=True or version=True: argparse printed and would exit
            raise ConfigurationError("help and version are the command line's") from None

    def _claim(self) -> None:
        """One start per object: a second would orphan the first tunnel's thread."""
        with self._lock:
            if self._started:
                raise TunnelError(f"this {self._role_name} was started already")
            self._started = True

    def _run(self, build: Callable[[LoopThread], Role]) -> None:
        loop = LoopThread(f"reactor-mux {self._role_name}")
        try:
            role = build(loop)
        except BaseException:
            loop.close()
            raise
        loop.start()
        with self._lock:
            self._loop, self._role = loop, role
        try:
            loop.call(role.start)
        except (StartupError, OSError) as exc:
            self.stop(0.0)
            raise ForwardFailed(str(exc)) from None
        except BaseException:
            self.stop(0.0)
            raise

    def abandon(self) -> None:
        """Make a ``start()`` under way in another thread give up (asyncio's cancel)."""
        self._abandoned.set()

    @property
    def running(self) -> bool:
        """The tunnel is up (started, not stopped, and its client has not given up)."""
        return self._loop is not None and self._loop.running

    def status(self) -> dict[str, Any]:
        """What ``reactor-mux status --json`` shows: channels, forwards, streams."""
        report: dict[str, Any] = self._call(lambda: snapshot(self._live_role()))
        return report

    def _call(self, function: Callable[[], Any]) -> Any:
        loop = self._loop
        if loop is None or not loop.running:
            raise TunnelStopped(f"the {self._role_name} is not running")
        try:
            return loop.call(function)
        except LoopStopped:
            raise TunnelStopped(f"the {self._role_name} stopped") from loop.crashed
        except LoopUnresponsive as exc:
            raise TunnelError(str(exc)) from None

    def _live_role(self) -> Role:
        assert self._role is not None
        return self._role

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop accepting, let open streams finish (up to ``drain_timeout``, the
        ``drain_timeout`` option by default), then stop.  Stopping twice is harmless."""
        with self._lock:
            self._halt(self._drain_timeout if drain_timeout is None else drain_timeout)

    def _halt(self, drain_timeout: float) -> None:
        loop, role = self._loop, self._role
        if loop is None or role is None:
            return
        self._loop = None  # a second stop, from any thread, finds nothing to do
        if loop.running:
            try:
                loop.call(lambda: role.drain(drain_timeout, loop.reactor.stop))
            except (LoopStopped, LoopUnresponsive):
                pass  # it stopped meanwhile, or is stuck: stopped below either way
        if not loop.join(drain_timeout + 10.0):
            loop.reactor.call_soon_threadsafe(loop.reactor.stop, PROCESS)
            loop.join(10.0)
        role.close()  # the loop has stopped: nothing else touches the role now
        loop.close()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


class Client(_Tunnel):
    """A reactor-mux client: ``with Client("tunnel.example", local_forward=["0:db:5432"],
    secret_file="office.secret") as tunnel: tunnel.forwards[0].port``."""

    _role_name = "client"

    def __init__(
        self,
        server: str | None = None,
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        **options: Any,
    ) -> None:
        check_keywords("client", options)
        argv = ["client", *([server] if server is not None else []), *options_to_argv(options)]
        super().__init__(argv, start_timeout)

    def start(self) -> Client:
        """Connect, and return once every forward is up; raises AuthenticationFailed,
        ServerUnusable, ServerUnreachable, ForwardFailed or ConfigurationError."""
        self._claim()
        args, security = self._parse()
        assert isinstance(security, ClientSecurity)
        self._drain_timeout = args.drain_timeout
        up = threading.Event()
        config = replace(client_config(args, security, None), on_forwards_up=up.set,
                         exit_on_forward_failure="start() waits for every forward",
                         persist_option="persist=True")  # fmt: skip
        self._run(lambda loop: ClientRole(loop.reactor, loop.resolver, config))
        deadline = time.monotonic() + self._start_timeout
        while not up.wait(0.02):
            if not self.running:
                self._raise_gave_up()
            if self._abandoned.is_set():
                self.stop(0.0)
                raise TunnelStopped("the start was abandoned")
            if time.monotonic() > deadline:
                error = self._call(self._not_up_yet)
                self.stop(0.0)
                raise error
        return self

    def _not_up_yet(self) -> TunnelError:
        """start_timeout passed: the error that says what was still missing."""
        client = self._live_role()
        assert isinstance(client, ClientRole)
        if client.channel is None or not client.channel.ready:
            return ServerUnreachable(f"no channel to {client.server_label} within "
                                     f"{self._start_timeout:g}s")  # fmt: skip
        waiting = [f"{spec.flag}: {client.forward_table.state.get(m, 'not asked')}"
                   for m, spec in client.forward_table.mappings.items()]  # fmt: skip
        return ForwardFailed(f"not every forward was up within {self._start_timeout:g}s: "
                             + "; ".join(waiting))  # fmt: skip

    def _raise_gave_up(self) -> None:
        client = self._live_role()
        assert isinstance(client, ClientRole)
        gave_up, crashed = client.gave_up, self._loop.crashed if self._loop else None
        self.stop(0.0)
        raise _error_for(gave_up) from crashed

    def __enter__(self) -> Client:
        return self.start()

    @property
    def forwards(self) -> list[Forward]:
        """Every forward, with where it listens and its state."""
        return [_forward(item) for item in self.status()["forwards"]]

    def add_forward(self, flag: str, spec: str) -> Forward:
        """Add a forward (``add_forward("-L", "0:db:5432")``, as ``reactor-mux forward
        add``); returns it once its local port is open (the server's answer shows in
        ``forwards``).  Raises ForwardFailed."""
        parsed = _forward_spec(flag, spec)

        def add() -> str | None:
            client = self._live_role()
            assert isinstance(client, ClientRole)
            return client.add_forward(parsed)

        why = self._call(add)
        if why is not None:
            raise ForwardFailed(why)
        return next(f for f in self.forwards if f.forward == parsed.flag)

    def cancel_forward(self, flag: str, spec: str) -> None:
        """Cancel a forward (its open streams finish); ForwardFailed if there is none."""
        parsed = _forward_spec(flag, spec)

        def cancel() -> bool:
            client = self._live_role()
            assert isinstance(client, ClientRole)
            return client.remove_forward(parsed)

        if not self._call(cancel):
            raise ForwardFailed(f"{parsed.flag} is not forwarded")


class Server(_Tunnel):
    """A reactor-mux server: ``with Server("127.0.0.1:0", secret_file="s") as server:
    server.addresses[0]``."""

    _role_name = "server"

    def __init__(
        self,
        listen: str | Sequence[str] = "127.0.0.1:0",
        *,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        **options: Any,
    ) -> None:
        listens = [listen] if isinstance(listen, str) else list(listen)
        check_keywords("server", options)
        argv = ["server", *options_to_argv({"listen": listens, **options})]
        super().__init__(argv, start_timeout)

    def start(self) -> Server:
        """Listen; returns once every ``listen`` address is bound (ForwardFailed if one
        cannot be), or raises ConfigurationError."""
        self._claim()
        args, security = self._parse()
        assert isinstance(security, ServerSecurity)
        self._drain_timeout = args.drain_timeout
        config = server_config(args, security)
        self._run(lambda loop: ServerRole(loop.reactor, loop.resolver, config))
        return self

    def __enter__(self) -> Server:
        return self.start()

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every address the server accepts channels on (port 0 resolved)."""
        return [(one["host"], one["port"]) for one in self.status()["listening"]]


class AsyncClient:
    """``Client`` for asyncio: ``async with AsyncClient(...) as tunnel`` starts and stops
    it in a worker thread, so the event loop never waits on the tunnel."""

    def __init__(self, server: str | None = None, **options: Any) -> None:
        self.sync = Client(server, **options)

    async def __aenter__(self) -> Client:
        return await _start_cancellably(self.sync, self.sync.start)

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.to_thread(self.sync.stop)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.sync.status)


class AsyncServer:
    """``Server`` for asyncio, as AsyncClient is Client's."""

    def __init__(self, listen: str | Sequence[str] = "127.0.0.1:0", **options: Any) -> None:
        self.sync = Server(listen, **options)

    async def __aenter__(self) -> Server:
        return await _start_cancellably(self.sync, self.sync.start)

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.to_thread(self.sync.stop)


async def _start_cancellably(tunnel: _Tunnel, start: Callable[[], T]) -> T:
    """``start`` in a worker thread; cancelled meanwhile (a timeout, a cancelled task),
    the start is abandoned and what it opened is stopped before the cancel goes on."""
    task = asyncio.ensure_future(asyncio.to_thread(start))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        tunnel.abandon()
        with contextlib.suppress(Exception):
            await task
        await asyncio.to_thread(tunnel.stop, 0.0)
        raise


def _error_for(gave_up: GaveUp | None) -> TunnelError:
    if gave_up is None:
        return TunnelStopped("the client stopped before every forward was up")
    kind = {
        Ending.REFUSED: AuthenticationFailed,
        Ending.UNUSABLE: ServerUnusable,
        Ending.UNREACHABLE: ServerUnreachable,
        Ending.FORWARD_FAILED: ForwardFailed,
        Ending.STDIO: ForwardFailed,
    }[gave_up.ending]
    return kind(gave_up.line)


def _forward(item: Mapping[str, Any]) -> Forward:
    bound = item.get("bound") or {}
    listening = item["listening"]
    paths = [one["path"] for one in [*listening, bound] if "path" in one]
    return Forward(
        forward=item["forward"],
        state=item["state"],
        listening=tuple((one["host"], one["port"]) for one in listening if "path" not in one),
        bound=(bound["host"], bound["port"]) if "host" in bound else None,
        path=paths[0] if paths else None,
    )


def _forward_spec(flag: str, spec: str) -> ForwardSpec:
    try:
        return parse_forward_words([flag, spec])
    except SpecError as exc:
        raise ConfigurationError(str(exc)) from None
