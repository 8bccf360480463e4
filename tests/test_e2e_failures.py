"""Failures through real processes: unreachable targets, ports in use, garbage peers.

Each failure must be logged once with its reason, close only what it concerns,
and leave every other stream and channel untouched.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest
from support import (
    Exchange,
    MuxProcess,
    check_exchange,
    connect_from,
    echo_once,
    good_traffic,
    run_exchange,
    wait_until,
)

from reactor_mux.protocol.frames import encode_frame
from reactor_mux.tools.procs import fd_count


def closed_promptly(port: int, timeout: float = 3.0) -> float:
    """Connect to ``port``; return how long until the tunnel closed the connection."""
    started = time.monotonic()
    try:  # the reset can beat connect() itself back to user space
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            assert conn.recv(1) == b""
    except ConnectionResetError:
        pass
    return time.monotonic() - started


def background_transfer(port, target, size=20_000_000, seed=4242):  # type: ignore[no-untyped-def]
    ex = Exchange(size, size // 2, seed)
    thread = threading.Thread(target=run_exchange, args=(port, ex))
    thread.start()
    return ex, thread


@pytest.mark.parametrize("kind", ["L", "R"])
def test_refused_target_closes_only_that_connection(tunnel, hash_target, kind, ports):
    dead = ports.take()
    client, forwards = tunnel.client(
        f"-{kind}", f"0:127.0.0.1:{dead}", "-L", f"0:127.0.0.1:{hash_target.port}"
    )
    ports = {target: port for _k, port, target in forwards}
    ex, thread = background_transfer(ports[f"127.0.0.1:{hash_target.port}"], hash_target)
    elapsed = closed_promptly(ports[f"127.0.0.1:{dead}"])
    thread.join(60)
    check_exchange(ex, hash_target)
    # Prompt: a refused connect, answered at once (a hang would run into
    # closed_promptly's 3 s timeout); the slack is for a loaded machine.
    assert elapsed < 2.5
    # Logged once by the side that connected, once by the side whose app was refused.
    connecting, other = (tunnel.server, client) if kind == "L" else (client, tunnel.server)
    connecting.wait_event("connect_failed", peer=f"127.0.0.1:{dead}")
    other.wait_event("stream_refused")
    assert connecting.count_event("connect_failed") == 1
    assert other.count_event("stream_refused") == 1
    assert "Traceback" not in client.log + tunnel.server.log


def test_unresolvable_target(tunnel):
    client, forwards = tunnel.client("-L", "0:nonexistent.invalid:80")
    assert closed_promptly(forwards[0][1]) < 3.0
    client.wait_event("stream_refused", mapping="-L 0:nonexistent.invalid:80")
    assert client.count_event("stream_refused") == 1


def test_target_that_never_answers_times_out():
    """A listener with a full accept queue drops SYNs: the connect hangs until our timeout."""
    from support import BlackHole, Tunnel

    black_hole = BlackHole()
    port = black_hole.port
    tunnel = Tunnel(server_args=("--connect-timeout", "1"))
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{port}")
        elapsed = closed_promptly(forwards[0][1], timeout=10)
        # Not before --connect-timeout; the upper bound only catches a hang
        # (closed_promptly gives up at 10 s), with slack for a loaded machine.
        assert 0.9 < elapsed < 8.0
        client.wait_event("stream_refused", mapping=f"-L 0:127.0.0.1:{port}")
        assert client.count_event("stream_refused") == 1
    finally:
        tunnel.close()
        black_hole.close()


def test_bind_on_a_port_in_use_keeps_other_mappings(tunnel, hash_target):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        client, forwards = tunnel.client(
            "-R",
            f"{port}:127.0.0.1:{hash_target.port}",
            "-L",
            f"0:127.0.0.1:{hash_target.port}",
            expect=1,
        )
        client.wait_event("forward_refused", mapping=f"-R {port}:127.0.0.1:{hash_target.port}")
        assert forwards[0][0] == "L"
        ex = Exchange(1_000_000, 1_000_000, seed=31)
        run_exchange(forwards[0][1], ex)
        check_exchange(ex, hash_target)
    finally:
        taken.close()


def test_non_loopback_bind_needs_gateway_ports(tunnel, echo):
    client, _ = tunnel.client(
        "-R", f"0.0.0.0:0:127.0.0.1:{echo.port}", "-L", f"0:127.0.0.1:{echo.port}", expect=1
    )
    refused = client.wait_event("forward_refused", mapping=f"-R 0.0.0.0:0:127.0.0.1:{echo.port}")
    assert "--gateway-ports" in refused["reason"]  # it names the option that would allow it


def test_gateway_ports_allows_wildcard_bind(echo):
    from support import Tunnel

    tunnel = Tunnel(server_args=("--gateway-ports",))
    try:
        _client, forwards = tunnel.client("-R", f"*:0:127.0.0.1:{echo.port}")
        assert forwards[0][0] == "R"
        with socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=10) as conn:
            conn.sendall(b"hi")
            conn.shutdown(socket.SHUT_WR)
            assert conn.recv(10) == b"hi"
    finally:
        tunnel.close()


def hello() -> bytes:
    return encode_frame(0, 1, b"HELLO 1 262144 65536")


GARBAGE = {
    "random bytes": (b"\xf9" + os.urandom(4095), "not a reactor-mux client (it sent bytes f9"),
    "HTTP request": (
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        "not a reactor-mux client (it sent text: 'GET / HTTP/1.1')",
    ),
    "TLS ClientHello": (
        bytes.fromhex("16030100f5010000f10303") + os.urandom(240),
        "peer started a TLS handshake",
    ),
    "4 GB body": (hello() + bytes.fromhex("ffffffff0000000100"), "before the handshake finished"),
    "half a header then EOF": (bytes.fromhex("00000010"), "middle of a frame"),
    "data with the HELLO": (hello() + encode_frame(5, 0, b"x"), "before the handshake finished"),
    "unknown command": (hello() + encode_frame(0, 1, b"TELEPORT now"), "unknown command"),
    "command before HELLO": (encode_frame(1, 1, b"CONNECT 127.0.0.1:22"), "expected HELLO"),
    "duplicate SYN": (
        hello() + encode_frame(1, 1, b"CONNECT 127.0.0.1:9") + encode_frame(1, 1, b"SYN 1") * 2,
        "reuses stream id",
    ),
}


def test_garbage_peers_are_cut_off_without_disturbing_a_good_client(tunnel, hash_target):
    _client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{hash_target.port}", "-R", f"0:127.0.0.1:{hash_target.port}"
    )
    server_fds = fd_count(tunnel.server.pid)  # the good channel and its -R listener
    with good_traffic([port for _k, port, _t in forwards], hash_target, seed=900):
        send_garbage(tunnel)
    assert tunnel.server.count_event("channel_down") == len(GARBAGE)
    # Failed handshakes leak nothing.
    assert wait_until(lambda: fd_count(tunnel.server.pid) == server_fds)


def send_garbage(tunnel) -> None:  # type: ignore[no-untyped-def]
    """Each kind of garbage from a loopback address of its own: each one costs its
    source a penalty (and the good client on 127.0.0.1 none)."""
    for index, (name, (wire, reason)) in enumerate(GARBAGE.items()):
        mark = tunnel.server.mark
        source = f"127.0.0.{20 + index}"
        with connect_from(source, tunnel.server_port, timeout=5) as bad:
            bad.sendall(wire)
            if name.startswith("half"):
                bad.shutdown(socket.SHUT_WR)
            try:  # the server answers (HELLO, maybe ERROR) and closes
                while bad.recv(65536):
                    pass
            except ConnectionResetError:
                pass
        down = tunnel.server.wait_event("channel_down", peer=re.compile(f"^{source}:"),
                                        start=mark)  # fmt: skip
        assert reason in down["reason"], (name, down)


def test_bye_then_a_syn_and_its_rst_in_one_write_is_handled(tunnel, echo):
    """Found in review (issue 20): after BYE, a SYN and an RST for the same new stream
    in one write made the server answer ``ERROR internal error`` with a traceback.
    Now the SYN's refusal finds the stream gone, the channel ends as a leaving peer's
    does, and the server goes on serving."""
    raw = RawClient(tunnel.server_port)
    raw.send(hello(), encode_frame(1, 1, f"CONNECT 127.0.0.1:{echo.port}".encode()),
             encode_frame(1, 1, b"SYN 1"))  # fmt: skip
    raw.wait_for(b"SYN OK")  # stream 1 is open: the channel stays up after BYE
    raw.send(encode_frame(0, 1, b"BYE") + encode_frame(3, 1, b"SYN 1")
             + encode_frame(3, 1, b"RST changed my mind"))  # fmt: skip
    raw.send(encode_frame(1, 1, b"FIN"))  # ends stream 1 (the echo target ends it too)
    received = raw.until_closed()
    assert b"ERROR" not in received.split(b"SYN OK", 1)[1]
    assert tunnel.server.wait_event("channel_down")["level"] == "info"  # an orderly end
    assert "Traceback" not in tunnel.server.log
    assert [e for e in tunnel.server.events() if e["level"] == "error"] == []
    _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
    assert echo_once(forwards[0][1]) == b"ping"


def test_error_frame_tells_the_peer_why(tunnel):
    with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=5) as bad:
        bad.sendall(hello() + encode_frame(0, 1, b"HELLO 1 262144 65536"))
        received = b""
        while chunk := bad.recv(65536):
            received += chunk
    frames = []
    while received:
        length, sid, kind = struct.unpack(">IIB", received[:9])
        frames.append((sid, kind, received[9 : 9 + length]))
        received = received[9 + length :]
    assert frames[0] == (0, 1, b"HELLO 1 262144 65536")
    assert frames[-1] == (0, 1, b"ERROR protocol: duplicate HELLO")


def test_client_without_a_server_resets_local_connections_promptly(echo, ports):
    port = ports.take()
    client = MuxProcess(
        [
            "client",
            "--server",
            f"127.0.0.1:{port}",
            "-L",
            f"0:127.0.0.1:{echo.port}",
            "--reconnect-max",
            "1",
        ]
    )
    try:
        listen_port = client.listening_port(mapping=f"-L 0:127.0.0.1:{echo.port}")
        client.wait_event("channel_down")  # its connect was refused
        assert closed_promptly(listen_port) < 2.5  # at once, not the 3 s timeout
    finally:
        assert client.stop() == 0
    assert "Traceback" not in client.log


class RawClient:
    """Speaks the protocol by hand, to misbehave after a valid handshake."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = connect_from(source, port)
        self.received = b""

    def send(self, *frames: bytes) -> None:
        self.sock.sendall(b"".join(frames))

    def wait_for(self, body: bytes) -> None:
        while body not in self.received:
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before {body!r}"
            self.received += chunk

    def until_closed(self) -> bytes:
        try:
            while chunk := self.sock.recv(65536):
                self.received += chunk
        except ConnectionResetError:
            pass
        self.sock.close()
        return self.received

    def open_stream(self, target_port: int) -> None:
        """HELLO, CONNECT mapping 1, SYN stream 1, and wait for SYN OK."""
        self.send(hello(), encode_frame(1, 1, b"CONNECT 127.0.0.1:%d" % target_port),
                  encode_frame(1, 1, b"SYN 1"))  # fmt: skip
        self.wait_for(b"SYN OK")


