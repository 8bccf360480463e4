"""An idle tunnel sleeps: no busy loop with open mappings and open idle streams."""

from __future__ import annotations

import socket
import time

from reactor_mux.tools.procs import cpu_time


def test_idle_tunnel_uses_almost_no_cpu(tunnel, echo):
    client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{echo.port}", "-R", f"0:127.0.0.1:{echo.port}"
    )
    # Idle but open streams too, including a half-closed one.
    conns = [socket.create_connection(("127.0.0.1", port)) for _k, port, _t in forwards]
    conns[0].sendall(b"hello")
    assert conns[0].recv(5) == b"hello"
    conns[1].shutdown(socket.SHUT_WR)
    conns[1].settimeout(10)
    assert conns[1].recv(1) == b""  # its EOF came back: the last exchange is over
    pids = [client.pid, tunnel.server.pid]
    before = [cpu_time(pid) for pid in pids]
    time.sleep(2.0)  # a measuring window, not a synchronisation
    used = [cpu_time(pid) - b for pid, b in zip(pids, before, strict=False)]
    # CPU time is what the processes themselves ran, so a loaded machine does not
    # inflate it; a busy loop would use most of the 2 s.
    assert all(u <= 0.05 for u in used), f"CPU seconds used while idle for 2s: {used}"
    for conn in conns:
        conn.close()
