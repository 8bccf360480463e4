"""Both address families, as ssh does: ``localhost`` is 127.0.0.1 and ::1, ``*`` is
every interface of both families, and ::1 works for channels and targets."""

from __future__ import annotations

import re
import socket

import pytest
from support import MuxProcess, Tunnel, echo_once

from reactor_mux.tools.targets import EchoServer

pytestmark = pytest.mark.codec_independent


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason="this machine has no IPv6 loopback")


def echo_via(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10) as conn:
        conn.sendall(b"ping")
        return conn.recv(4)


@needs_ipv6
@pytest.mark.parametrize("bind", ["localhost", "*", ""])
def test_l_on_localhost_or_every_interface_answers_on_both_families(tunnel, echo, bind):
    client, forwards = tunnel.client("-L", f"{bind}:0:127.0.0.1:{echo.port}")
    port = forwards[0][1]
    assert echo_via("127.0.0.1", port) == b"ping"
    assert echo_via("::1", port) == b"ping"
    assert "Traceback" not in client.log


@needs_ipv6
def test_the_default_bind_is_localhost_on_both_families(tunnel, echo):
    client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", "-D", "0")
    for _kind, port, _target in forwards:
        for host in ("127.0.0.1", "::1"):
            socket.create_connection((host, port), timeout=10).close()
    listening = client.wait_event("listening", mapping=f"-L 0:127.0.0.1:{echo.port}")
    assert re.fullmatch(r"127\.0\.0\.1:\d+ and \[::1\]:\d+", listening["address"])


@needs_ipv6
def test_r_on_localhost_listens_on_both_families_of_the_server(tunnel, echo):
    _client, forwards = tunnel.client("-R", f"localhost:0:127.0.0.1:{echo.port}")
    port = forwards[0][1]
    assert echo_via("127.0.0.1", port) == b"ping"
    assert echo_via("::1", port) == b"ping"


@needs_ipv6
def test_an_ipv6_channel_and_an_ipv6_target():
    echo6 = EchoServer("::1")
    server = MuxProcess(["server", "--listen", "[::1]:0"])
    try:
        server_port = server.listening_port()
        client = MuxProcess(["client", "--server", f"[::1]:{server_port}",
                                    "-L", f"0:[::1]:{echo6.port}"])  # fmt: skip
        try:
            port = client.forwards(1, timeout=15)[0][1]
            assert echo_once(port) == b"ping"
            assert echo_via("::1", port) == b"ping"
        finally:
            client.stop()
        assert "Traceback" not in client.log
    finally:
        server.stop()
        echo6.close()


@needs_ipv6
def test_r_on_every_interface_needs_gateway_ports_and_then_takes_both_families(echo):
    tunnel = Tunnel(server_args=("--gateway-ports", "--insecure"))
    try:
        _client, forwards = tunnel.client("-R", f"*:0:127.0.0.1:{echo.port}")
        port = forwards[0][1]
        assert echo_via("127.0.0.1", port) == b"ping"
        assert echo_via("::1", port) == b"ping"
    finally:
        tunnel.close()