def abuse_beyond_window(raw: RawClient, target: int) -> None:
    raw.open_stream(target)  # the target never reads, so little is ever acknowledged
    frame = encode_frame(1, 0, bytes(32768))
    try:  # 8 MiB, ignoring ACKs: more than the window plus what kernel buffers absorb
        for _ in range(256):
            raw.send(frame)
    except OSError:
        pass  # the server cut us off, as it should


def abuse_ack_beyond_sent(raw: RawClient, target: int) -> None:
    raw.open_stream(target)
    raw.send(encode_frame(1, 1, b"ACK 1000"))


def abuse_syn_ok_from_the_opener(raw: RawClient, target: int) -> None:
    raw.send(hello(), encode_frame(1, 1, b"CONNECT 127.0.0.1:%d" % target),
             encode_frame(1, 1, b"SYN 1"), encode_frame(1, 1, b"SYN OK"))  # fmt: skip


def abuse_data_after_fin(raw: RawClient, target: int) -> None:
    raw.open_stream(target)
    raw.send(encode_frame(1, 1, b"FIN"), encode_frame(1, 0, b"late"))


ABUSE = {
    "data beyond the window": (abuse_beyond_window, "beyond its window"),
    "ACK for more than was sent": (abuse_ack_beyond_sent, "acknowledges more than"),
    "SYN OK from the stream's opener": (abuse_syn_ok_from_the_opener,
                                        "cannot receive SYN OK in state syn-received"),
    "data after FIN": (abuse_data_after_fin, "cannot receive data in state half-closed-remote"),
}  # fmt: skip


