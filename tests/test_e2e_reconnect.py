"""Channel loss without resume (``--resume-timeout 0``): streams die on both sides,
the client reconnects, mappings return.  tests/test_e2e_resume.py covers resume."""

from __future__ import annotations

import socket
import time

from support import Exchange, check_exchange, echo_once, ends_within, run_exchange, wait_until


def test_server_killed_and_restarted(tunnel, echo, hash_target):
    client, forwards = tunnel.client(
        "-L",
        f"0:127.0.0.1:{echo.port}",
        "-R",
        f"0:127.0.0.1:{echo.port}",
        "-L",
        f"0:127.0.0.1:{hash_target.port}",
        extra=("--reconnect-min", "0.2", "--reconnect-max", "1", "--resume-timeout", "0"),
    )
    ports = {(kind, target): port for kind, port, target in forwards}
    l_port = ports[("L", f"127.0.0.1:{echo.port}")]
    r_port = ports[("R", f"127.0.0.1:{echo.port}")]
    # Streams that are open (and idle) when the channel dies.
    through_l = socket.create_connection(("127.0.0.1", l_port))
    through_r = socket.create_connection(("127.0.0.1", r_port))
    through_l.sendall(b"x")
    through_r.sendall(b"y")
    assert through_l.recv(1) == b"x" and through_r.recv(1) == b"y"
    mark = client.mark

    tunnel.server.kill()  # SIGKILL: no goodbye on the channel
    assert ends_within(through_l, 5), "-L stream hung after channel loss"
    assert ends_within(through_r, 5), "-R stream hung after channel loss"
    client.wait_event("channel_down", start=mark)
    # The -L listener stays bound while the channel is down, and resets promptly.
    started = time.monotonic()
    try:  # the reset can beat connect() itself back to user space
        with socket.create_connection(("127.0.0.1", l_port), timeout=5) as conn:
            assert ends_within(conn, 2)
    except ConnectionResetError:
        pass
    # Promptly: a reset, not a hang into the 5 s timeouts (slack for a loaded machine).
    assert time.monotonic() - started < 3.0

    tunnel.restart_server()
    restarted = time.monotonic()
    new = client.forwards(3, timeout=15, start=mark)
    # Back within the backoff: at most one --reconnect-max delay, plus the handshake.
    # At most one --reconnect-max delay (1 s) plus the handshake; slack for a loaded machine.
    back = time.monotonic() - restarted
    assert back < 1.0 + 3.0, f"the client was back only after {back:.1f}s"
    new_ports = {(kind, target): port for kind, port, target in new}
    assert new_ports[("L", f"127.0.0.1:{echo.port}")] == l_port  # same listener
    assert wait_until(lambda: echo_once(l_port) == b"ping", timeout=5)
    assert echo_once(new_ports[("R", f"127.0.0.1:{echo.port}")]) == b"ping"
    ex = Exchange(5_000_000, 5_000_000, seed=61)
    run_exchange(new_ports[("L", f"127.0.0.1:{hash_target.port}")], ex)
    check_exchange(ex, hash_target)
    through_l.close()
    through_r.close()


def test_dead_client_frees_its_remote_ports(tunnel, echo, ports):
    fixed = ports.take()
    first, forwards = tunnel.client(
        "-R", f"{fixed}:127.0.0.1:{echo.port}", extra=("--resume-timeout", "0")
    )
    assert forwards[0][1] == fixed
    app = socket.create_connection(("127.0.0.1", fixed))  # a stream open when the client dies
    app.sendall(b"z")
    assert app.recv(1) == b"z"
    first.kill()
    tunnel.server.wait_event("channel_down")
    assert ends_within(app, 5), "the server kept a dead client's stream open"
    app.close()
    _second, forwards = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}")
    assert forwards[0][1] == fixed
    assert echo_once(fixed) == b"ping"
