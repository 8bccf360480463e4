"""A bug costs the object whose callback raised, never the process.

One server and two clients run in-process on one reactor.  A fault is planted
(through monkeypatch, a test hook: no production code knows about it) in one
kind of callback, on objects of client A only.  While it fires, client B runs
a checksummed two-way transfer.  Each case checks that the fault was logged
once with its traceback, that the object owning the callback was closed (and
only it), that B's transfer arrived intact, and that the loop still serves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from inprocess import InProcessTunnel, LogRecords
from support import BlackHole, Exchange, HashReplyServer, check_exchange, poke, run_exchange

from reactor_mux.io import plane as data_plane
from reactor_mux.io.connector import Connector
from reactor_mux.protocol.session import Session
from reactor_mux.roles.client import Client
from reactor_mux.tunnel.channel import Channel
from reactor_mux.tunnel.liveness import Liveness
from reactor_mux.tunnel.localstream import LocalStream
from reactor_mux.tunnel.planestream import PlaneStream
from reactor_mux.tunnel.settings import ChannelSettings

HEADER_ASKING_FOR_A_REPLY = (4096).to_bytes(8, "big") + (77).to_bytes(8, "big")


@dataclass
class World:
    """What a case's hooks can look at."""

    tunnel: InProcessTunnel
    target_a: HashReplyServer
    black_hole: BlackHole
    log: LogRecords
    client_a: Client | None = None
    channel_a: Channel | None = None  # the server's channel for client A
    fired: list[Any] = field(default_factory=list)


@dataclass
class Case:
    """One kind of callback: where the fault goes and what it must cost."""

    where: tuple[type, str]
    hits: Callable[[World, Any], bool]
    """Does this call (its ``self``) belong to client A's victim object?"""
    target_a: Callable[[World], str]
    check: Callable[[World, str, list[str]], None]
    """(world, how A's connection ended, internal-error log lines)"""
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    persistent: bool = False
    """Raise on every call, not just the first (the bug is still there while closing)."""


def closed_channel(world: World, ended: str, errors: list[str]) -> None:
    assert world.channel_a is not None and world.channel_a.closed
    assert world.channel_a.close_reason == "internal error"
    assert errors == [f"internal error in {world.channel_a.name}; closing it"]


def closed_channel_despite_a_second_bug(world: World, ended: str, errors: list[str]) -> None:
    """The owner's close hit the same bug: the rest of the close still happened,
    so the server forgot the channel (its slot and ports are free)."""
    closed_channel(world, ended, errors)
    assert world.log.matching(f"{world.channel_a.name}: internal error while closing")
    assert world.channel_a not in world.tunnel.server.clients


def reset_stream(world: World, ended: str, errors: list[str]) -> None:
    assert ended == "reset"
    stream = world.fired[0]
    assert stream.closed
    assert errors == [f"internal error in {stream.label}; closing it"]
    assert world.channel_a is not None and world.channel_a.ready, "the channel must survive"


def refused_connect(world: World, ended: str, errors: list[str]) -> None:
    assert ended == "reset"
    assert len(errors) == 1
    assert errors[0].startswith("internal error in connect to ")
    assert errors[0].endswith("; closing it")
    # The stream was refused for the bug (SYN ERROR), not left to its timeout.
    assert world.log.matching("failed: internal error")
    assert world.channel_a is not None and world.channel_a.ready, "the channel must survive"


def reset_connection(world: World, ended: str, errors: list[str]) -> None:
    """The bug was in setting up one connection: that connection is reset, and
    the listener goes on accepting."""
    assert ended == "reset"
    assert world.client_a is not None
    listeners = next(iter(world.client_a.local_listeners.values()))
    assert not listeners.closed
    assert len(errors) == 1
    accepted = listeners.listeners[0]  # the test connects to 127.0.0.1
    assert errors[0].startswith(f"internal error in {accepted.name}: setting up the connection")
    assert world.client_a.channel is not None and world.client_a.channel.ready


def a_target(world: World) -> str:
    return f"127.0.0.1:{world.target_a.port}"


