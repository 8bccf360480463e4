"""Forwards that cannot be set up: exit on them (ssh's ExitOnForwardFailure), or
retry a refused -R until it works, and give an ``-R 0`` its port back after a
reconnect."""

from __future__ import annotations

import socket
import time

import pytest
from support import PortHolder, Tunnel, echo_once

from reactor_mux.tools.procs import ReactorMuxProcess

pytestmark = pytest.mark.codec_independent

FAST = ("--reconnect-min", "0.2", "--reconnect-max", "1")


def occupy(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port, as another program would hold it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("flag", ["-L", "-D"])
def test_exit_on_forward_failure_when_a_local_port_is_taken(tunnel, echo, flag):
    with PortHolder() as ports:
        taken = occupy(0)
        port = taken.getsockname()[1]
        spec = f"{port}:127.0.0.1:{echo.port}" if flag == "-L" else str(port)
        client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                                    "--exit-on-forward-failure", "-L", f"0:127.0.0.1:{echo.port}",
                                    flag, spec])  # fmt: skip
        try:
            assert client.proc.wait(15) == 1
        finally:
            client.stop()
            taken.close()
            ports.close()
    assert f"{flag} {spec}: cannot listen on localhost:{port}: address already in use" in client.log
    assert "--exit-on-forward-failure" in client.log and "Traceback" not in client.log


def test_exit_on_forward_failure_when_the_server_refuses_an_r(tunnel, echo):
    taken = occupy(0)
    port = taken.getsockname()[1]
    server = f"127.0.0.1:{tunnel.server_port}"
    spec = f"{port}:127.0.0.1:{echo.port}"
    client = ReactorMuxProcess(
        ["client", "--server", server, "--exit-on-forward-failure", "-R", spec]
    )
    try:
        assert client.proc.wait(15) == 1
    finally:
        client.stop()
        taken.close()
    assert f"-R {port}:127.0.0.1:{echo.port} refused by server: cannot listen on " in client.log
    assert "exiting (--exit-on-forward-failure)" in client.log


def test_a_refused_r_is_asked_for_again_until_the_port_frees_up(tunnel, echo):
    taken = occupy(0)
    port = taken.getsockname()[1]
    client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", "-R",
                              f"{port}:127.0.0.1:{echo.port}", expect=1, extra=FAST)  # fmt: skip
    client.wait_for(rf"-R {port}:.* refused by server: .*address already in use; asking again in")
    # Twice at least: it keeps asking, one line per attempt.
    client.wait_for(
        rf"-R {port}:.* refused by server: .*; asking again in", start=len(client.lines)
    )
    taken.close()
    client.wait_for(rf"forwarding -R 127\.0\.0\.1:{port} -> ", timeout=10)
    assert echo_once(port) == b"ping"
    assert "channel to" not in client.log  # the channel stayed up throughout


def test_an_r_0_gets_its_port_back_after_a_reconnect_or_a_new_one_if_taken(echo):
    tunnel = Tunnel()
    try:
        client, forwards = tunnel.client("-R", f"0:127.0.0.1:{echo.port}", extra=FAST)
        first = forwards[0][1]
        mark = len(client.lines)
        tunnel.restart_server()
        again = client.forwards(1, timeout=15, start=mark)[0][1]
        assert again == first
        assert echo_once(again) == b"ping"

        mark = len(client.lines)
        tunnel.server.kill()
        client.wait_for("lost: ", start=mark)
        taken = occupy(first)  # someone else took the port meanwhile
        try:
            tunnel.restart_server()
            moved = client.forwards(1, timeout=15, start=mark)[0][1]
            assert moved != first
            client.wait_for(rf"port {first}, which it had before, is not free", start=mark)
            client.wait_for(rf"listening on port {moved} now \(it had {first}\)", start=mark)
            assert echo_once(moved) == b"ping"
        finally:
            taken.close()
    finally:
        tunnel.close()


def test_a_policy_refusal_is_not_asked_again(tunnel, echo):
    """The server's settings decide --gateway-ports and --allow-bind: asking again
    cannot change them, so the client says so once."""
    client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", "-R", f"*:0:127.0.0.1:{echo.port}",
                              expect=1, extra=FAST)  # fmt: skip
    client.wait_for(r"-R \*:0:.* refused by server: .*--gateway-ports.* \(not asked again")
    time.sleep(1.5)  # several backoff steps of FAST
    assert client.count("refused by server") == 1
