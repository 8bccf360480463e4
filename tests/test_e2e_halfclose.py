"""Half-close semantics and stream teardown through real processes."""

from __future__ import annotations

import socket

import pytest
from support import ReplyAfterEOFServer, drain, payload, sha, wait_until

from reactor_mux.tools.procs import fd_count


@pytest.fixture
def reply_after_eof():
    server = ReplyAfterEOFServer()
    yield server
    server.close()


@pytest.mark.parametrize("kind", ["L", "R"])
def test_request_half_close_then_whole_reply(tunnel, reply_after_eof, kind):
    """The client sends a request and shuts down writing; the target answers only
    after seeing EOF, and the whole reply comes back over the half-open stream."""
    _client, forwards = tunnel.client(f"-{kind}", f"0:127.0.0.1:{reply_after_eof.port}")
    port = forwards[0][1]
    request = payload(11, 5 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        size, digest = drain(conn)
    # the reply is "<len> <sha>\n" + 3 MiB body: recompute what it must be
    head = f"{len(request)} {sha(request)}\n".encode()
    expected = head + bytes(payload(len(request), 3 * 1024 * 1024))
    assert (size, digest) == (len(expected), sha(expected))


@pytest.mark.parametrize("kind", ["L", "R"])
def test_other_direction_flows_after_a_half_close(tunnel, echo, kind):
    """After our FIN the echo keeps sending what it had; we read it all."""
    _client, forwards = tunnel.client(f"-{kind}", f"0:127.0.0.1:{echo.port}")
    data = payload(12, 2 * 1024 * 1024)
    with socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=30) as conn:
        conn.sendall(data[: 1024 * 1024])
        conn.sendall(data[1024 * 1024 :])
        conn.shutdown(socket.SHUT_WR)
        assert drain(conn) == (len(data), sha(data))


def test_two_thousand_connections_leave_no_descriptors_behind(tunnel, echo):
    """20 rounds of 100 concurrent connections, alternating -L and -R."""
    client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{echo.port}", "-R", f"0:127.0.0.1:{echo.port}"
    )
    procs = [client.pid, tunnel.server.pid]
    baseline = [fd_count(pid) for pid in procs]
    for round_number in range(20):
        conns = [
            socket.create_connection(("127.0.0.1", forwards[i % 2][1]), timeout=10)
            for i in range(100)
        ]
        for i, conn in enumerate(conns):
            conn.sendall(b"ping %d.%d" % (round_number, i))
            conn.shutdown(socket.SHUT_WR)
        for i, conn in enumerate(conns):
            assert drain(conn)[0] == len(b"ping %d.%d" % (round_number, i))
            conn.close()
    assert echo.connections == 2000
    assert wait_until(lambda: [fd_count(pid) for pid in procs] == baseline, timeout=10), (
        f"fds {[fd_count(pid) for pid in procs]} != baseline {baseline}"
    )
