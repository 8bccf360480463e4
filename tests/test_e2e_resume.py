"""Resume with real processes: a broken channel is a pause, not a reset.

A ``ChaosRelay`` sits in the channel's path and resets it on demand; the
client reconnects and resumes its session (docs/protocol.md section 9).
"""

from __future__ import annotations

import math
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sshd import SSH, SSHD, LocalSshd
from support import (
    ChaosRelay,
    MuxProcess,
    Tunnel,
    echo_once,
    ends_within,
    payload,
    recv_exactly,
    wait_until,
)
from test_e2e_chaos import ChaosTarget, Received, Stream, drain_tolerant, verify
from test_e2e_control import command, status

from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.tools.procs import proc_status

FAST = ("--keepalive-interval", "0.5", "--keepalive-timeout", "1.5", "--handshake-timeout", "2")


def client_through(relay: ChaosRelay, tunnel: Tunnel, *args: str) -> MuxProcess:
    proc = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}", *args])
    tunnel.clients.append(proc)
    return proc


def cut_and_resume(relay: ChaosRelay, client: MuxProcess, every: float) -> None:
    """Cut the channel, wait for the client's resume, and let the streams run until
    ``every`` seconds after the cut (the scenario's pace, not a synchronisation)."""
    next_cut = time.monotonic() + every
    mark = client.mark
    relay.cut()
    client.wait_event("channel_resumed", start=mark, timeout=20)
    time.sleep(max(0.0, next_cut - time.monotonic()))


def run_paced(stream: Stream, duration: float) -> None:
    """A request sent in small pieces over ``duration`` seconds, then the reply."""
    try:
        with socket.create_connection(("127.0.0.1", stream.port), timeout=60) as conn:
            conn.sendall(struct.pack(">QQ", stream.reply_len, stream.seed))
            data = payload(stream.seed + 1, stream.send_len)
            pieces = max(1, math.ceil(len(data) / 16384))
            pause = duration / pieces
            try:
                for offset in range(0, len(data), 16384):
                    conn.sendall(data[offset : offset + 16384])
                    time.sleep(pause)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                stream.reply = Received(0, "", True)
                return
            stream.reply = drain_tolerant(conn)
    except OSError as exc:
        stream.error = repr(exc)


def test_100_streams_survive_a_cut_every_2s_for_20s():
    target = ChaosTarget()
    tunnel = Tunnel(server_args=FAST)
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{target.port}",
                                "-R", f"0:127.0.0.1:{target.port}", *FAST)  # fmt: skip
        ports = {kind: port for kind, port, _ in client.forwards(2)}
        streams = [Stream(ports["L" if i % 2 else "R"], 200_000 + 3_000 * i, 300_000 + 5_000 * i,
                          seed=11_000 + 3 * i) for i in range(100)]  # fmt: skip
        threads = [threading.Thread(target=run_paced, args=(s, 18.0)) for s in streams]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: target.connections >= 100, timeout=30)
        for _ in range(10):
            cut_and_resume(relay, client, every=2.0)
        for thread in threads:
            thread.join(60)
        assert not [s.seed for s, t in zip(streams, threads, strict=True) if t.is_alive()]
        outcomes = [verify(s, target) for s in streams]
        broken = [s.seed for s, o in zip(streams, outcomes, strict=True) if o != "intact"]
        assert not broken, f"{len(broken)} streams did not arrive intact: {broken}"
        assert client.count_event("channel_resumed") == 10
        assert client.count_event("resume_failed") == 0
    finally:
        relay.close()
        tunnel.close()
        target.close()


@pytest.mark.skipif(SSHD is None or SSH is None, reason="needs sshd and ssh (openssh-server)")
def test_an_ssh_session_survives_two_cuts():
    sshd = LocalSshd()
    tunnel = Tunnel(server_args=FAST)
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{sshd.port}", *FAST)
        port = client.forwards(1)[0][1]
        command = sshd.ssh_command(port, "echo started; sleep 8; echo survived")
        ssh = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert ssh.stdout is not None
        assert ssh.stdout.readline().strip() == "started"
        for _ in range(2):
            cut_and_resume(relay, client, every=2.5)
        out, err = ssh.communicate(timeout=30)
        assert out.strip() == "survived", err
        assert ssh.returncode == 0
        assert client.count_event("channel_resumed") == 2
    finally:
        relay.close()
        tunnel.close()
        sshd.close()


