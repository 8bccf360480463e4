"""Graceful shutdown: the first SIGTERM/SIGINT drains, a second one stops at once."""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import threading
import time

from support import (
    Exchange,
    NeverReadServer,
    PortHolder,
    Tunnel,
    check_exchange,
    payload,
    run_exchange,
    sha,
    wait_until,
)

from reactor_mux.tools.targets import ThreadedTCPServer


def slow_exchange(port: int, seed: int) -> tuple[Exchange, threading.Thread]:
    """A transfer big enough to be in flight when the signal comes."""
    ex = Exchange(60_000_000, 20_000_000, seed)
    thread = threading.Thread(target=run_exchange, args=(port, ex))
    thread.start()
    return ex, thread


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            return conn.recv(1) == b""
    except (ConnectionRefusedError, ConnectionResetError):
        return True


def test_sigterm_on_the_server_lets_open_streams_finish(hash_target):
    tunnel = Tunnel(server_args=("--drain-timeout", "30"))
    # The -R port is held (PortHolder): once the drain closes it, no other test's
    # bind(0) can be handed it, so a connect there that is not refused is the server.
    held = PortHolder()
    try:
        remote = held.take()
        target = f"127.0.0.1:{hash_target.port}"
        client, forwards = tunnel.client("-L", f"0:{target}", "-R", f"127.0.0.1:{remote}:{target}")
        ports = {kind: port for kind, port, _ in forwards}
        transfers = [slow_exchange(ports["L"], 301), slow_exchange(ports["R"], 302)]
        assert wait_until(lambda: hash_target.connections == 2)  # both streams are open
        started = time.monotonic()
        tunnel.server.signal(signal.SIGTERM)
        tunnel.server.wait_event("draining", reason="SIGTERM")
        assert refused(ports["R"]), "the server still accepts on its -R port while draining"
        assert refused(ports["L"]), "the server still opens new streams while draining"
        for ex, thread in transfers:
            thread.join(60)
            check_exchange(ex, hash_target)
        assert tunnel.server.proc.wait(10) == 0
        assert time.monotonic() - started < 30, "it waited for the drain timeout"
        assert tunnel.server.events("drain_timeout") == []
        # A planned stop is a normal close to the client, at INFO, not a loss.
        down = client.wait_event("channel_down")
        assert down["level"] == "info", down
    finally:
        tunnel.close()
        held.close()


def test_sigterm_on_the_client_lets_open_streams_finish(hash_target):
    tunnel = Tunnel()
    held = PortHolder()  # as above: the freed -L port stays out of other tests' reach
    try:
        local = held.take()
        client, forwards = tunnel.client("-L", f"127.0.0.1:{local}:127.0.0.1:{hash_target.port}",
                                         extra=("--drain-timeout", "30"))  # fmt: skip
        port = forwards[0][1]
        assert port == local
        ex, thread = slow_exchange(port, 303)
        assert wait_until(lambda: hash_target.connections == 1)  # the stream is open
        client.signal(signal.SIGTERM)
        client.wait_event("draining")
        assert refused(port), "the -L port still accepts while draining"
        thread.join(60)
        check_exchange(ex, hash_target)
        assert client.proc.wait(10) == 0
    finally:
        tunnel.close()
        held.close()


@contextlib.contextmanager
def server_with_a_stuck_stream(drain_timeout: str):  # type: ignore[no-untyped-def]
    """A tunnel whose server has one open stream that cannot finish (its target
    never reads), so draining can only end by timeout or a second signal."""
    stalled = NeverReadServer()
    tunnel = Tunnel(server_args=("--drain-timeout", drain_timeout))
    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{stalled.port}")
        with socket.create_connection(("127.0.0.1", forwards[0][1])) as conn:
            conn.sendall(b"x" * 100000)
            assert wait_until(lambda: stalled.connections == 1)  # the stream reached the target
            yield tunnel.server
    finally:
        stalled.release.set()
        stalled.close()
        tunnel.close()


def test_drain_gives_up_after_the_timeout():
    with server_with_a_stuck_stream("1") as server:
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        # Not before the 1 s drain timeout; the upper bound catches a drain that
        # waited for the stream (it never ends), with slack for a loaded machine.
        assert 0.9 < time.monotonic() - started < 8
        assert server.count_event("drain_timeout") == 1  # it cut the stuck stream


def test_a_long_drain_says_what_it_waits_for():
    with server_with_a_stuck_stream("30") as server:
        server.signal(signal.SIGTERM)
        server.wait_event("drain_waiting", timeout=10)
        server.signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0


def test_second_signal_stops_at_once():
    with server_with_a_stuck_stream("60") as server:
        server.signal(signal.SIGINT)
        server.wait_event("draining")
        started = time.monotonic()
        server.signal(signal.SIGINT)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - started < 5  # at once, not the 60 s drain timeout
        assert server.events("stopping", reason="SIGINT")


class SlowSink(ThreadedTCPServer):
    """Ends its own direction at once, then reads slowly to EOF and records
    (length, sha256): the tunnel still holds bytes for it after the stream
    has closed at the client."""

    def __init__(self) -> None:
        super().__init__(receive_buffer=16384)
        self.received: list[tuple[int, str]] = []

    def handle(self, conn: socket.socket) -> None:
        conn.shutdown(socket.SHUT_WR)
        digest, size = hashlib.sha256(), 0
        while chunk := conn.recv(16384):
            digest.update(chunk)
            size += len(chunk)
            time.sleep(0.002)
        self.received.append((size, digest.hexdigest()))


def test_a_draining_client_waits_for_the_server_to_deliver_what_it_sent():
    """BYE: the client's stream is closed, but the server still writes its last
    bytes to a slow target; the client must not cut the channel under them."""
    # A 4 MiB window lets the client finish while most of it waits at the server.
    sink, tunnel = SlowSink(), Tunnel(server_args=("--window", "4M"))
    size = 6 * 1024 * 1024
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{sink.port}",
                                         extra=("--drain-timeout", "30"))  # fmt: skip
        with socket.create_connection(("127.0.0.1", forwards[0][1])) as conn:
            assert conn.recv(1) == b""  # the sink's EOF came through
            conn.sendall(payload(9, size))
            conn.shutdown(socket.SHUT_WR)
        client.signal(signal.SIGTERM)
        assert wait_until(lambda: sink.received, timeout=30)
        assert sink.received == [(size, sha(payload(9, size)))]
        assert client.proc.wait(30) == 0
        tunnel.server.wait_event("channel_down", level="info")  # an orderly close
    finally:
        sink.close()
        tunnel.close()
