"""Unix-domain socket forwards on the client's side (issue 23): ``-L /PATH:HOST:PORT``
listens on a socket file, ``-R PORT:/PATH`` connects to one.  Checked with
checksummed transfers both ways, with curl --unix-socket and with redis on a Unix
socket where they are installed, and for the socket file's life: mode 0600,
removed at exit, a dead process's file replaced, a live one or another file left
alone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
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
    MuxProcess,
    PortHolder,
    Tunnel,
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


class WebServer(HashReplyServer):
    """An HTTP server on a TCP port answering every request with ``body``, for curl."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(self.body) + self.body)  # fmt: skip


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


# --------------------------------------------------- sockets on the server's side


def unix_server_tunnel(short_dir: Path, *patterns: str) -> Tunnel:
    """A server that allows Unix sockets under ``short_dir`` (``--allow-connect`` and
    ``--allow-bind`` path patterns; without one a server refuses every path)."""
    rules = patterns or (f"{short_dir}/*.sock",)
    args = [word for rule in rules for word in ("--allow-connect", rule, "--allow-bind", rule)]
    return Tunnel(tuple(args))


def test_l_reaches_a_unix_socket_on_the_server(short_dir):
    path = short_dir / "target.sock"
    target = UnixHashServer(path)
    tunnel = unix_server_tunnel(short_dir)
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"0:{path}")
        exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed) for seed in (8200, 8202)]
        run_exchanges(exchanges, target, [port, port])
        assert tunnel.server.wait_event("mapping_up")["mapping"] == f"-L {path}"
    finally:
        tunnel.close()
        target.close()


def test_r_listens_on_a_unix_socket_on_the_server(hash_target, short_dir):
    path = short_dir / "remote.sock"
    tunnel = unix_server_tunnel(short_dir)
    try:
        control = short_dir / "control.sock"
        client, _ = tunnel.client("-R", f"{path}:127.0.0.1:{hash_target.port}",
                                  extra=("--control", str(control)))  # fmt: skip
        up = client.wait_event("forward_up")
        assert up["address"] == str(path), up
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed) for seed in (8210, 8212)]
        run_exchanges(exchanges, hash_target, connect=lambda: unix_connect(path))
        status = json.loads(subprocess.run(
            [sys.executable, "-m", "reactor_mux", "status", "--json", "--control", str(control)],
            capture_output=True, text=True, timeout=30, check=True).stdout)  # fmt: skip
        [forward] = status["forwards"]
        assert forward["bound"] == {"path": str(path)}, forward
        assert client.stop() == 0
        assert wait_until(lambda: not path.exists())  # the server removed its socket
    finally:
        tunnel.close()


def test_socket_to_socket_both_ways(short_dir):
    """``-L /PATH:/PATH`` and ``-R /PATH:/PATH``: no port anywhere."""
    server_side = UnixHashServer(short_dir / "server-side.sock")
    client_side = UnixHashServer(short_dir / "client-side.sock")
    tunnel = unix_server_tunnel(short_dir)
    local, remote = short_dir / "local.sock", short_dir / "remote.sock"
    try:
        tunnel.client("-L", f"{local}:{short_dir}/server-side.sock",
                      "-R", f"{remote}:{short_dir}/client-side.sock")  # fmt: skip
        run_exchanges([Exchange(send_len=SIZE, reply_len=SIZE, seed=8220)], server_side,
                      connect=lambda: unix_connect(local))  # fmt: skip
        run_exchanges([Exchange(send_len=SIZE, reply_len=SIZE, seed=8222)], client_side,
                      connect=lambda: unix_connect(remote))  # fmt: skip
    finally:
        tunnel.close()
        server_side.close()
        client_side.close()


