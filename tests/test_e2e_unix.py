"""Unix-domain socket forwards on the client's side (issue 23): ``-L /PATH:HOST:PORT``
listens on a socket file, ``-R PORT:/PATH`` connects to one.  Checked with
checksummed transfers both ways, with curl --unix-socket and with redis on a Unix
socket where they are installed, and for the socket file's life: mode 0600,
removed at exit, a dead process's file replaced, a live one or another file left
alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from support import (
    Exchange,
    HashReplyServer,
    check_exchange,
    run_exchange,
    run_exchanges,
    wait_until,
)

SIZE = 3_000_000


class UnixHashServer(HashReplyServer):
    """HashReplyServer on a Unix socket path instead of a TCP port."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.port = 0
        self.connections = 0
        self.errors: list[OSError] = []
        self.received: dict[int, tuple[int, str]] = {}
        threading.Thread(target=self._accept, daemon=True).start()


def unix_connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


@pytest.fixture
def short_dir():  # type: ignore[no-untyped-def]
    """A directory with a short path: a Unix socket path has at most 107 bytes."""
    directory = Path(tempfile.mkdtemp(prefix="rmux-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_l_listens_on_a_unix_socket(tunnel, hash_target, short_dir):
    path = short_dir / "local.sock"
    client, _ = tunnel.client("-L", f"{path}:127.0.0.1:{hash_target.port}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # OpenSSH's StreamLocalBindMask
    exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed) for seed in (8100, 8102)]
    run_exchanges(exchanges, hash_target, connect=lambda: unix_connect(path))
    assert client.stop() == 0
    assert not path.exists()  # removed on the way out


def test_r_connects_to_a_unix_socket(tunnel, short_dir):
    path = short_dir / "target.sock"
    target = UnixHashServer(path)
    try:
        _client, forwards = tunnel.client("-R", f"0:{path}")
        [(_, port, _)] = forwards
        ex = Exchange(send_len=SIZE, reply_len=SIZE, seed=8110)
        run_exchange(port, ex)
        check_exchange(ex, target)
    finally:
        target.close()


def test_a_unix_target_that_is_not_there_refuses_the_stream(tunnel, short_dir):
    path = short_dir / "nobody.sock"
    client, forwards = tunnel.client("-R", f"0:{path}")
    [(_, port, _)] = forwards
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.settimeout(10)
        try:
            assert conn.recv(1) == b""  # closed, not hung
        except ConnectionResetError:
            pass  # or reset: either way the application hears at once
    failed = tunnel.server.wait_event("stream_refused", timeout=10)
    assert str(path) in failed["reason"] and "no such file" in failed["reason"], failed
    client.wait_event("connect_failed", peer=str(path))


def test_the_socket_file_of_a_dead_process_is_replaced_and_a_live_one_kept(tunnel, echo,
                                                                            short_dir):  # fmt: skip
    path = short_dir / "local.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # bound, never listening: what a killed process leaves behind
    stale.close()
    first, _ = tunnel.client("-L", f"{path}:127.0.0.1:{echo.port}")
    with unix_connect(path) as conn:
        conn.sendall(b"replaced")
        assert conn.recv(8) == b"replaced"
    second, _ = tunnel.client("-L", f"{path}:127.0.0.1:{echo.port}", expect=0)
    failed = second.wait_event("listen_failed")
    assert "in use by another process" in failed["reason"], failed
    other = short_dir / "plain-file"
    other.write_text("not a socket")
    third, _ = tunnel.client("-L", f"{other}:127.0.0.1:{echo.port}", expect=0)
    assert "exists and is not a socket" in third.wait_event("listen_failed")["reason"]
    assert other.read_text() == "not a socket"
    assert first.stop() == 0


@pytest.mark.parametrize(
    ("flag", "spec"),
    [("-L", "8080:/remote.sock"), ("-R", "/remote.sock:127.0.0.1:22"), ("-L", "/a.sock:/b.sock")],
)
def test_unix_sockets_on_the_servers_side_are_a_clear_usage_error(flag, spec):
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "client", "127.0.0.1", flag, spec],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert "a Unix socket on the server's side is not supported yet" in done.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_through_a_unix_socket(tunnel, short_dir):
    body = os.urandom(200_000)

    class Web(HashReplyServer):
        def handle(self, conn: socket.socket) -> None:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(body) + body)  # fmt: skip

    web = Web()
    path = short_dir / "web.sock"
    try:
        tunnel.client("-L", f"{path}:127.0.0.1:{web.port}")
        done = subprocess.run(["curl", "-sS", "--unix-socket", str(path), "http://localhost/"],
                              capture_output=True, timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(body).digest()
    finally:
        web.close()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_on_a_unix_socket_through_r(tunnel, short_dir):
    import redis_protocol as resp  # tests/redis_protocol.py: a few commands over a socket

    path = short_dir / "redis.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(path),
                              "--unixsocketperm", "700", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        assert wait_until(path.exists, timeout=10)
        _client, forwards = tunnel.client("-R", f"0:{path}")
        [(_, port, _)] = forwards
        value = os.urandom(1_000_000)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            assert resp.command(conn, b"SET", b"blob", value) == b"OK"
            assert resp.command(conn, b"GET", b"blob") == value
        with unix_connect(path) as direct:  # the same store, seen without the tunnel
            assert resp.command(direct, b"STRLEN", b"blob") == len(value)
    finally:
        redis.terminate()
        redis.wait(10)
