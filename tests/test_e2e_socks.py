"""``-D``: SOCKS through real processes, with curl and with a SOCKS client of our own.

Each check moves checksummed data: curl downloads a random file from a real
HTTP server, and the Python client runs two-way exchanges with
``HashReplyServer`` while ``-L`` and ``-R`` streams share the channel.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import (
    Exchange,
    MuxProcess,
    PortHolder,
    Tunnel,
    check_exchange,
    drain,
    payload,
    recv_exactly,
    run_exchange,
    send_all_then_eof,
    sha,
    socks5_connect,
    wait_until,
)

from reactor_mux.roles.socksserver import MAX_SOCKS_NEGOTIATIONS
from reactor_mux.tools.targets import ThreadedTCPServer

pytestmark = pytest.mark.codec_independent

CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed (apt-get install curl)")


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A real HTTP server on 127.0.0.1 serving ``blob`` (3 MB of random bytes)."""
    body = os.urandom(3_000_000)
    (tmp_path / "blob").write_bytes(body)
    handler = functools.partial(QuietHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], hashlib.sha256(body).hexdigest()
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def curl(proxy_flag: str, socks_port: int, url: str) -> subprocess.CompletedProcess[bytes]:
    assert CURL is not None
    return subprocess.run(
        [CURL, "-sS", "--max-time", "20", proxy_flag, f"127.0.0.1:{socks_port}", url],
        capture_output=True,
        timeout=30,
    )


def socks_exchange(port: int, target_port: int, ex: Exchange, host: str = "localhost") -> None:
    """``support.run_exchange`` through the SOCKS port."""

    def connect() -> socket.socket:
        sock, code = socks5_connect(port, host, target_port)
        if code != 0:
            sock.close()
            raise ConnectionError(f"SOCKS reply {code}")
        return sock

    run_exchange(port, ex, connect=connect)


def run_all(jobs: list[Callable[[], None]], exchanges: list[Exchange], target) -> None:  # type: ignore[no-untyped-def]
    """Run the exchanges at once, then check each at both ends."""
    threads = [threading.Thread(target=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for ex in exchanges:
        check_exchange(ex, target)


@needs_curl
def test_curl_through_socks5_socks4a_and_their_local_resolving_forms(tunnel, web):
    web_port, digest = web
    client, forwards = tunnel.client("-D", "0")
    socks_port = forwards[0][1]
    for flag, host in [
        ("--socks5-hostname", "localhost"),  # the server resolves the name
        ("--socks4a", "localhost"),
        ("--socks5", "127.0.0.1"),  # curl resolves, sends an address
        ("--socks4", "127.0.0.1"),
    ]:
        done = curl(flag, socks_port, f"http://{host}:{web_port}/blob")
        assert done.returncode == 0, (flag, done.stderr)
        assert len(done.stdout) == 3_000_000 and hashlib.sha256(done.stdout).hexdigest() == digest
    assert "Traceback" not in client.log


@needs_curl
def test_curl_sees_the_socks_code_of_each_failure(hash_target):
    with PortHolder() as ports:
        closed = ports.take()  # bound, never listening: connections are refused
        tunnel = Tunnel(server_args=("--allow-connect", f"127.0.0.1:{closed}",
                                     "--allow-connect", f"localhost:{hash_target.port}",
                                     "--allow-connect", "no-such-host.invalid:80"))  # fmt: skip
        try:
            client, forwards = tunnel.client("-D", "0")
            socks_port = forwards[0][1]
            cases = [
                (f"http://127.0.0.1:{closed}/", "(5)"),  # connection refused
                ("http://no-such-host.invalid/", "(4)"),  # host unreachable: no such name
                (f"http://127.0.0.1:{hash_target.port}/", "(2)"),  # not allowed by ruleset
                # Allowed by name, but the name resolves to loopback, which no rule covers.
                (f"http://localhost:{hash_target.port}/", "(2)"),
            ]
            for url, code in cases:
                done = curl("--socks5-hostname", socks_port, url)
                assert done.returncode == 97 and code in done.stderr.decode(), (url, done.stderr)
            done = curl("--socks4a", socks_port, f"http://127.0.0.1:{closed}/")
            assert done.returncode == 97 and b"(91)" in done.stderr, done.stderr
            # Each refusal is logged at both ends, with its reason (the class, the SOCKS
            # code above, is for deciding); the server names the target it refused.
            refused = client.wait_events("stream_refused", 5, mapping="-D 0")
            assert len({event["reason"] for event in refused}) == 4, refused  # one per cause
            tunnel.server.wait_event("stream_refused", mapping="-D",
                                     peer=f"127.0.0.1:{hash_target.port}")  # fmt: skip
        finally:
            tunnel.close()


def test_socks_streams_share_the_channel_with_l_and_r(tunnel, hash_target):
    _client, forwards = tunnel.client(
        "-D", "0", "-L", f"0:127.0.0.1:{hash_target.port}", "-R", f"0:127.0.0.1:{hash_target.port}",
        "-D", "0",
    )  # fmt: skip
    ports = {kind: [] for kind in "LRD"}
    for kind, port, _target in forwards:
        ports[kind].append(port)
    assert len(ports["D"]) == 2
    exchanges: list[Exchange] = []
    jobs: list[Callable[[], None]] = []
    for index in range(12):
        ex = Exchange(send_len=400_000 + index, reply_len=700_000 + index, seed=4100 + index)
        if index % 4 < 2:
            jobs.append(
                functools.partial(socks_exchange, ports["D"][index % 2], hash_target.port, ex)
            )
        else:
            port = ports["L"][0] if index % 4 == 2 else ports["R"][0]
            jobs.append(functools.partial(run_exchange, port, ex))
        exchanges.append(ex)
    run_all(jobs, exchanges, hash_target)


def test_bytes_sent_before_the_reply_arrive_first(tunnel, echo):
    _client, forwards = tunnel.client("-D", "0")
    sock = socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=10)
    with sock:
        # Greeting, request and the first bytes of the stream in one write.
        sock.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01"
                     + struct.pack(">H", echo.port) + b"early bytes|")  # fmt: skip
        assert recv_exactly(sock, 2) == b"\x05\x00"
        assert recv_exactly(sock, 10)[:2] == b"\x05\x00"
        sock.sendall(b"late bytes")
        assert recv_exactly(sock, 22) == b"early bytes|late bytes"


