"""``--control``: ``reactor-mux status``, ``reload`` and ``forward add|cancel``
against running processes, and the socket's own limits and permissions."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from support import MuxProcess, PortHolder, drain, echo_once, payload, recv_exactly, sha, wait_until

from reactor_mux.service.control import MAX_CONTROL_CONNECTIONS, MAX_CONTROL_REQUEST

pytestmark = pytest.mark.codec_independent


def command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor_mux", *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def status(path: Path) -> dict:  # type: ignore[type-arg]
    done = command("status", "--json", "--control", str(path))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def request(path: Path, raw: bytes) -> dict:  # type: ignore[type-arg]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(raw)
        return json.loads(_read_all(sock))  # type: ignore[no-any-return]


def test_status_shows_channels_mappings_and_a_live_stream(tunnel, hash_target, tmp_path: Path):
    control = tmp_path / "client.sock"
    client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                           extra=("--control", str(control)))  # fmt: skip
    assert stat.S_IMODE(os.stat(control).st_mode) == 0o600
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        conn.sendall(struct.pack(">QQ", 300_000, 5) + payload(6, 100_000))
        assert recv_exactly(conn, 300_000) == payload(5, 300_000)
        local = conn.getsockname()
        assert wait_until(lambda: status(control)["channels"][0]["streams"][0]["bytes_sent"]
                          == 100_016)  # fmt: skip
        report = status(control)
        assert report["role"] == "client" and report["pid"] == client.pid
        [forward] = report["forwards"]
        assert forward["forward"] == f"-L 0:127.0.0.1:{hash_target.port}"
        assert {"host": "127.0.0.1", "port": port} in forward["listening"]  # data, not display
        [channel] = report["channels"]
        assert channel["state"] == "open" and channel["peer"] == f"127.0.0.1:{tunnel.server_port}"
        [stream] = channel["streams"]
        assert stream["peer"] == f"{local[0]}:{local[1]}"
        assert stream["mapping"] == forward["forward"]
        assert stream["bytes_received"] == 300_000
        assert 0 <= stream["in_flight"] <= stream["window"] and stream["window"] > 0
        assert stream["buffered"] >= 0 and stream["age"] >= 0
        text = command("status", "--control", str(control))
        assert text.returncode == 0
        assert f"stream {stream['id']} {forward['forward']} peer {stream['peer']}" in text.stdout
        assert "sent 100016 B, received 300000 B" in text.stdout
        conn.shutdown(socket.SHUT_WR)
        assert drain(conn) == (0, sha(b""))


def test_the_server_status_names_each_client_and_its_mappings(hash_target, tmp_path: Path):
    control = tmp_path / "server.sock"
    server = MuxProcess(["server", "--listen", "127.0.0.1:0", "--control", str(control)])
    client = None
    try:
        port = server.listening_port()
        forwards = ["-L", f"0:127.0.0.1:{hash_target.port}", "-R", "0:127.0.0.1:9"]
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", *forwards])
        client.forwards(2, timeout=15)
        report = status(control)
        assert report["role"] == "server"
        assert report["listening"] == [{"host": "127.0.0.1", "port": port}]
        [channel] = report["channels"]
        assert channel["mappings"][0] == f"-L 127.0.0.1:{hash_target.port}"
        assert channel["mappings"][1].startswith("-R 127.0.0.1:")
    finally:
        for proc in (client, server):
            if proc is not None:
                assert proc.stop() == 0
    assert not control.exists()  # removed on the way out


def test_forward_add_and_cancel_change_a_running_client(tunnel, echo, tmp_path: Path):
    control = tmp_path / "client.sock"
    client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", extra=("--control", str(control)))
    with PortHolder() as ports:
        port = ports.take()
        spec = f"127.0.0.1:{port}:127.0.0.1:{echo.port}"
        added = command("forward", "add", "-L", spec, "--control", str(control))
        assert added.returncode == 0 and added.stdout.strip() == f"-L {spec} added"
        client.wait_event("forward_up", mapping=f"-L {spec}")
        assert echo_once(port, b"added") == b"added"
        again = command("forward", "add", "-L", spec, "--control", str(control))
        assert again.returncode == 1 and "is already forwarded" in again.stderr
        cancelled = command("forward", "cancel", "-L", spec, "--control", str(control))
        assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        gone = command("forward", "cancel", "-L", spec, "--control", str(control))
        assert gone.returncode == 1 and "is not forwarded" in gone.stderr
    reload = command("reload", "--control", str(control))
    assert reload.returncode == 1 and "started without --config" in reload.stderr
    assert tunnel.server.count_event("channel_up") == 1


def test_reload_through_the_control_socket(tunnel, echo, tmp_path: Path):
    control, config = tmp_path / "client.sock", tmp_path / "client.toml"
    config.write_text(f'server = "127.0.0.1:{tunnel.server_port}"\n'
                      f'local-forward = ["0:127.0.0.1:{echo.port}"]\n')  # fmt: skip
    client = MuxProcess(["client", "--config", str(config), "--control", str(control)])
    tunnel.clients.append(client)
    client.forwards(1, timeout=15)
    config.write_text(config.read_text() + f'remote-forward = ["0:127.0.0.1:{echo.port}"]\n')
    done = command("reload", "--control", str(control))
    assert done.returncode == 0 and done.stdout.startswith("reloaded"), done.stderr
    client.wait_event("forward_up", mapping=f"-R 0:127.0.0.1:{echo.port}")
    config.write_text("local-forward = [\n")
    failed = command("reload", "--control", str(control))
    assert failed.returncode == 1 and "the running configuration stays" in failed.stderr


def test_a_dead_socket_is_replaced_and_a_live_one_is_not(tmp_path: Path):
    control = tmp_path / "server.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(control))
    dead.close()  # the file stays, nobody answers: what a killed process leaves
    first = MuxProcess(["server", "--listen", "127.0.0.1:0", "--control", str(control)])
    try:
        first.listening_port()
        second = command("server", "--listen", "127.0.0.1:0", "--control", str(control))
        assert second.returncode == 1
        assert f"--control {control} is in use by another process" in second.stderr
        assert status(control)["pid"] == first.pid  # the second did not take it over
    finally:
        assert first.stop() == 0
    control.write_text("not a socket")
    third = command("server", "--listen", "127.0.0.1:0", "--control", str(control))
    assert third.returncode == 1 and "exists and is not a socket" in third.stderr


def test_bad_requests_get_an_error_answer(tmp_path: Path):
    control = tmp_path / "server.sock"
    server = MuxProcess(["server", "--listen", "127.0.0.1:0", "--control", str(control)])
    try:
        server.listening_port()
        assert request(control, b"{not json\n")["error"].startswith("bad request")
        assert (
            "unknown command 'frobnicate'"
            in request(control, b'{"command": "frobnicate"}\n')["error"]
        )
        assert "for a client" in request(control, b'{"command": "forward", "action": "add", '
                                         b'"forward": ["-L", "1:h:2"]}\n')["error"]  # fmt: skip
        long = request(control, b"x" * (MAX_CONTROL_REQUEST + 100))
        assert long == {"ok": False, "error": f"request longer than {MAX_CONTROL_REQUEST} bytes"}
        assert status(control)["role"] == "server"  # and it still answers
    finally:
        assert server.stop() == 0
    assert "Traceback" not in server.log


def test_connections_beyond_the_limit_are_closed_and_room_comes_back(tmp_path: Path):
    control = tmp_path / "server.sock"
    server = MuxProcess(["server", "--listen", "127.0.0.1:0", "--control", str(control)])
    idle: list[socket.socket] = []
    try:
        server.listening_port()
        for _ in range(MAX_CONTROL_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(str(control))
            idle.append(sock)
        # The process accepts connections in the order they were made: once it turns
        # one away, it holds all the others.
        extra = socket.socket(socket.AF_UNIX)
        extra.settimeout(5)
        extra.connect(str(control))
        assert extra.recv(100) == b""  # closed at once, without an answer
        extra.close()
        server.wait_event("too_many_connections")
        idle.pop().close()
        assert wait_until(lambda: _answers(control))
    finally:
        for sock in idle:
            sock.close()
        assert server.stop() == 0


def _answers(control: Path) -> bool:
    try:
        return bool(request(control, b'{"command": "status"}\n')["ok"])
    except (OSError, ValueError):
        return False


def test_a_refused_forward_shows_in_status_and_does_not_end_the_client(echo, tmp_path: Path):
    """--exit-on-forward-failure is about start-up: a forward added later that the
    server refuses is reported in status, and the client keeps running."""
    control = tmp_path / "client.sock"
    server = MuxProcess(["server", "--listen", "127.0.0.1:0",
                                "--allow-bind", "127.0.0.1:1-2"])  # fmt: skip
    client = None
    try:
        port = server.listening_port()
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                    "--exit-on-forward-failure", "--control", str(control),
                                    "-L", f"0:127.0.0.1:{echo.port}"])  # fmt: skip
        client.forwards(1, timeout=15)
        spec = f"127.0.0.1:0:127.0.0.1:{echo.port}"
        assert command("forward", "add", "-R", spec, "--control", str(control)).returncode == 0
        client.wait_event("forward_refused", mapping=f"-R {spec}")
        states = {forward["forward"]: forward["state"] for forward in status(control)["forwards"]}
        assert states[f"-L 0:127.0.0.1:{echo.port}"] == "forwarding"
        assert states[f"-R {spec}"].startswith("refused by the server: 127.0.0.1:0 is not allowed")
        text = command("status", "--control", str(control)).stdout
        assert f"forward -R {spec}: refused by the server" in text
        # Still running, and still answering (an exit would have come with the refusal).
        assert status(control)["role"] == "client"
        assert client.proc.poll() is None
    finally:
        for proc in (client, server):
            if proc is not None:
                assert proc.stop() == 0


def test_nothing_is_added_or_reloaded_while_draining(tunnel, echo, tmp_path: Path):
    control = tmp_path / "client.sock"
    client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{echo.port}",
                                           extra=("--control", str(control), "--drain-timeout",
                                                  "20"))  # fmt: skip
    with socket.create_connection(("127.0.0.1", port), timeout=10) as held:  # keeps it draining
        held.sendall(b"x")
        assert held.recv(1) == b"x"
        client.signal(signal.SIGTERM)
        client.wait_event("draining", reason="SIGTERM")
        added = command("forward", "add", "-L", f"0:127.0.0.1:{echo.port}", "--control",
                        str(control))  # fmt: skip
        assert added.returncode == 1 and "shutting down" in added.stderr
        assert status(control)["role"] == "client"  # status still answers


# ------------------------------------------- the default socket (no --control)


def in_runtime_dir(runtime: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor_mux", *args], capture_output=True,
                          text=True, timeout=30,
                          env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)})  # fmt: skip


def test_without_control_status_finds_every_process_of_the_user(tmp_path: Path, echo):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(runtime)}
    server = MuxProcess(["server", "--listen", "127.0.0.1:0"], env=env)
    clients: list[MuxProcess] = []
    try:
        port = server.listening_port()
        for _ in range(2):
            clients.append(MuxProcess(["client", f"127.0.0.1:{port}", "-L",
                                       f"0:127.0.0.1:{echo.port}"], env=env))  # fmt: skip
            clients[-1].forwards(1, timeout=15)
        directory = runtime / "reactor-mux"
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        sockets = sorted(directory.iterdir())
        assert [path.name for path in sockets] == sorted(
            [f"server-{server.pid}.sock", *(f"client-{c.pid}.sock" for c in clients)]
        )
        assert all(stat.S_IMODE(path.stat().st_mode) == 0o600 for path in sockets)
        listed = in_runtime_dir(runtime, "status", "--json")
        assert listed.returncode == 0, listed.stderr
        reports = json.loads(listed.stdout)
        assert [r["pid"] for r in reports] == sorted([server.pid, *(c.pid for c in clients)])
        [served] = [r for r in reports if r["role"] == "server"]
        assert served["listening"] == [{"host": "127.0.0.1", "port": port}]
        assert served["control"] == str(directory / f"server-{server.pid}.sock")
        text = in_runtime_dir(runtime, "status")
        assert text.stdout.count("reactor-mux client") == 2 and "reactor-mux server" in text.stdout
        ambiguous = in_runtime_dir(runtime, "forward", "add", "-L", f"0:127.0.0.1:{echo.port}")
        assert ambiguous.returncode == 1 and "2 running: choose one with --control" in (
            ambiguous.stderr
        )
        clients.pop().kill()  # its socket stays behind: the next status removes it
        mark = clients[0].mark
        added = in_runtime_dir(runtime, "forward", "add", "-L", f"0:localhost:{echo.port}")
        assert added.returncode == 0, added.stderr
        assert len(list(directory.iterdir())) == 2
        [(_, new_port, _)] = clients[0].forwards(1, start=mark)
        assert echo_once(new_port, b"added without --control") == b"added without --control"
    finally:
        for proc in [*clients, server]:
            proc.stop()
    assert list((runtime / "reactor-mux").iterdir()) == []  # each removed its own
    nothing = in_runtime_dir(runtime, "status")
    assert nothing.returncode == 1 and "no running reactor-mux process" in nothing.stderr


def test_a_runtime_directory_others_can_enter_is_not_used(tmp_path: Path):
    runtime = tmp_path / "run"
    (runtime / "reactor-mux").mkdir(parents=True, mode=0o755)
    (runtime / "reactor-mux").chmod(0o755)
    server = MuxProcess(
        ["server", "--listen", "127.0.0.1:0"], env={"XDG_RUNTIME_DIR": str(runtime)}
    )
    try:
        server.listening_port()  # it runs all the same
        warned = server.wait_event("control_unavailable")
        assert "open to other users" in warned["reason"], warned
        assert list((runtime / "reactor-mux").iterdir()) == []
    finally:
        assert server.stop() == 0


def test_status_keeps_the_socket_of_a_stopped_process(tmp_path: Path, echo):
    """A process that does not answer (stopped, or busy) is not a dead one: only a
    refused connect from a pid that no longer exists removes its socket."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    server = MuxProcess(["server", "--listen", "127.0.0.1:0"],
                        env={"XDG_RUNTIME_DIR": str(runtime)})  # fmt: skip
    try:
        server.listening_port()
        sock = runtime / "reactor-mux" / f"server-{server.pid}.sock"
        assert sock.exists()
        server.signal(signal.SIGSTOP)
        try:
            listed = in_runtime_dir(runtime, "status")
            assert listed.returncode == 1  # it did not answer in time: nothing to list
            assert sock.exists()
        finally:
            server.signal(signal.SIGCONT)
        listed = in_runtime_dir(runtime, "status", "--json")
        assert [r["pid"] for r in json.loads(listed.stdout)] == [server.pid]
    finally:
        assert server.stop() == 0
