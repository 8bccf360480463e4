"""Reaching the server through a proxy (issue 24): HTTP CONNECT through a real
tinyproxy (with and without credentials, one that refuses, a resume through it
across its restart), SOCKS5 through our own -D and through a SOCKS5 server that
wants a password, and ``--proxy env``.  Credentials never reach a log or status."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from security_support import FAST
from support import (
    Exchange,
    MuxProcess,
    PortHolder,
    ThreadedTCPServer,
    Tunnel,
    check_exchange,
    gave_up,
    recv_exactly,
    run_exchange,
    run_exchanges,
    wait_until,
)

TINYPROXY = shutil.which("tinyproxy")
needs_tinyproxy = pytest.mark.skipif(TINYPROXY is None, reason="needs tinyproxy (Debian's)")
PASSWORD = "pr0xy-s3cret-word"
SIZE = 2_000_000


class Tinyproxy:
    """tinyproxy in the foreground on 127.0.0.1, optionally with BasicAuth and a
    CONNECT port list."""

    def __init__(self, auth: bool = False, connect_ports: tuple[int, ...] = ()) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="rmux-tinyproxy-"))
        with PortHolder() as ports:
            self.port = ports.take()
        lines = [f"Port {self.port}", "Listen 127.0.0.1", "Allow 127.0.0.1", "Timeout 60",
                 "LogLevel Warning", f"LogFile \"{self.directory}/log\"",
                 f"PidFile \"{self.directory}/pid\"", "MaxClients 50"]  # fmt: skip
        if auth:
            lines.append(f"BasicAuth alice {PASSWORD}")
        lines += [f"ConnectPort {port}" for port in connect_ports]
        (self.directory / "conf").write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [str(TINYPROXY), "-d", "-c", str(self.directory / "conf")]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        assert wait_until(self._listening, timeout=10), (self.directory / "log").read_text()

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


def both_ways(tunnel: Tunnel, target, seed: int, *extra: str) -> MuxProcess:  # type: ignore[no-untyped-def]
    client, forwards = tunnel.client("-L", f"0:127.0.0.1:{target.port}",
                                     "-R", f"0:127.0.0.1:{target.port}", extra=extra)  # fmt: skip
    ports = [port for _, port, _ in forwards]
    exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed + i) for i in range(2)]
    run_exchanges(exchanges, target, ports)
    return client


def no_password_anywhere(client: MuxProcess, control: Path | None = None) -> None:
    assert PASSWORD not in client.log
    if control is not None:
        status = subprocess.run([sys.executable, "-m", "reactor_mux", "status", "--json",
                                 "--control", str(control)], capture_output=True, text=True,
                                timeout=20, check=True)  # fmt: skip
        assert PASSWORD not in status.stdout and json.loads(status.stdout)


@needs_tinyproxy
def test_http_connect_through_tinyproxy_with_and_without_credentials(hash_target, tmp_path):
    tunnel = Tunnel()
    open_proxy, guarded = Tinyproxy(), Tinyproxy(auth=True)
    try:
        client = both_ways(tunnel, hash_target, 9700, "--proxy",
                           f"http://127.0.0.1:{open_proxy.port}")  # fmt: skip
        connecting = client.wait_event("connecting")
        assert f"through proxy http://127.0.0.1:{open_proxy.port}" in connecting["message"]
        control = tmp_path / "c.sock"
        client = both_ways(tunnel, hash_target, 9710, "--control", str(control), "--proxy",
                           f"http://alice:{PASSWORD}@127.0.0.1:{guarded.port}")  # fmt: skip
        no_password_anywhere(client, control)
        at = f"127.0.0.1:{guarded.port}"
        for proxy, says in [(f"http://alice:wrong@{at}", "wrong credentials"),
                            (f"http://{at}", "it needs credentials")]:  # fmt: skip
            refused, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0,
                                       extra=("--proxy", proxy))  # fmt: skip
            line = gave_up(refused, "proxy_refused")
            assert says in line["message"], line  # tinyproxy: 407 without, 401 wrong ones
            assert refused.proc.wait(10) == 255
            assert "alice" not in line["message"] and "@" not in line["message"], line
    finally:
        tunnel.close()
        open_proxy.close()
        guarded.close()


@needs_tinyproxy
def test_a_proxy_that_refuses_the_server_port_is_one_line(echo):
    tunnel = Tunnel()
    proxy = Tinyproxy(connect_ports=(443,))
    try:
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                  extra=("--proxy", f"http://127.0.0.1:{proxy.port}"))  # fmt: skip
        line = gave_up(client, "proxy_refused")
        assert f"refused CONNECT 127.0.0.1:{tunnel.server_port}" in line["message"], line
        assert client.proc.wait(10) == 255
    finally:
        tunnel.close()
        proxy.close()


@needs_tinyproxy
def test_streams_resume_through_the_proxy_across_its_restart(hash_target):
    tunnel = Tunnel()
    proxy = Tinyproxy()
    try:
        client, forwards = tunnel.client(
            "-L", f"0:127.0.0.1:{hash_target.port}",
            extra=("--proxy", f"http://127.0.0.1:{proxy.port}", *FAST),
        )  # fmt: skip
        [(_, port, _)] = forwards
        exchange = Exchange(send_len=40_000_000, reply_len=40_000_000, seed=9720)
        mover = threading.Thread(target=run_exchange, args=(port, exchange))
        mover.start()
        assert wait_until(lambda: hash_target.connections >= 1, timeout=15)
        time.sleep(0.2)
        proxy.kill()
        tunnel.server.wait_event("channel_suspended", timeout=15)
        proxy.start()
        client.wait_event("channel_resumed", timeout=30)
        mover.join(180)
        check_exchange(exchange, hash_target)
        assert tunnel.server.count_event("channel_up") == 1
    finally:
        tunnel.close()
        proxy.close()


def test_socks5_through_our_own_dynamic_forward(hash_target):
    """A -D of another reactor-mux pair is a SOCKS5 proxy: the server's name is
    resolved at its far end."""
    hop = Tunnel()
    tunnel = Tunnel()
    try:
        _hop_client, [(_, socks_port, _)] = hop.client("-D", "0")
        both_ways(tunnel, hash_target, 9730, "--server", f"localhost:{tunnel.server_port}",
                  "--proxy", f"socks5://127.0.0.1:{socks_port}")  # fmt: skip
        assert hop.server.count_event("channel_up") == 1
    finally:
        tunnel.close()
        hop.close()


class PasswordSocks(ThreadedTCPServer):
    """A SOCKS5 server that wants user alice and PASSWORD (RFC 1929), and connects by
    name or address: the smallest real one, for the credentials path."""

    def handle(self, conn: socket.socket) -> None:
        with conn:
            _version, count = recv_exactly(conn, 2)
            methods = recv_exactly(conn, count)
            if 2 not in methods:
                conn.sendall(b"\x05\xff")
                return
            conn.sendall(b"\x05\x02")
            _v, size = recv_exactly(conn, 2)
            user = recv_exactly(conn, size)
            password = recv_exactly(conn, recv_exactly(conn, 1)[0])
            if (user, password) != (b"alice", PASSWORD.encode()):
                conn.sendall(b"\x01\x01")
                return
            conn.sendall(b"\x01\x00")
            _v, _cmd, _rsv, kind = recv_exactly(conn, 4)
            if kind == 3:
                host = recv_exactly(conn, recv_exactly(conn, 1)[0]).decode()
            else:
                host = socket.inet_ntoa(recv_exactly(conn, 4))
            (port,) = struct.unpack(">H", recv_exactly(conn, 2))
            upstream = socket.create_connection((host, port), timeout=10)
            conn.sendall(b"\x05\x00\x00\x01" + bytes(4) + bytes(2))
            relay(conn, upstream)


def relay(one: socket.socket, other: socket.socket) -> None:
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    mover = threading.Thread(target=pipe, args=(other, one), daemon=True)
    mover.start()
    pipe(one, other)
    mover.join(60)
    other.close()


def test_socks5_with_a_password(hash_target):
    tunnel = Tunnel()
    socks = PasswordSocks()
    try:
        client = both_ways(tunnel, hash_target, 9740, "--proxy",
                           f"socks5://alice:{PASSWORD}@127.0.0.1:{socks.port}")  # fmt: skip
        no_password_anywhere(client)
        wrong = f"socks5://alice:nope@127.0.0.1:{socks.port}"
        refused, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0,
                                   extra=("--proxy", wrong))  # fmt: skip
        assert "wrong credentials" in gave_up(refused, "proxy_refused")["message"]
    finally:
        tunnel.close()
        socks.close()


@needs_tinyproxy
def test_proxy_env_reads_https_proxy_and_no_proxy(hash_target, monkeypatch):
    tunnel = Tunnel()
    proxy = Tinyproxy()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("https_proxy", raising=False)
        proxied = both_ways(tunnel, hash_target, 9750, "--proxy", "env")
        assert "through proxy" in proxied.wait_event("connecting")["message"]
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.0/8")
        direct = both_ways(tunnel, hash_target, 9760, "--proxy", "env")
        assert "through proxy" not in direct.wait_event("connecting")["message"]
    finally:
        tunnel.close()
        proxy.close()


def test_a_bad_proxy_url_is_a_usage_error_without_its_password():
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "client", "127.0.0.1", "-L",
                           "1:h:2", "--proxy", f"ftp://bob:{PASSWORD}@proxy"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert "write http://HOST:PORT or socks5://" in done.stderr and PASSWORD not in done.stderr
