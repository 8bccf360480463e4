"""The two data paths behave the same on the wire.

The same traffic (checksummed exchanges of every shape over an -L and an -R,
at once) runs through a client and a server that move the streams' bytes with
the compiled data plane, and again with the Python data path
(REACTOR_MUX_DATA_PLANE=python), with a relay in the channel that records every
byte.  Per stream, both runs must put the same data on the wire each way, and
the same opening and closing commands; only flow-control commands (ACK, WINDOW,
BLOCKED), whose timing follows the machine, may differ.  Which path each process
used is checked from its descriptors (the plane's epoll set is a second one).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass

import pytest
from support import ChaosRelay, Exchange, HashReplyServer, MuxProcess, check_exchange, run_exchange

from reactor_mux.io import plane as data_plane
from reactor_mux.protocol.commands import parse_command
from reactor_mux.protocol.frames import split_frames
from reactor_mux.protocol.verbs import VERBS, Scope, Verb

pytestmark = pytest.mark.skipif(not data_plane.enabled(), reason="the compiled data plane")

SHAPES = [  # (bytes sent, bytes replied)
    (0, 0),
    (1, 1),
    (100, 3_000_000),
    (3_000_000, 100),
    (2_000_000, 2_000_000),
    (65536, 65536),
    (300_000, 0),
]
FLOW_CONTROL = (Verb.ACK, Verb.WINDOW, Verb.BLOCKED)


@dataclass(frozen=True)
class StreamOnWire:
    """One stream as the channel carried it, without flow control."""

    up: tuple[int, str]  # bytes and sha256 of the data the client side sent
    down: tuple[int, str]
    up_commands: tuple[str, ...]
    down_commands: tuple[str, ...]


def eventpoll_count(pid: int) -> int:
    fds = f"/proc/{pid}/fd"
    return sum(os.readlink(f"{fds}/{fd}") == "anon_inode:[eventpoll]" for fd in os.listdir(fds))


def streams_on_wire(up: bytes, down: bytes) -> dict[tuple[str, int], StreamOnWire]:
    """Each stream of the channel, named by (direction it was opened in, its seed)."""
    data: dict[tuple[str, int], bytearray] = {}
    commands: dict[tuple[str, int], list[str]] = {}
    for direction, wire in (("up", up), ("down", down)):
        frames, consumed, error = split_frames(wire)
        assert error is None and consumed == len(wire), error
        for stream_id, kind, body in frames:
            key = (direction, stream_id)
            if kind == 0:
                data.setdefault(key, bytearray()).extend(body)
                continue
            verb = parse_command(body).verb
            if VERBS[verb].scope is Scope.STREAM and verb not in FLOW_CONTROL:
                commands.setdefault(key, []).append(body.decode())
    named = {}
    for stream_id in {sid for _direction, sid in [*data, *commands]}:
        up_data = data.get(("up", stream_id), bytearray())
        down_data = data.get(("down", stream_id), bytearray())
        # The opener's first 16 bytes ask for the reply: its length and the seed.
        first_up = commands.get(("up", stream_id), ["-"])[0]
        opened_up = parse_command(first_up.encode()).verb is Verb.SYN
        request = up_data if opened_up else down_data
        seed = struct.unpack(">QQ", bytes(request[:16]))[1]
        named["-L" if opened_up else "-R", seed] = StreamOnWire(
            (len(up_data), hashlib.sha256(up_data).hexdigest()),
            (len(down_data), hashlib.sha256(down_data).hexdigest()),
            tuple(commands.get(("up", stream_id), [])),
            tuple(commands.get(("down", stream_id), [])),
        )
    return named


def run(path: str, target: HashReplyServer) -> dict[tuple[str, int], StreamOnWire]:
    env = {"REACTOR_MUX_DATA_PLANE": "python"} if path == "python" else {}
    server = MuxProcess(["server", "--listen", "127.0.0.1:0"], env=env)
    relay = ChaosRelay(server.listening_port(), record=True)
    client = MuxProcess(
        ["client", "--server", f"127.0.0.1:{relay.port}",
         "-L", f"0:127.0.0.1:{target.port}", "-R", f"0:127.0.0.1:{target.port}"],
        env=env,
    )  # fmt: skip
    try:
        forwards = client.forwards(2, timeout=15)
        ports = {kind: port for kind, port, _target in forwards}
        planes = 2 if path == "plane" else 1
        assert eventpoll_count(client.pid) == eventpoll_count(server.pid) == planes
        exchanges = []
        for kind, base in (("L", 1000), ("R", 2000)):
            for index, (sent, replied) in enumerate(SHAPES):
                exchanges.append((kind, Exchange(sent, replied, seed=base + 10 * index)))
        threads = [
            threading.Thread(target=run_exchange, args=(ports[kind], exchange))
            for kind, exchange in exchanges
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for _kind, exchange in exchanges:
            check_exchange(exchange, target)
    finally:
        client.stop()
        server.stop()
        relay.close()
    assert len(relay.transcripts) == 1, "the channel was cut and resumed"
    up, down = relay.transcripts[0]
    return streams_on_wire(bytes(up), bytes(down))


def test_both_data_paths_put_the_same_streams_on_the_wire():
    target = HashReplyServer()
    try:
        by_plane = run("plane", target)
        by_python = run("python", target)
    finally:
        target.close()
    assert len(by_plane) == 2 * len(SHAPES)
    assert by_plane == by_python
    for (kind, _seed), stream in by_plane.items():
        opener, answerer = ("up", "down") if kind == "-L" else ("down", "up")
        commands = {"up": stream.up_commands, "down": stream.down_commands}
        assert parse_command(commands[opener][0].encode()).verb is Verb.SYN
        assert commands[opener][-1] == "FIN"
        assert commands[answerer] == ("SYN OK", "FIN")
