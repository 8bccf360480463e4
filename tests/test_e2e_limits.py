"""Every named limit, hit through real processes: the excess is refused with a
reason, and what is within the limit keeps working."""

from __future__ import annotations

import hashlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time

from support import (
    BlackHole,
    ChaosRelay,
    Exchange,
    MuxProcess,
    NeverReadServer,
    Tunnel,
    check_exchange,
    drain,
    payload,
    recv_exactly,
    run_exchange,
    wait_until,
)

from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.tools.procs import fd_count, proc_status


def reset_or_eof(port: int, timeout: float = 5.0) -> bool:
    """True if a connection to ``port`` is closed by the tunnel without a reply."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def test_max_frame_is_announced_respected_and_enforced(hash_target):
    tunnel = Tunnel(server_args=("--max-frame", "4K"))
    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        ex = Exchange(2_000_000, 10, seed=5)  # the client keeps its frames within 4 KiB
        run_exchange(forwards[0][1], ex)
        check_exchange(ex, hash_target)
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=5) as raw:
            raw.sendall(encode_frame(0, 1, b"HELLO 1 262144 65536") + encode_frame(0, 1, b"PING 1"))
            received = b""
            while b"PONG 1" not in received:  # it took our HELLO: data frames may come now
                received += raw.recv(65536)
            raw.sendall(encode_frame(1, 1, b"CONNECT 127.0.0.1:9")
                        + encode_frame(1, 1, b"SYN 1")
                        + encode_frame(1, 0, bytes(4097)))  # fmt: skip
            while chunk := raw.recv(65536):
                received += chunk
        frames = split_frames(received)[0]
        assert frames[0] == (0, 1, b"HELLO 1 262144 4096")
        assert frames[-1][2].startswith(
            b"ERROR protocol: data frame body exceeds the maximum frame size"
        )
    finally:
        tunnel.close()


def test_max_streams(echo):
    tunnel = Tunnel(server_args=("--max-streams", "3"))
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        port = forwards[0][1]
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        for conn in held:  # all three open at the far end
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
        assert reset_or_eof(port)
        refused = client.wait_event("stream_refused", mapping=f"-L 0:127.0.0.1:{echo.port}")
        assert "limit 3" in refused["reason"]  # the reason names the limit
        for conn in held:
            conn.close()
        assert wait_until(lambda: not reset_or_eof_quick(port, echo), timeout=5)
    finally:
        tunnel.close()


def reset_or_eof_quick(port: int, echo) -> bool:  # type: ignore[no-untyped-def]
    try:  # a refusal's reset can come before connect() or sendall() even returns
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"y")
            return conn.recv(1) != b"y"
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_max_pending_syns():
    hole = BlackHole()
    tunnel = Tunnel(server_args=("--max-pending-syns", "2", "--connect-timeout", "5"))
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hole.port}")
        port = forwards[0][1]
        idle_fds = fd_count(tunnel.server.pid)
        pending = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        # Both SYNs are connecting at the server once it holds a socket for each.
        assert wait_until(lambda: fd_count(tunnel.server.pid) >= idle_fds + 2)
        started = time.monotonic()
        assert reset_or_eof(port)
        # At once: otherwise it would wait for a slot, i.e. for the 5 s connect
        # timeout; the bound leaves slack for a loaded machine.
        assert time.monotonic() - started < 3.0, "the excess SYN was not refused at once"
        refused = client.wait_event("stream_refused", mapping=f"-L 0:127.0.0.1:{hole.port}")
        assert "limit 2" in refused["reason"]  # the reason names the limit
        for conn in pending:
            conn.close()
    finally:
        tunnel.close()
        hole.close()


def test_max_channels(echo):
    tunnel = Tunnel(server_args=("--max-channels", "1"))
    try:
        first, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        second = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                                    "-L", f"0:127.0.0.1:{echo.port}", "--reconnect-min", "0.2",
                                    "--reconnect-max", "0.5"])  # fmt: skip
        tunnel.clients.append(second)
        down = second.wait_event("channel_down")
        refused = tunnel.server.wait_event("channel_refused")
        assert "limit 1" in refused["reason"] and refused["reason"] in down["reason"]
        first.stop()
        assert second.forwards(1, timeout=10)[0][0] == "L"
    finally:
        tunnel.close()


def test_a_client_refused_for_max_channels_after_authenticating_is_not_told_auth_failed(
    echo, tmp_path
):
    """Found in review (issue 20): with a secret, --max-channels is checked after AUTH, and
    the refusal overtook AUTH OK: the client took it for a failed authentication and
    waited its longest backoff.  ``full:`` says what it is."""
    secret = tmp_path / "secret"
    secret.write_text("a secret long enough to be accepted\n")
    secret.chmod(0o600)
    tunnel = Tunnel(server_args=("--max-channels", "1", "--secret-file", str(secret)))
    try:
        tunnel.client("-L", f"0:127.0.0.1:{echo.port}", extra=("--secret-file", str(secret)))
        second = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                                    "-L", f"0:127.0.0.1:{echo.port}", "--secret-file",
                                    str(secret), "--reconnect-min", "0.2",
                                    "--reconnect-max", "0.5"])  # fmt: skip
        tunnel.clients.append(second)
        down = second.wait_event("channel_down", reason=re.compile(r"limit 1\b"))
        assert down["delay"] <= 0.5  # not the long backoff after a failed authentication
        assert second.events("auth_failed") == []
    finally:
        tunnel.close()


def test_max_mappings(echo):
    tunnel = Tunnel(server_args=("--max-mappings", "2"))
    try:
        client, forwards = tunnel.client(*["-L", f"0:127.0.0.1:{echo.port}"] * 3, expect=2)
        refused = client.wait_event("forward_refused")
        assert "limit 2" in refused["reason"]
        assert len(forwards) == 2
    finally:
        tunnel.close()


def feed_until_backpressure(feeders: list[socket.socket], paused, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Push into non-blocking connections until ``paused()`` and then until none of
    them takes another byte for 0.2 s: the backpressure has reached the senders."""
    block = bytes(1 << 20)
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    while time.monotonic() < deadline:
        for conn in feeders:
            try:
                conn.send(block)
                last_progress = time.monotonic()
            except BlockingIOError:
                pass
        if paused() and time.monotonic() - last_progress > 0.2:
            return
        time.sleep(0.01)
    raise AssertionError("the feeders never felt backpressure")