def test_a_forged_resume_is_refused_while_the_real_client_resumes(echo):
    tunnel = Tunnel(server_args=FAST)
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{echo.port}", *FAST)
        port = client.forwards(1)[0][1]
        app = socket.create_connection(("127.0.0.1", port), timeout=10)
        app.sendall(b"before")
        assert app.recv(6) == b"before"
        relay.cut()
        client.wait_event("channel_resumed")
        # The session id and client id crossed the wire in the clear (the relay saw
        # them, in the resuming HELLO); the key did not.
        client_id, session_id = resume_hello(bytes(relay.heads[1]))
        # Another client id naming the session is refused before any proof (first:
        # a wrong proof turns this address away for a while).
        other = f"HELLO 1 262144 65536 someone-else-0001 resume:{session_id}".encode()
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10) as forger:
            forger.sendall(encode_frame(0, 1, other))
            answer = b""
            while chunk := forger.recv(4096):
                answer += chunk
        assert b"resume refused: unknown session" in answer and b"RESUME NONCE" not in answer
        hello = f"HELLO 1 262144 65536 {client_id} resume:{session_id}".encode()
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10) as forger:
            forger.sendall(encode_frame(0, 1, hello))
            answer = b""
            while b"RESUME NONCE" not in answer:
                answer += forger.recv(4096)
            forger.sendall(encode_frame(0, 1, b"RESUME PROOF " + b"1" * 64 + b" " + b"2" * 64))
            while chunk := forger.recv(4096):
                answer += chunk
        assert b"resume refused: bad proof" in answer
        tunnel.server.wait_event("channel_down", reason=re.compile("bad proof"))
        app.sendall(b"after-forgery")  # the real session carries on, live
        assert app.recv(13) == b"after-forgery"
        mark = client.mark
        relay.cut()
        client.wait_event("channel_resumed", start=mark)
        app.sendall(b"after-cut")
        assert app.recv(9) == b"after-cut"
        assert client.count_event("channel_resumed") == 2
        app.close()
    finally:
        relay.close()
        tunnel.close()


def resume_hello(wire: bytes) -> tuple[str, str]:
    """The client id and the session id a resuming client's HELLO names, as
    ``HELLO 1 WINDOW FRAME CLIENT-ID resume:SESSION`` (docs/protocol.md)."""
    frames, _consumed, _error = split_frames(wire)
    for _stream, kind, body in frames:
        words = bytes(body).decode().split()
        if kind == 1 and words[0] == "HELLO" and words[-1].startswith("resume:"):
            return words[4], words[5].removeprefix("resume:")
    raise AssertionError(f"no resuming HELLO in {wire!r}")


def test_a_server_restart_resets_the_streams_promptly_with_the_reason(tunnel, echo):
    client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}",
                                     extra=("--reconnect-min", "0.2"))  # fmt: skip
    port = forwards[0][1]
    app = socket.create_connection(("127.0.0.1", port))
    app.sendall(b"x")
    assert app.recv(1) == b"x"
    mark = client.mark
    tunnel.server.kill()
    client.wait_event("channel_suspended", start=mark)
    assert not ends_within(app, 1.0), "a lost channel must pause the stream, not reset it"
    tunnel.restart_server()
    restarted = time.monotonic()
    assert ends_within(app, 10), "the stream hung after the server lost its session"
    assert time.monotonic() - restarted < 5.0
    client.wait_event("resume_failed", start=mark)
    new = client.forwards(1, timeout=15, start=mark)
    assert wait_until(lambda: echo_once(new[0][1]) == b"ping", timeout=5)
    app.close()


