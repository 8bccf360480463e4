"""Chaos: the channel is cut under 200 busy streams.

A relay in the middle of the channel is reset outright, or frozen and then
reset.  Every stream must either complete intact or end with a reset that its
local application sees; whatever arrived before must be exactly a prefix of
what was sent (no corruption, no reordering); no stream may hang; and after
the client reconnects, new streams work.

Each stream is a request, then its reply, each end using one thread.  Linux
reports a reset to whichever call on the socket comes first and then clears
it, after which ``recv`` returns 0: were one thread sending while another
read, a reset taken by the sender would reach the reader as a clean EOF, and
a cut stream would look like one the tunnel closed early.  One thread, in
order, always knows.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import threading
import time
from dataclasses import dataclass

import pytest
from support import ChaosRelay, MuxProcess, Tunnel, payload, recv_exactly, sha, wait_until

from reactor_mux.tools.targets import ThreadedTCPServer

FAST = ("--keepalive-interval", "0.5", "--keepalive-timeout", "1.5", "--handshake-timeout", "2",
        "--resume-timeout", "0")  # fmt: skip
"""Resets on channel loss, as before resume: tests/test_e2e_resume.py covers resume."""


@dataclass
class Received:
    size: int
    digest: str
    reset: bool  # ended with a reset (or another error) rather than a clean EOF


def drain_tolerant(conn: socket.socket) -> Received:
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(256 * 1024)
    try:
        while count := conn.recv_into(buffer):
            digest.update(memoryview(buffer)[:count])
            size += count
    except OSError:
        return Received(size, digest.hexdigest(), True)
    return Received(size, digest.hexdigest(), False)


def send_tolerant(conn: socket.socket, data: memoryview) -> bool:
    """Send ``data`` and EOF; False if the connection was reset meanwhile."""
    try:
        for offset in range(0, len(data), 256 * 1024):
            conn.sendall(data[offset : offset + 256 * 1024])
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        return False
    return True


class ChaosTarget(ThreadedTCPServer):
    """Like HashReplyServer, but records what it got even when the stream dies."""

    def __init__(self) -> None:
        super().__init__()
        self.received: dict[int, Received] = {}

    def handle(self, conn: socket.socket) -> None:
        reply_len, seed = struct.unpack(">QQ", recv_exactly(conn, 16))
        request = drain_tolerant(conn)  # the whole request, then the reply
        self.received[seed] = request
        if not request.reset:
            send_tolerant(conn, payload(seed, reply_len))


@dataclass
class Stream:
    port: int
    send_len: int
    reply_len: int
    seed: int
    reply: Received | None = None
    error: str | None = None


def run_stream(stream: Stream) -> None:
    try:
        with socket.create_connection(("127.0.0.1", stream.port), timeout=30) as conn:
            conn.sendall(struct.pack(">QQ", stream.reply_len, stream.seed))
            sent = send_tolerant(conn, payload(stream.seed + 1, stream.send_len))
            stream.reply = drain_tolerant(conn)
            if not sent:  # the send took the reset: the reply's EOF is that reset
                stream.reply = Received(stream.reply.size, stream.reply.digest, True)
    except OSError as exc:
        stream.error = repr(exc)  # refused or reset before anything flowed


def prefix_ok(received: Received, expected: memoryview) -> bool:
    return received.size <= len(expected) and received.digest == sha(expected[: received.size])


def verify(stream: Stream, target: ChaosTarget) -> str:
    """'intact', 'reset', or raise with what went wrong."""
    expected_reply = payload(stream.seed, stream.reply_len)
    expected_request = payload(stream.seed + 1, stream.send_len)
    if stream.reply is None:
        assert stream.error is not None
        return "reset"
    reply = stream.reply
    assert prefix_ok(reply, expected_reply), f"seed {stream.seed}: corrupted reply"
    if not reply.reset:
        assert reply.size == stream.reply_len, f"seed {stream.seed}: clean EOF, reply truncated"
    if not reply.reset:  # the target records the request after its own EOF, maybe later
        wait_until(lambda: stream.seed in target.received, timeout=10)
    request = target.received.get(stream.seed)
    if request is not None:
        assert prefix_ok(request, expected_request), f"seed {stream.seed}: corrupted request"
        if not request.reset:
            assert request.size == stream.send_len, (
                f"seed {stream.seed}: clean EOF at the target, request truncated"
            )
    intact = (not reply.reset and request is not None and not request.reset
              and request.size == stream.send_len)  # fmt: skip
    return "intact" if intact else "reset"


@pytest.mark.parametrize("how", ["cut", "freeze-then-cut"])
def test_streams_survive_or_reset_cleanly_when_the_channel_is_cut(how):
    target = ChaosTarget()
    tunnel = Tunnel(server_args=FAST)
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = MuxProcess([
            "client", "--server", f"127.0.0.1:{relay.port}",
            "-L", f"0:127.0.0.1:{target.port}", "-R", f"0:127.0.0.1:{target.port}",
            *FAST, "--reconnect-min", "0.2", "--reconnect-max", "0.5",
        ])  # fmt: skip
        tunnel.clients.append(client)
        ports = {kind: port for kind, port, _ in client.forwards(2)}
        rng = random.Random(hash(how) & 0xFFFF)
        streams = [
            Stream(ports["L" if i % 2 else "R"], rng.randint(0, 2_000_000),
                   rng.randint(0, 2_000_000), seed=7000 + 3 * i)
            for i in range(200)
        ]  # fmt: skip
        threads = [threading.Thread(target=run_stream, args=(s,)) for s in streams]
        for thread in threads:
            thread.start()
        # Cut while busy: once a good share of the streams reached the target.
        assert wait_until(lambda: target.connections >= 50, timeout=30)
        mark = client.mark
        if how == "freeze-then-cut":
            relay.freeze()
            time.sleep(1.0)  # the scenario: a network that silently drops everything for 1 s
        relay.cut()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        hung = [s.seed for s, t in zip(streams, threads, strict=True) if t.is_alive()]
        assert not hung, f"{len(hung)} streams hung"
        outcomes = [verify(s, target) for s in streams]
        print(f"\n{how}: {outcomes.count('intact')} intact, {outcomes.count('reset')} reset")
        assert outcomes.count("reset") > 0, "the cut came too late to test anything"

        forwards = client.forwards(2, timeout=15, start=mark)
        after = [Stream(port, 300_000, 300_000, seed=9000 + i)
                 for i, (_k, port, _t) in enumerate(forwards)]  # fmt: skip
        for stream in after:
            run_stream(stream)
            assert verify(stream, target) == "intact", stream
    finally:
        relay.close()
        tunnel.close()
        target.close()