@pytest.mark.parametrize(
    "wire,reply",
    [
        (b"\x05\x01\x00\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x07"),  # BIND
        (b"\x05\x01\x00\x05\x01\x00\x09\x7f\x00\x00\x01\x00\x50", b"\x05\x00\x05\x08"),  # ATYP 9
        (b"\x05\x01\x02", b"\x05\xff"),  # only username/password offered
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),  # not SOCKS at all
    ],
    ids=["command not supported", "address type not supported", "no method", "http"],
)
def test_bad_requests_get_a_reply_a_close_and_a_log_line(tunnel, hash_target, wire, reply):
    client, forwards = tunnel.client("-D", "0", "-L", f"0:127.0.0.1:{hash_target.port}")
    socks_port = next(port for kind, port, _ in forwards if kind == "D")
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout=10)
    with sock:
        sock.sendall(wire)
        received = b""
        while chunk := sock.recv(100):
            received += chunk
    assert received[: len(reply)] == reply
    client.wait_event("socks_bad_request", mapping="-D 0")
    # The channel is unharmed: a good SOCKS stream still works.
    ex = Exchange(send_len=100_000, reply_len=100_000, seed=4200)
    socks_exchange(socks_port, hash_target.port, ex)
    check_exchange(ex, hash_target)


def test_a_silent_socks_client_is_cut_off_after_the_handshake_timeout(tunnel):
    client, forwards = tunnel.client("-D", "0", extra=("--handshake-timeout", "1"))
    sock = socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=10)
    with sock:
        started = time.monotonic()
        assert sock.recv(10) == b""
        assert time.monotonic() - started < 5
    client.wait_event("socks_timeout", mapping="-D 0")


def test_socks_clients_beyond_the_negotiation_limit_are_reset(tunnel, echo):
    client, forwards = tunnel.client("-D", "0")
    socks_port = forwards[0][1]
    idle = [socket.create_connection(("127.0.0.1", socks_port), timeout=10)
            for _ in range(MAX_SOCKS_NEGOTIATIONS)]  # fmt: skip
    try:
        # The client accepts in the order the connections were made: the extra one
        # comes after every idle one, and finds the negotiations full.  Its reset can
        # beat connect() itself back to user space on a busy machine.
        with (
            pytest.raises(ConnectionResetError),
            socket.create_connection(("127.0.0.1", socks_port), timeout=10) as extra,
        ):
            extra.recv(10)
        client.wait_event("socks_full", mapping="-D 0")
        # Closing one makes room again, once the client has seen it close.
        idle.pop().close()
        assert wait_until(lambda: socks_answers(socks_port, echo.port), timeout=10)
        assert "Traceback" not in client.log
    finally:
        for sock in idle:
            sock.close()


def socks_answers(port: int, echo_port: int) -> bool:
    """A SOCKS request through ``port`` to the echo server is answered, and echoes."""
    try:
        sock, code = socks5_connect(port, "127.0.0.1", echo_port)
    except (ConnectionError, AssertionError):
        return False  # reset: the negotiations are still full
    with sock:
        if code != 0:
            return False
        sock.sendall(b"still works")
        return recv_exactly(sock, 11) == b"still works"