def test_a_frozen_client_keeps_its_remote_port_and_held_connections_open_on_resume(echo, ports):
    """Keepalive still notices a frozen peer; the -R port stays bound (a lease), a
    connection to it during the outage is held, and it opens once the client is back."""
    tunnel = Tunnel(server_args=(*FAST, "-v"))  # -v: stream events
    try:
        fixed = ports.take()
        client, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        client.signal(signal.SIGSTOP)
        tunnel.server.wait_event("channel_suspended", reason=re.compile("keepalive timeout"),
                                 timeout=5)  # fmt: skip
        mark = tunnel.server.mark
        held = socket.create_connection(("127.0.0.1", fixed), timeout=10)
        held.sendall(b"held")
        tunnel.server.wait_event("stream_opened", start=mark)  # taken while the client is away
        client.signal(signal.SIGCONT)
        assert held.recv(4) == b"held"
        tunnel.server.wait_event("channel_resumed")
        held.close()
    finally:
        for proc in tunnel.clients:
            proc.signal(signal.SIGCONT)
        tunnel.close()


def test_past_the_resume_window_the_streams_reset_and_the_port_is_freed(echo, ports):
    tunnel = Tunnel(server_args=(*FAST, "--resume-timeout", "1"))
    try:
        fixed = ports.take()
        first, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        app = socket.create_connection(("127.0.0.1", fixed))
        app.sendall(b"z")
        assert app.recv(1) == b"z"
        first.signal(signal.SIGSTOP)
        held = socket.create_connection(("127.0.0.1", fixed), timeout=10)
        tunnel.server.wait_event("channel_down", reason=re.compile("resume window expired"),
                                 timeout=10)  # fmt: skip
        assert ends_within(app, 5) and ends_within(held, 5)
        _second, forwards = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        assert forwards[0][1] == fixed
        assert echo_once(fixed) == b"ping"
        first.signal(signal.SIGCONT)
        first.wait_event("resume_failed", timeout=15)
        app.close()
        held.close()
    finally:
        for proc in tunnel.clients:
            proc.signal(signal.SIGCONT)
        tunnel.close()


def test_a_stream_holds_at_most_its_window_during_an_outage(tmp_path: Path):
    """An application keeps writing while the server is gone: the client reads one
    window of it and stops, so its memory does not follow the writer."""
    sink = ChaosTarget()
    tunnel = Tunnel(server_args=FAST)
    control = tmp_path / "client.sock"
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{sink.port}",
                                         extra=(*FAST, "--control", str(control)))  # fmt: skip
        app = socket.create_connection(("127.0.0.1", forwards[0][1]))
        app.sendall(struct.pack(">QQ", 0, 1))
        tunnel.server.signal(signal.SIGSTOP)
        client.wait_event("channel_suspended")
        rss_before = proc_status(client.pid, "VmRSS")
        app.setblocking(False)
        chunk = bytes(65536)
        pushed = 0
        deadline = time.monotonic() + 3  # a window in which memory would follow the writer
        while time.monotonic() < deadline:
            try:
                pushed += app.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
        stream = status(control)["channels"][0]["streams"][0]
        report = status(control)["channels"][0]
        assert report["state"] == "suspended" and 0 < report["resume_left"] <= 30
        text = command("status", "--control", str(control)).stdout
        assert re.search(r"suspended for \S+ \(waiting for a resume, \S+ left\)", text), text
        assert stream["in_flight"] <= stream["window"] == 262144
        assert stream["bytes_sent"] <= stream["window"] + 16
        growth = proc_status(client.pid, "VmRSS") - rss_before
        assert growth < 2048, f"client RSS grew {growth} KiB while {pushed} bytes were pushed"
    finally:
        tunnel.server.signal(signal.SIGCONT)
        tunnel.close()
        sink.close()