def test_protocol_abuse_after_a_valid_handshake(tunnel, hash_target):
    from support import NeverReadServer

    stalled = NeverReadServer()
    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        with good_traffic([forwards[0][1]], hash_target, seed=977):
            for name, (abuse, reason) in ABUSE.items():
                mark = tunnel.server.mark
                raw = RawClient(tunnel.server_port)
                local = raw.sock.getsockname()
                abuse(raw, stalled.port)
                received = raw.until_closed()
                down = tunnel.server.wait_event("channel_down", peer=f"127.0.0.1:{local[1]}",
                                                start=mark)  # fmt: skip
                assert reason in down["reason"], (name, down)
                assert b"ERROR " in received, name
    finally:
        stalled.release.set()
        stalled.close()


def test_half_a_header_then_silence_is_cut_off(hash_target):
    """Before HELLO the handshake timeout ends it; after HELLO, the keepalive.
    A good client's checksummed transfer on the same server is not disturbed."""
    from support import Tunnel

    tunnel = Tunnel(server_args=("--handshake-timeout", "0.5", "--keepalive-interval", "0.3",
                                 "--keepalive-timeout", "0.9"))  # fmt: skip
    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        with good_traffic([forwards[0][1]], hash_target, seed=991):
            silent = ((b"", "handshake timed out", "127.0.0.2"),  # penalised: its own source
                      (hello(), "keepalive timeout", "127.0.0.1"))  # fmt: skip
            for prefix, reason, source in silent:
                mark = tunnel.server.mark
                raw = RawClient(tunnel.server_port, source)
                local = raw.sock.getsockname()
                started = time.monotonic()
                raw.send(prefix + bytes.fromhex("00000010"))  # 4 of 9 header bytes, then silence
                raw.until_closed()
                # The timeouts are 0.5 s and 0.9 s; a connection that was never
                # cut would hang the test, so this bound only needs to be finite.
                assert time.monotonic() - started < 8
                down = tunnel.server.wait_event("channel_down", peer=f"{source}:{local[1]}",
                                                start=mark)  # fmt: skip
                assert reason in down["reason"]
        assert tunnel.server.count_event("channel_down") == 2  # only the two silent channels
    finally:
        tunnel.close()