def test_a_socks_request_while_the_channel_is_down_fails_at_once():
    with PortHolder() as ports:
        dead_server = ports.take()
        client = MuxProcess(
            ["client", "--server", f"127.0.0.1:{dead_server}", "-D", "0", "--reconnect-min", "5"]
        )
        try:
            port = client.listening_port(mapping="-D 0")
            sock, code = socks5_connect(port, "localhost", 80)
            sock.close()
            assert code == 1  # general failure
            client.wait_event("stream_refused", mapping="-D 0", peer="localhost:80")
        finally:
            client.stop()
        assert "Traceback" not in client.log


def test_the_data_digest_matches_across_a_socks4a_stream(tunnel, hash_target):
    _client, forwards = tunnel.client("-D", "0")
    sock = socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=20)
    with sock:
        request = b"\x04\x01" + struct.pack(">H", hash_target.port) + b"\0\0\0\1user\0localhost\0"
        sock.sendall(request)
        assert recv_exactly(sock, 8)[:2] == b"\x00\x5a"
        sock.sendall(struct.pack(">QQ", 2_000_000, 4300))
        sender = threading.Thread(target=send_all_then_eof, args=(sock, payload(4301, 1_500_000)))
        sender.start()
        received = drain(sock)
        sender.join()
    assert received == (2_000_000, sha(payload(4300, 2_000_000)))
    wait_until(lambda: 4300 in hash_target.received)
    assert hash_target.received[4300] == (1_500_000, sha(payload(4301, 1_500_000)))


def test_reverse_dynamic_forwarding_serves_socks_from_the_client(tunnel, hash_target):
    """``-R PORT`` with no target (OpenSSH 7.6): the server listens, the client
    answers SOCKS and connects."""
    client, forwards = tunnel.client("-R", "0")
    assert forwards[0][0] == "R" and forwards[0][2] is None  # SOCKS: no target of its own
    port = forwards[0][1]
    exchanges = [Exchange(send_len=300_000 + i, reply_len=900_000 + i, seed=4400 + i)
                 for i in range(6)]  # fmt: skip
    jobs = [functools.partial(socks_exchange, port, hash_target.port, ex) for ex in exchanges]
    run_all(jobs, exchanges, hash_target)
    with PortHolder() as ports:
        closed = ports.take()
        sock, code = socks5_connect(port, "localhost", closed)
        sock.close()
    assert code == 5  # connection refused, seen from the client
    client.wait_event("connect_failed", mapping="-R 0", peer=f"localhost:{closed}")


@needs_curl
def test_curl_through_a_reverse_dynamic_forward(tunnel, web):
    web_port, digest = web
    _client, forwards = tunnel.client("-R", "0")
    done = curl("--socks5-hostname", forwards[0][1], f"http://localhost:{web_port}/blob")
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(done.stdout).hexdigest() == digest


def test_a_bad_name_costs_its_request_and_nothing_else(tunnel, hash_target):
    """A host name the channel cannot carry is refused at the SOCKS port; the
    channel and its other streams never notice."""
    client, forwards = tunnel.client("-D", "0")
    port = forwards[0][1]
    for name in ("a+b.example", "fe80::1%eth0"):
        sock, code = socks5_connect(port, name, 80)
        sock.close()
        assert code == 1
    client.wait_events("socks_bad_request", 2, mapping="-D 0")
    ex = Exchange(send_len=200_000, reply_len=200_000, seed=4500)
    socks_exchange(port, hash_target.port, ex)
    check_exchange(ex, hash_target)
    assert client.events("channel_down") == [] and tunnel.server.events("channel_down") == []


class ResetWatcher(ThreadedTCPServer):
    """A target that reads until EOF or reset and records which it was."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.received = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        try:
            while chunk := conn.recv(65536):
                self.received += len(chunk)
            self.ended.append("eof")
        except ConnectionResetError:
            self.ended.append("reset")


def test_a_reset_crosses_a_reverse_dynamic_forward_as_a_reset(tunnel):
    """An upload cut short by a reset must not look complete to the target."""
    target = ResetWatcher()
    try:
        _client, forwards = tunnel.client("-R", "0")
        sock, code = socks5_connect(forwards[0][1], "127.0.0.1", target.port)
        assert code == 0
        sock.sendall(b"half an upload")
        assert wait_until(lambda: target.received >= 14)  # the stream is open end to end
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST
        assert wait_until(lambda: target.ended, timeout=10)
        assert target.ended == ["reset"]
    finally:
        target.close()