def test_a_client_falls_back_to_no_resume_against_an_older_server():
    """A server from before resume fails a five-word HELLO; the client says so
    once and connects without offering resume."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    hellos: list[bytes] = []
    done = threading.Event()

    def older_server() -> None:
        for attempt in range(2):
            conn, _ = listener.accept()
            with conn:
                conn.sendall(encode_frame(0, 1, b"HELLO 1 262144 65536"))
                data = b""
                while b"HELLO" not in data or len(data) < 9 + int.from_bytes(data[:4], "big"):
                    data += conn.recv(4096)
                hellos.append(data[9 : 9 + int.from_bytes(data[:4], "big")])
                if attempt == 0:
                    conn.sendall(encode_frame(0, 1, b"ERROR HELLO takes 3..4 arguments, got 5"))
                else:
                    done.wait(10)  # the second connection stays up until the test is done

    thread = threading.Thread(target=older_server, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", "-R", "0:127.0.0.1:9"])
    try:
        client.wait_event("resume_unsupported")
        assert wait_until(lambda: len(hellos) == 2)
        assert [len(hello.split()) - 1 for hello in hellos] == [5, 4]  # arguments
        assert hellos[0].endswith(b" resume")
        assert client.count_event("resume_unsupported") == 1
    finally:
        done.set()
        thread.join(10)
        client.stop()
        listener.close()


def test_a_local_connection_during_an_outage_is_held_until_the_resume(echo):
    """The server freezes: keepalive notices, reconnects time out in the handshake
    and are tried again, and a connection to the -L port meanwhile is held, then
    carried once the server is back."""
    tunnel = Tunnel(server_args=FAST)
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", extra=FAST)
        tunnel.server.signal(signal.SIGSTOP)
        client.wait_event("channel_suspended", reason=re.compile("keepalive timeout"))
        held = socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=20)
        held.sendall(b"held")
        client.wait_event("resume_retry", timeout=10)  # a keepalive or handshake timeout
        tunnel.server.signal(signal.SIGCONT)
        assert held.recv(4) == b"held"
        client.wait_event("channel_resumed")
        held.close()
    finally:
        tunnel.server.signal(signal.SIGCONT)
        tunnel.close()


def test_a_resume_replaces_a_connection_the_server_still_thinks_alive(echo):
    """A silent cut: the client notices (fast keepalive), the server does not (slow
    keepalive).  The client's valid resume wins over the stale connection."""
    tunnel = Tunnel(server_args=("--keepalive-interval", "30"))
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{echo.port}", *FAST)
        port = client.forwards(1)[0][1]
        app = socket.create_connection(("127.0.0.1", port), timeout=10)
        app.sendall(b"one")
        assert app.recv(3) == b"one"
        relay.freeze()
        client.wait_event("channel_suspended", reason=re.compile("keepalive timeout"))
        # The server learns of the loss only from the resume that replaces the connection.
        tunnel.server.wait_event("channel_suspended")
        tunnel.server.wait_event("channel_resumed")
        app.sendall(b"two")
        assert app.recv(3) == b"two"
        app.close()
    finally:
        relay.close()
        tunnel.close()


def test_a_suspended_session_keeps_its_channel_slot(echo):
    """--max-channels counts sessions waiting for a resume: a new client is refused
    while one waits, and the waiting client can still come back."""
    tunnel = Tunnel(server_args=(*FAST, "--max-channels", "1"))
    try:
        first, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", extra=FAST)
        first.signal(signal.SIGSTOP)
        tunnel.server.wait_event("channel_suspended")
        second = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                                    "-L", f"0:127.0.0.1:{echo.port}", *FAST])  # fmt: skip
        tunnel.clients.append(second)
        tunnel.server.wait_event("channel_refused")  # the waiting session holds the slot
        second.wait_event("channel_down")
        first.signal(signal.SIGCONT)
        first.wait_event("channel_resumed", timeout=15)
        assert echo_once(forwards[0][1]) == b"ping"
    finally:
        for proc in tunnel.clients:
            proc.signal(signal.SIGCONT)
        tunnel.close()