def test_channel_buffer_cap_bounds_memory_beside_stalled_streams():
    """16 streams whose targets never read, fed from the client: without the cap the
    server would hold 16 windows (4 MiB); with --max-buffer 1M it pauses reading the
    channel instead, and its memory stays near the cap."""
    stalled = NeverReadServer()
    tunnel = Tunnel(server_args=("--max-buffer", "1M"))
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{stalled.port}")
        port = forwards[0][1]
        before = proc_status(tunnel.server.pid, "VmRSS")
        feeders = []
        for _ in range(16):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.setblocking(False)
            feeders.append(conn)
        feed_until_backpressure(
            feeders, lambda: tunnel.server.count_event("channel_reads_paused") > 0
        )
        growth = proc_status(tunnel.server.pid, "VmRSS") - before
        assert growth < 3 * 1024, f"server RSS grew {growth} KiB with a 1 MiB cap"
        for conn in feeders:
            conn.close()
        assert "Traceback" not in client.log
    finally:
        stalled.release.set()
        stalled.close()
        tunnel.close()


class LateReaderServer(NeverReadServer):
    """Reads nothing until ``release`` is set, then everything: (seed, size, sha256)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[int, int, str]] = []

    def handle(self, conn: socket.socket) -> None:
        self.release.wait(120)
        seed = int.from_bytes(recv_exactly(conn, 8), "big")
        size, digest = drain(conn)
        self.received.append((seed, size, digest))


def test_inbound_cap_resumes_once_the_local_sockets_catch_up():
    """16 streams into targets that do not read yet: the server pauses its channel
    reads at --max-buffer 64K.  Once the targets read, the rings empty and give
    their storage back, and reads resume while every stream is still open (the
    feeders send EOF only after that), so nothing but the rings' own release can
    lift the pause; then every byte arrives intact."""
    late = LateReaderServer()
    tunnel = Tunnel(server_args=("--max-buffer", "64K"))
    size, seeds = 3_000_000, range(500, 516)
    resumed = threading.Event()

    def feed(seed: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as conn:
            conn.sendall(seed.to_bytes(8, "big") + payload(seed, size))
            resumed.wait(60)
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)  # until the tunnel closes the stream

    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{late.port}")
        port = forwards[0][1]
        feeders = [threading.Thread(target=feed, args=(seed,), daemon=True) for seed in seeds]
        for thread in feeders:
            thread.start()
        tunnel.server.wait_event("channel_reads_paused", timeout=10)
        late.release.set()
        tunnel.server.wait_event("channel_reads_resumed", timeout=20)
        resumed.set()
        assert wait_until(lambda: len(late.received) == len(seeds), timeout=60)
        expected = {(seed, size, hashlib.sha256(payload(seed, size)).hexdigest()) for seed in seeds}
        assert set(late.received) == expected
        for thread in feeders:
            thread.join(10)
    finally:
        resumed.set()
        late.release.set()
        late.close()
        tunnel.close()


def test_the_cap_does_not_stall_other_channels(hash_target):
    """Channel A is paused at its cap; channel B on the same server moves data."""
    stalled = NeverReadServer()
    tunnel = Tunnel(server_args=("--max-buffer", "256K"))
    try:
        _a, fa = tunnel.client("-L", f"0:127.0.0.1:{stalled.port}")
        _b, fb = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        feeders = []
        for _ in range(8):
            conn = socket.create_connection(("127.0.0.1", fa[0][1]))
            conn.setblocking(False)
            feeders.append(conn)
        feed_until_backpressure(
            feeders, lambda: tunnel.server.count_event("channel_reads_paused") > 0
        )
        ex = Exchange(5_000_000, 5_000_000, seed=19)
        thread = threading.Thread(target=run_exchange, args=(fb[0][1], ex))
        thread.start()
        thread.join(60)
        check_exchange(ex, hash_target)
        for conn in feeders:
            conn.close()
    finally:
        stalled.release.set()
        stalled.close()
        tunnel.close()


def test_limits_reject_bad_values():
    for args in (["--max-frame", "512"], ["--max-streams", "0"], ["--max-buffer", "1K"],
                 ["--keepalive-interval", "5", "--keepalive-timeout", "5"],
                 ["--max-pending-syns", "x"]):  # fmt: skip
        command = [sys.executable, "-m", "reactor_mux", "server", "--listen", "127.0.0.1:0"]
        result = subprocess.run([*command, *args], capture_output=True, text=True, timeout=20)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1


def test_idle_streams_stay_cheap(echo):
    """Each open, idle stream costs each process a few KiB, not a window's worth.

    (A read once reserved a whole 128 KiB chunk of ring per stream: 130 KiB each
    with the pure-Python codec.)"""
    tunnel = Tunnel()
    conns: list[socket.socket] = []
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        port = forwards[0][1]
        pids = [client.pid, tunnel.server.pid]
        before = [proc_status(pid, "VmRSS") for pid in pids]
        for _ in range(500):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
            conns.append(conn)
        per_stream = [
            (proc_status(pid, "VmRSS") - b) / 500 for pid, b in zip(pids, before, strict=True)
        ]
        assert max(per_stream) < 32, f"KiB per idle stream: {per_stream}"
    finally:
        for conn in conns:
            conn.close()
        tunnel.close()


def test_outbound_cap_pauses_local_reads_until_the_channel_drains(hash_target):
    """Mid-transfer the server is frozen, so nothing leaves the client's send rings: with
    --max-buffer 256K the client stops reading its 8 local sockets (instead of
    holding 8 windows), and picks up again once the server runs."""
    tunnel = Tunnel()
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                         extra=("--max-buffer", "256K"))  # fmt: skip
        port = forwards[0][1]
        before = proc_status(client.pid, "VmRSS")
        exchanges = [Exchange(20_000_000, 10, seed=8100 + i) for i in range(8)]
        threads = [threading.Thread(target=run_exchange, args=(port, ex)) for ex in exchanges]
        for thread in threads:
            thread.start()
        # The streams are open and moving once the target has them all; then
        # nothing leaves the client.
        assert wait_until(lambda: hash_target.connections == 8, timeout=20)
        tunnel.server.signal(signal.SIGSTOP)
        try:
            client.wait_event("local_reads_paused", timeout=20)
            time.sleep(0.5)  # a window in which memory would go on growing without the cap
            growth = proc_status(client.pid, "VmRSS") - before
        finally:
            tunnel.server.signal(signal.SIGCONT)
        assert growth < 2 * 1024, f"client RSS grew {growth} KiB with a 256 KiB cap"
        for thread in threads:
            thread.join(120)
        for ex in exchanges:
            check_exchange(ex, hash_target)
        client.wait_event("local_reads_resumed")
    finally:
        tunnel.server.signal(signal.SIGCONT)
        tunnel.close()


def test_max_channels_counts_a_resumed_channel_once(echo):
    """The server keeps its count of authenticated channels as they come and go (not a
    scan per new channel): a client that resumed through a cut still counts once, so
    with --max-channels 2 one more client gets in and a third is refused."""
    tunnel = Tunnel(server_args=("--max-channels", "2"))
    relay = ChaosRelay(tunnel.server_port)
    try:
        resumer = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}",
                              "-L", f"0:127.0.0.1:{echo.port}"])  # fmt: skip
        tunnel.clients.append(resumer)
        resumer.forwards(1)
        for _ in range(3):
            mark = resumer.mark
            relay.cut()
            resumer.wait_event("channel_resumed", start=mark, timeout=20)
        second, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        third = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                            "-L", f"0:127.0.0.1:{echo.port}"])  # fmt: skip
        tunnel.clients.append(third)
        refused = tunnel.server.wait_event("channel_refused")
        assert "limit 2" in refused["reason"]
        second.stop()
        assert third.forwards(1, timeout=15)[0][0] == "L"
    finally:
        tunnel.close()
        relay.close()