def test_a_server_refuses_unix_sockets_unless_a_path_pattern_allows_them(hash_target,
                                                                         short_dir):  # fmt: skip
    """Safe by default: with no list, or a list of host patterns only, every socket
    path is refused (and the client is told which flag allows it); a path pattern
    allows only what it matches, and never lets ``..`` walk out of it."""
    allowed = short_dir / "ok.sock"
    UnixHashServer(allowed).close()  # a path that exists: refusals are not "no such file"
    for server_args, spec, says in [
        ((), f"0:{allowed}", "only where --allow-connect names them"),
        (("--allow-connect", "*:*"), f"0:{allowed}", "only where --allow-connect names them"),
        (("--allow-connect", f"{short_dir}/ok-*.sock"), f"0:{allowed}",
         "not allowed by the server's --allow-connect"),
        (("--allow-connect", f"{short_dir}/*"), f"0:{short_dir}/x/../ok.sock", "plain form"),
    ]:  # fmt: skip
        tunnel = Tunnel(server_args)
        try:
            client, _ = tunnel.client("-L", spec, expect=0)
            refused = client.wait_event("forward_refused")
            assert says in refused["reason"], refused
        finally:
            tunnel.close()
    tunnel = Tunnel(("--allow-bind", "127.0.0.1:*"))
    try:
        client, _ = tunnel.client("-R", f"{short_dir}/r.sock:127.0.0.1:{hash_target.port}",
                                  expect=0)  # fmt: skip
        refused = client.wait_event("forward_refused")
        assert "only where --allow-bind names them" in refused["reason"], refused
        assert not (short_dir / "r.sock").exists()
    finally:
        tunnel.close()


def test_path_patterns_leave_host_targets_as_they_were(hash_target, short_dir):
    """A path pattern alone does not restrict TCP targets: ``-L`` to a port works."""
    tunnel = unix_server_tunnel(short_dir)
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        run_exchanges([Exchange(send_len=100_000, reply_len=100_000, seed=8230)], hash_target,
                      [port])  # fmt: skip
    finally:
        tunnel.close()


def test_an_r_socket_in_use_is_refused_and_another_file_left_alone(hash_target, short_dir):
    tunnel = unix_server_tunnel(short_dir)
    taken = short_dir / "taken.sock"
    holder = UnixHashServer(taken)  # another process's live socket
    plain = short_dir / "plain.sock"
    plain.write_text("not a socket")
    try:
        for path, says in [(taken, "in use by another process"), (plain, "is not a socket")]:
            client, _ = tunnel.client("-R", f"{path}:127.0.0.1:{hash_target.port}", expect=0)
            refused = client.wait_event("forward_refused")
            assert says in refused["reason"], refused
        assert plain.read_text() == "not a socket"
        with unix_connect(taken) as conn:  # still the holder's
            conn.sendall(b"x")
    finally:
        tunnel.close()
        holder.close()


def test_an_older_client_syntax_error_names_the_socket_forms():
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "client", "127.0.0.1",
                           "-L", "8080:h:/x.sock"], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert "either end may be a Unix socket /PATH" in done.stderr, done.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_through_a_unix_socket(tunnel, short_dir):
    body = os.urandom(200_000)

    web = WebServer(body)
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


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_on_the_servers_unix_socket_through_l(short_dir):
    """The common case: a database that listens only on a Unix socket on the server's
    host, reached from here through ``-L PORT:/PATH``."""
    import redis_protocol as resp

    path = short_dir / "redis.sock"
    redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(path),
                              "--unixsocketperm", "700", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    tunnel = unix_server_tunnel(short_dir)
    try:
        assert wait_until(path.exists, timeout=10)
        _client, [(_, port, _)] = tunnel.client("-L", f"0:{path}")
        value = os.urandom(1_000_000)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
            assert resp.command(conn, b"SET", b"blob", value) == b"OK"
            assert resp.command(conn, b"GET", b"blob") == value
        with unix_connect(path) as direct:
            assert resp.command(direct, b"STRLEN", b"blob") == len(value)
    finally:
        tunnel.close()
        redis.terminate()
        redis.wait(10)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_on_the_servers_unix_socket_through_r(short_dir):
    """``-R /PATH:HOST:PORT``: a program on the server's host speaks HTTP to a socket
    file, and the web server it reaches runs here."""
    body = os.urandom(300_000)

    web = WebServer(body)
    path = short_dir / "web.sock"
    tunnel = unix_server_tunnel(short_dir)
    try:
        tunnel.client("-R", f"{path}:127.0.0.1:{web.port}")
        done = subprocess.run(["curl", "-sS", "--unix-socket", str(path), "http://localhost/"],
                              capture_output=True, timeout=30)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(body).digest()
    finally:
        tunnel.close()
        web.close()