def test_a_socks_request_during_an_outage_is_answered_after_the_resume(echo):
    """-D: the SOCKS negotiation runs while the channel is down; its reply waits for
    the server's SYN OK, which comes after the resume."""
    from support import socks5_connect

    tunnel = Tunnel(server_args=FAST)
    try:
        client, forwards = tunnel.client("-D", "0", extra=(*FAST, "-v"))  # -v: stream events
        tunnel.server.signal(signal.SIGSTOP)
        client.wait_event("channel_suspended")
        mark = client.mark
        result: list[tuple[socket.socket, int]] = []
        thread = threading.Thread(
            target=lambda: result.append(socks5_connect(forwards[0][1], "127.0.0.1", echo.port))
        )
        thread.start()
        client.wait_event("stream_opened", start=mark)  # the request is on its way (SYN)
        time.sleep(0.5)  # a window in which a reply sent before the server's SYN OK would come
        assert not result, "answered before the channel was back"
        tunnel.server.signal(signal.SIGCONT)
        thread.join(20)
        sock, code = result[0]
        assert code == 0
        sock.sendall(b"through socks")
        assert recv_exactly(sock, 13) == b"through socks"
        sock.close()
        client.wait_event("channel_resumed")
    finally:
        tunnel.server.signal(signal.SIGCONT)
        tunnel.close()


def test_a_restarted_client_gets_its_remote_port_back_at_once(echo, ports):
    """kill -9 and restart (autossh, systemd Restart=): the new process cannot resume
    the old session (it lost its key), and its -R port must not wait for the old
    session's resume window."""
    tunnel = Tunnel(server_args=FAST)
    try:
        fixed = ports.take()
        first, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        first.kill()
        tunnel.server.wait_event("channel_suspended")
        _second, forwards = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=FAST)
        assert forwards[0][1] == fixed
        tunnel.server.wait_event("session_replaced")
        assert tunnel.server.events("mapping_refused") == []
        assert echo_once(fixed) == b"ping"
    finally:
        tunnel.close()


def test_a_waiting_session_keeps_its_port_from_another_named_client(tmp_path, echo, ports):
    """With a clients file, "the same client" is the same name: bob cannot end
    alice's waiting session by asking for her -R port, while a restarted alice can."""
    from certs import secret_file

    clients = secret_file(tmp_path, "clients.toml", (
        '[clients.alice]\nsecret = "alice secret, long enough"\n'
        '[clients.bob]\nsecret = "bob secret, long enough too"\n'))  # fmt: skip
    alice = ("--secret-file", str(secret_file(tmp_path, "alice", "alice secret, long enough")),
             "--name", "alice", *FAST)  # fmt: skip
    bob = ("--secret-file", str(secret_file(tmp_path, "bob", "bob secret, long enough too")),
           "--name", "bob", *FAST)  # fmt: skip
    tunnel = Tunnel(server_args=("--clients-file", str(clients), *FAST))
    try:
        fixed = ports.take()
        first, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=alice)
        first.kill()
        tunnel.server.wait_event("channel_suspended")
        other, _ = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", expect=0, extra=bob)
        other.wait_event("forward_refused", mapping=f"-R {fixed}:127.0.0.1:{echo.port}")
        assert tunnel.server.events("session_replaced") == []
        other.stop()
        _again, forwards = tunnel.client("-R", f"{fixed}:127.0.0.1:{echo.port}", extra=alice)
        assert forwards[0][1] == fixed
        assert echo_once(fixed) == b"ping"
    finally:
        tunnel.close()


def test_a_server_without_resume_says_why_the_streams_reset(echo):
    """--resume-timeout 0 on the server only: a cut resets the streams, and the
    client's log says resume was off there."""
    tunnel = Tunnel(server_args=("--resume-timeout", "0"))
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{echo.port}")
        port = client.forwards(1)[0][1]
        app = socket.create_connection(("127.0.0.1", port), timeout=10)
        app.sendall(b"x")
        assert app.recv(1) == b"x"
        relay.cut()
        assert ends_within(app, 5)
        client.wait_event("channel_down", reason=re.compile("--resume-timeout is 0"))
        app.close()
    finally:
        relay.close()
        tunnel.close()
