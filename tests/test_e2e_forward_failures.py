"""Forwards that cannot be set up: exit on them (ssh's ExitOnForwardFailure), or
retry a refused -R until it works, and give an ``-R 0`` its port back after a
reconnect."""

from __future__ import annotations

import socket

import pytest
from support import MuxProcess, PortHolder, Tunnel, echo_once

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
        client = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                                    "--exit-on-forward-failure", "-L", f"0:127.0.0.1:{echo.port}",
                                    flag, spec])  # fmt: skip
        try:
            assert client.proc.wait(15) == 1
        finally:
            client.stop()
            taken.close()
            ports.close()
    [failed] = client.events("start_failed")
    assert f"{flag} {spec}" in failed["reason"]  # it names the forward
    assert client.events("forward_up") == [] and "Traceback" not in client.log


def test_exit_on_forward_failure_when_the_server_refuses_an_r(tunnel, echo):
    taken = occupy(0)
    port = taken.getsockname()[1]
    server = f"127.0.0.1:{tunnel.server_port}"
    spec = f"{port}:127.0.0.1:{echo.port}"
    client = MuxProcess(["client", "--server", server, "--exit-on-forward-failure", "-R", spec])
    try:
        assert client.proc.wait(15) == 1
    finally:
        client.stop()
        taken.close()
    [refused] = client.events("forward_refused")
    assert refused["mapping"] == f"-R {spec}" and refused["delay"] is None  # no asking again
    assert refused["message"].endswith("; exiting (--exit-on-forward-failure)"), refused
    assert client.events("stopped")


def test_a_refused_r_is_asked_for_again_until_the_port_frees_up(tunnel, echo):
    taken = occupy(0)
    port = taken.getsockname()[1]
    client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", "-R",
                              f"{port}:127.0.0.1:{echo.port}", expect=1, extra=FAST)  # fmt: skip
    mapping = f"-R {port}:127.0.0.1:{echo.port}"
    # Twice at least: it keeps asking, one line per attempt, each with its delay.
    for refused in client.wait_events("forward_refused", 2, mapping=mapping):
        assert refused["delay"] is not None
    taken.close()
    client.wait_event("forward_up", mapping=mapping, timeout=10)
    assert echo_once(port) == b"ping"
    assert client.events("channel_down") == []  # the channel stayed up throughout


def test_an_r_0_gets_its_port_back_after_a_reconnect_or_a_new_one_if_taken(echo):
    tunnel = Tunnel()
    try:
        client, forwards = tunnel.client("-R", f"0:127.0.0.1:{echo.port}", extra=FAST)
        first = forwards[0][1]
        mark = client.mark
        tunnel.restart_server()
        again = client.forwards(1, timeout=15, start=mark)[0][1]
        assert again == first
        assert echo_once(again) == b"ping"

        mark = client.mark
        tunnel.server.kill()
        client.wait_event("channel_suspended", start=mark)  # resume is on by default
        taken = occupy(first)  # someone else took the port meanwhile
        try:
            tunnel.restart_server()
            moved = client.forwards(1, timeout=15, start=mark)[0][1]
            assert moved != first
            spec = f"-R 0:127.0.0.1:{echo.port}"
            client.wait_event("forward_port_taken", mapping=spec, start=mark)
            changed = client.wait_event("forward_port_changed", mapping=spec, start=mark)
            assert changed["address"] == f"127.0.0.1:{moved}"
            assert echo_once(moved) == b"ping"
        finally:
            taken.close()
    finally:
        tunnel.close()


def test_a_policy_refusal_is_not_asked_again(tunnel, echo):
    """The server's settings decide --gateway-ports and --allow-bind: asking again
    cannot change them, so the client says so once."""
    taken = occupy(0)
    busy = f"-R {taken.getsockname()[1]}:127.0.0.1:{echo.port}"
    policy = f"-R *:0:127.0.0.1:{echo.port}"
    try:
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", *policy.split(" "),
                                  *busy.split(" "), expect=1, extra=FAST)  # fmt: skip
        # Both are refused at once; the busy port is asked for again on the backoff
        # (first delay at most --reconnect-min, the second at least as long), so by
        # its third refusal the policy -R would have been asked for again, had it been.
        client.wait_events("forward_refused", 3, mapping=busy, timeout=15)
        [refused] = client.events("forward_refused", mapping=policy)
        assert refused["delay"] is None  # not asked again
    finally:
        taken.close()