# ------------------------------------------- found in review: sockets not ours


def test_a_live_socket_the_probe_cannot_connect_to_is_never_replaced(hash_target, short_dir):
    """Found in review: only a refused connect proves a socket dead.  A datagram
    socket (as /dev/log) refuses a stream connect with EPROTOTYPE, and another
    user's socket may refuse it with EACCES: both have an owner and stay."""
    tunnel = unix_server_tunnel(short_dir)
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(short_dir / "log.sock"))
    others = short_dir / "others.sock"
    holder = UnixHashServer(others)
    if os.geteuid() == 0:
        os.chown(others, 65534, 65534)
    try:
        cases = [(short_dir / "log.sock", "in use by another process")]
        if os.geteuid() == 0:
            cases.append((others, "is another user's socket"))
        for path, says in cases:
            before = os.lstat(path).st_ino
            client, _ = tunnel.client("-R", f"{path}:127.0.0.1:{hash_target.port}", expect=0)
            refused = client.wait_event("forward_refused")
            assert says in refused["reason"], refused
            assert os.lstat(path).st_ino == before  # the same socket, not replaced
        datagram.sendto(b"still mine", str(short_dir / "log.sock"))
        assert datagram.recv(64) == b"still mine"
    finally:
        tunnel.close()
        datagram.close()
        holder.close()


def test_a_socket_another_client_listens_on_is_refused_without_a_connection(hash_target, short_dir):
    """Found in review: asking for another client's -R path used to probe it, and
    the probe was a connection carried to that client's target."""
    tunnel = unix_server_tunnel(short_dir)
    path = short_dir / "shared.sock"
    try:
        tunnel.client("-R", f"{path}:127.0.0.1:{hash_target.port}")
        before = hash_target.connections
        second, _ = tunnel.client("-R", f"{path}:127.0.0.1:{hash_target.port}", expect=0)
        refused = second.wait_event("forward_refused")
        assert "another client's -R listens there" in refused["reason"], refused
        assert hash_target.connections == before  # nothing reached the first one's target
    finally:
        tunnel.close()


def test_a_reload_that_takes_a_path_away_refuses_the_next_stream(short_dir):
    """-L to a path is checked again for every stream: a reload that removes the
    pattern refuses the next one (the mapping itself stays, as for ports)."""
    target = UnixHashServer(short_dir / "db.sock")
    config = short_dir / "server.toml"
    with PortHolder() as ports:
        port = ports.take()
        config.write_text(f'listen = ["127.0.0.1:{port}"]\n'
                          f'allow-connect = ["{short_dir}/*.sock"]\n')  # fmt: skip
        server = MuxProcess(["server", "--config", str(config)])
        client = None
        try:
            server.listening_port()
            client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                 "-L", f"0:{short_dir}/db.sock"])  # fmt: skip
            [(_, local, _)] = client.forwards(1, timeout=15)
            run_exchanges([Exchange(send_len=50_000, reply_len=50_000, seed=8240)], target,
                          [local])  # fmt: skip
            config.write_text(f'listen = ["127.0.0.1:{port}"]\n')
            start = server.mark
            server.signal(signal.SIGHUP)
            server.wait_event("reloaded", timeout=10, start=start)
            with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                conn.settimeout(10)
                try:
                    assert conn.recv(1) == b""
                except ConnectionResetError:
                    pass
            refused = client.wait_event("stream_refused")
            assert "only where --allow-connect names them" in refused["reason"], refused
        finally:
            for proc in (client, server):
                if proc is not None:
                    assert proc.stop() == 0
            target.close()