CASES = {
    "channel I/O": Case(
        (Channel, "_python_input"),
        hits=lambda w, obj: obj is w.channel_a,
        target_a=a_target,
        check=closed_channel,
    ),
    "a bug that is still there while the channel closes": Case(
        (Session, "output_views"),
        hits=lambda w, obj: w.channel_a is not None and obj is w.channel_a._session,
        target_a=a_target,
        check=closed_channel_despite_a_second_bug,
        persistent=True,
    ),
    "stream I/O": Case(
        # The compiled data plane moves a stream's bytes in C: Python hears of the
        # stream for its EOF and the FIN passed on (poke half-closes), as events.
        (PlaneStream, "on_plane_event") if data_plane.enabled() else (LocalStream, "_on_io"),
        hits=lambda w, obj: obj._host is w.channel_a,
        target_a=a_target,
        check=reset_stream,
    ),
    "timer (keepalive tick)": Case(
        (Liveness, "_tick"),
        hits=lambda w, obj: obj._owner is w.channel_a,
        target_a=a_target,
        check=closed_channel,
        settings=ChannelSettings(keepalive_interval=0.2),
    ),
    "call_soon (channel flush)": Case(
        (Channel, "_flush"),
        hits=lambda w, obj: obj is w.channel_a,
        target_a=a_target,
        check=closed_channel,
    ),
    "threadsafe call (a name resolved off-thread)": Case(
        (Connector, "_on_resolved"),
        hits=lambda w, obj: obj.host == "localhost" and obj.port == w.target_a.port,
        target_a=lambda w: f"localhost:{w.target_a.port}",
        check=refused_connect,
    ),
    "resolver delivery (an address literal)": Case(
        (Connector, "_on_resolved"),
        hits=lambda w, obj: obj.host == "127.0.0.1" and obj.port == w.target_a.port,
        target_a=a_target,
        check=refused_connect,
    ),
    "accept handler": Case(
        (Client, "_on_local_accept"),
        hits=lambda w, obj: obj is w.client_a,
        target_a=a_target,
        check=reset_connection,
    ),
    "connector timeout": Case(
        (Connector, "_on_timeout"),
        hits=lambda w, obj: obj.port == w.black_hole.port,
        target_a=lambda w: f"127.0.0.1:{w.black_hole.port}",
        check=refused_connect,
        settings=ChannelSettings(connect_timeout=0.3),
    ),
}


def plant(monkeypatch: pytest.MonkeyPatch, world: World, case: Case) -> None:
    """Make the method raise once, on client A's objects only."""
    cls, name = case.where
    original = getattr(cls, name)

    def faulty(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (case.persistent or not world.fired) and case.hits(world, self):
            world.fired.append(self)
            raise RuntimeError("planted fault")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, faulty)


@pytest.mark.parametrize("kind", list(CASES))
def test_a_bug_costs_its_owner_and_nothing_else(kind, loop, log_records, monkeypatch):
    case = CASES[kind]
    target_a, target_b, black_hole = HashReplyServer(), HashReplyServer(), BlackHole()
    tunnel = InProcessTunnel(loop, case.settings)
    world = World(tunnel, target_a, black_hole, log_records)
    try:
        plant(monkeypatch, world, case)
        client_b = tunnel.client(f"-L 0:127.0.0.1:{target_b.port}")
        port_b = tunnel.local_port(client_b)
        world.client_a = tunnel.client(f"-L 0:{case.target_a(world)}")
        world.channel_a = loop.call(lambda: tunnel.server_channel(world.client_a))

        healthy = Exchange(4_000_000, 4_000_000, seed=11)
        transfer = threading.Thread(target=run_exchange, args=(port_b, healthy))
        transfer.start()
        ended = poke(tunnel.local_port(world.client_a), HEADER_ASKING_FOR_A_REPLY)
        loop.wait(lambda: bool(world.fired), timeout=10)
        log_records.wait_for("internal error in")
        transfer.join(60)

        check_exchange(healthy, target_b)
        errors = log_records.matching("internal error in ")
        assert all(record.exc_info for record in errors), "logged without its traceback"
        assert "planted fault" in log_records.format(errors[0])
        loop.call(lambda: case.check(world, ended, [r.getMessage() for r in errors]))

        if case.check is reset_connection:  # the listener still serves
            assert poke(tunnel.local_port(world.client_a), HEADER_ASKING_FOR_A_REPLY) == (
                "eof after 4096 bytes"
            )
        again = Exchange(100_000, 100_000, seed=12)
        run_exchange(port_b, again)  # the loop still serves
        check_exchange(again, target_b)
        assert loop.alive
    finally:
        tunnel.close()
        for closeable in (target_a, target_b, black_hole):
            closeable.close()
