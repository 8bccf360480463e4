"""When the client gives up on its server, and when it keeps trying (issue 23).

A server that refuses the client as configured makes it exit at once with
status 255 and one line (tests/test_e2e_auth.py, test_e2e_tls.py and
test_e2e_messages.py cover each refusal); network failures are retried, and
``--connect-attempts`` bounds them, counted from the last channel that came up.
What these tests decide happens before any data moves, so they run once.
"""

from __future__ import annotations

import re

import pytest
from certs import secret_file
from security_support import FAST, SECRET
from support import ChaosRelay, MuxProcess, PortHolder, Tunnel, echo_once, gave_up

pytestmark = pytest.mark.codec_independent


def client_to(port: int, *extra: str) -> MuxProcess:
    return MuxProcess(
        ["client", "--server", f"127.0.0.1:{port}", "-L", "0:127.0.0.1:9", *FAST, *extra]
    )


def test_a_refused_connection_is_retried_without_persist():
    """Refused, unreachable, timed out: the network may come back (autossh's habit)."""
    with PortHolder() as ports:
        client = client_to(ports.take())  # held, never listening: every connect is refused
        try:
            for _ in range(3):
                client.wait_event("channel_down", reason=re.compile("connection refused"),
                                  start=client.mark)  # fmt: skip
            assert client.proc.poll() is None, client.log
        finally:
            assert client.stop() == 0


def test_connect_attempts_bound_the_retries():
    with PortHolder() as ports:
        client = client_to(ports.take(), "--connect-attempts", "3")
        try:
            line = gave_up(client, "attempts_exhausted", alone=False,
                           reason=re.compile("connection refused"))  # fmt: skip
            assert "--connect-attempts 3" in line["message"], line
            assert client.count_event("connecting") == 3
        finally:
            client.stop()


def test_connect_attempts_count_from_the_last_channel_up(echo):
    """With one attempt allowed, a client whose channel is cut twice still comes
    back each time: a channel that came up starts the count afresh.  Without
    resume, so that each cut is a lost channel and a new connection."""
    tunnel = Tunnel()
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}",
                             "--connect-attempts", "1", "--resume-timeout", "0",
                             "-L", f"0:127.0.0.1:{echo.port}", *FAST])  # fmt: skip
        tunnel.clients.append(client)
        [(_, port, _)] = client.forwards(1, timeout=15)
        assert echo_once(port, b"before") == b"before"
        for cut in range(2):
            mark = client.mark
            relay.cut()
            client.wait_event("channel_up", start=mark, timeout=20)
            assert echo_once(port, b"cut %d" % cut) == b"cut %d" % cut
        assert client.proc.poll() is None, client.log
        assert client.count_event("attempts_exhausted") == 0
    finally:
        relay.close()
        tunnel.close()


def test_a_client_without_a_name_at_a_clients_file_server_exits(tmp_path, echo):
    clients = secret_file(tmp_path, "clients.toml", f'[clients.alice]\nsecret = "{SECRET}"\n')
    alice = secret_file(tmp_path, "alice", SECRET)
    tunnel = Tunnel(server_args=("--clients-file", str(clients)))
    try:
        nameless, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                    extra=("--secret-file", str(alice), *FAST))  # fmt: skip
        line = gave_up(nameless, "auth_failed")
        assert "this server knows its clients by name: give --name" in line["message"], line
        tunnel.server.wait_event("channel_down", reason=re.compile("no client name"))
    finally:
        tunnel.close()
