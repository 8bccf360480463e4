"""Keepalive, handshake timeout, and a stale channel replaced by its client's reconnect."""

from __future__ import annotations

import re
import signal
import socket
import time

from support import ChaosRelay, MuxProcess, Tunnel, echo_once, wait_until

FAST = ("--keepalive-interval", "0.5", "--keepalive-timeout", "1.5", "--handshake-timeout", "1",
        "--resume-timeout", "0")  # fmt: skip
"""Resets on channel loss, as before resume: tests/test_e2e_resume.py covers resume."""


def test_frozen_server_is_noticed_within_the_timeout_and_recovered(echo):
    """SIGSTOP freezes the server: TCP stays up (the kernel still ACKs) but nothing
    answers.  The client declares it dead within the keepalive timeout and starts
    reconnecting; after SIGCONT it is back and both mappings work again."""
    tunnel = Tunnel(server_args=FAST)
    try:
        client, _ = tunnel.client(
            "-L",
            f"0:127.0.0.1:{echo.port}",
            "-R",
            f"0:127.0.0.1:{echo.port}",
            extra=(*FAST, "--reconnect-min", "0.2", "--reconnect-max", "0.5"),
        )
        mark = client.mark
        tunnel.server.signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        client.wait_event("channel_down", reason=re.compile("keepalive timeout"), timeout=5,
                          start=mark)  # fmt: skip
        noticed = time.monotonic() - frozen_at
        # The timeout, plus up to one keepalive tick, plus slack for a loaded machine
        # (without keepalive only TCP would notice, after minutes).
        assert noticed < 1.5 + 0.5 + 2.5, f"noticed after {noticed:.2f}s"
        # A reconnect attempt reaches the frozen server's backlog and times out.
        client.wait_event("channel_down", reason=re.compile("handshake timed out"), start=mark,
                          timeout=10)  # fmt: skip
        mark = client.mark
        tunnel.server.signal(signal.SIGCONT)
        forwards = client.forwards(2, timeout=10, start=mark)
        for _kind, port, _target in forwards:
            assert echo_once(port) == b"ping"
    finally:
        tunnel.server.signal(signal.SIGCONT)
        tunnel.close()


def test_frozen_client_is_dropped_and_its_remote_ports_freed(echo, ports):
    tunnel = Tunnel(server_args=FAST)
    try:
        fixed = ports.take()
        first, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        first.signal(signal.SIGSTOP)
        tunnel.server.wait_event("channel_down", reason=re.compile("keepalive timeout"),
                                 timeout=5)  # fmt: skip
        _second, forwards = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        assert forwards[0][1] == fixed
        assert echo_once(fixed) == b"ping"
        first.signal(signal.SIGCONT)
    finally:
        for proc in tunnel.clients:
            proc.signal(signal.SIGCONT)
        tunnel.close()


def test_silent_connection_fails_the_handshake(tunnel):
    """A TCP connection that never sends HELLO is closed after --handshake-timeout."""
    quick = Tunnel(server_args=("--handshake-timeout", "0.5"))
    try:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", quick.server_port), timeout=5) as idle:
            data = b""
            while chunk := idle.recv(4096):
                data += chunk
        # Not before the timeout; a connection never closed would hit the 5 s
        # socket timeout instead, so no upper bound is needed here.
        assert time.monotonic() - started > 0.4
        assert data.startswith(b"\x00\x00\x00")  # our HELLO, then ERROR, then EOF
        assert b"ERROR timeout: handshake timed out after 0.5s" in data
        quick.server.wait_event("channel_down", reason=re.compile("handshake timed out"))
    finally:
        quick.close()


def test_stale_channel_is_replaced_by_the_same_clients_reconnect(echo, ports):
    """The path freezes silently.  The client gives up on its channel and reconnects;
    the server has not noticed (its keepalive is slow) and still holds the -R port.
    The new channel carries the same client id, so the server retires the stale one
    at once and the -R port is bound again without waiting for any timeout."""
    tunnel = Tunnel(server_args=("--keepalive-interval", "30"))
    relay = ChaosRelay(tunnel.server_port)
    try:
        fixed = ports.take()
        client = MuxProcess([
            "client", "--server", f"127.0.0.1:{relay.port}", "-R", f"{fixed}:127.0.0.1:{echo.port}",
            *FAST, "--reconnect-min", "0.2", "--reconnect-max", "0.5",
        ])  # fmt: skip
        tunnel.clients.append(client)
        assert client.forwards(1)[0][1] == fixed
        mark = client.mark
        relay.freeze()
        client.wait_event("channel_down", reason=re.compile("keepalive timeout"), start=mark,
                          timeout=5)  # fmt: skip
        assert client.forwards(1, timeout=10, start=mark)[0][1] == fixed
        [first] = tunnel.server.events("channel_up")[:1]
        tunnel.server.wait_event("channel_replaced", reason=first["channel"])
        assert tunnel.server.events("mapping_refused") == []
        assert wait_until(lambda: echo_once(fixed) == b"ping", timeout=5)
    finally:
        relay.close()
        tunnel.close()


def test_channel_sockets_have_tcp_keepalive(echo):
    """TCP keepalive as well, so the kernel also probes a silent peer."""
    import shutil
    import subprocess

    from reactor_mux.io.netutil import tune_channel_socket

    with socket.socket() as sock:  # the option values, as the channel sets them
        tune_channel_socket(sock, 7.0)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
    if shutil.which("ss") is None:
        return
    tunnel = Tunnel()
    try:  # and a running client's channel socket carries a keepalive timer
        tunnel.client("-L", f"0:127.0.0.1:{echo.port}", extra=("--keepalive-interval", "7"))
        shown = subprocess.run(
            ["ss", "-tno", "state", "established", f"( dport = :{tunnel.server_port} )"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "timer:(keepalive" in shown, shown
    finally:
        tunnel.close()
