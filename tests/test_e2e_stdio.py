"""``client -W HOST:PORT`` (issue 23): standard input and output through the server,
checked by size and hash, from pipes and from files, the failures that end it with
status 255, and a real ssh session using it as its ProxyCommand."""

from __future__ import annotations

import hashlib
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
from sshd import SSH, SSHD, LocalSshd
from support import PortHolder, Tunnel, payload, sha

pytestmark = pytest.mark.codec_independent  # the stream is an ordinary one (tunnel tests)

SIZE = 3_000_000


def stdio_client(tunnel: Tunnel, target: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reactor_mux", "client", f"127.0.0.1:{tunnel.server_port}",
            "-W", target, *extra]  # fmt: skip


@pytest.fixture
def open_tunnel():  # type: ignore[no-untyped-def]
    tunnel = Tunnel(server_args=("--allow-connect", "127.0.0.1:*"))
    yield tunnel
    tunnel.close()


def test_pipes_carry_every_byte_both_ways_and_the_end(open_tunnel, echo):
    data = bytes(payload(2300, SIZE))
    done = subprocess.run(stdio_client(open_tunnel, f"127.0.0.1:{echo.port}"), input=data,
                          capture_output=True, timeout=60)  # fmt: skip
    assert (len(done.stdout), sha(done.stdout)) == (SIZE, sha(data))
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # -W logs errors only: the terminal is the ssh user's


def test_files_as_standard_input_and_output(open_tunnel, echo, tmp_path):
    source, copy = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(payload(2301, SIZE))
    with source.open("rb") as stdin, copy.open("wb") as stdout:
        done = subprocess.run(stdio_client(open_tunnel, f"127.0.0.1:{echo.port}"), stdin=stdin,
                              stdout=stdout, stderr=subprocess.PIPE, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert (copy.stat().st_size, digest) == (SIZE, hashlib.sha256(source.read_bytes()).hexdigest())


def test_a_refused_target_is_one_line_and_255(open_tunnel):
    with PortHolder() as ports:  # held, not listening: refused
        port = ports.take()
        done = subprocess.run(stdio_client(open_tunnel, f"127.0.0.1:{port}"),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)  # fmt: skip
    assert done.returncode == 255
    [line] = done.stderr.splitlines()
    assert f"-W 127.0.0.1:{port} failed: connect to 127.0.0.1:{port} failed" in line, line


def test_a_target_the_server_does_not_allow_is_one_line_and_255(echo):
    tunnel = Tunnel(server_args=("--allow-connect", "127.0.0.1:1"))
    try:
        done = subprocess.run(stdio_client(tunnel, f"127.0.0.1:{echo.port}"),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30)  # fmt: skip
    finally:
        tunnel.close()
    assert done.returncode == 255
    [line] = done.stderr.splitlines()
    assert "refused by server" in line and "not allowed" in line, line


def test_an_unreachable_server_is_tried_once():
    with PortHolder() as ports:
        port = ports.take()
        done = subprocess.run([sys.executable, "-m", "reactor_mux", "client", f"127.0.0.1:{port}",
                               "-W", "127.0.0.1:22"], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 255
    assert "giving up after 1 connection attempt" in done.stderr, done.stderr


def test_w_takes_the_whole_client():
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "client", "127.0.0.1",
                           "-W", "127.0.0.1:22", "-L", "1:h:2"],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2 and "-W takes the whole client" in done.stderr


@pytest.mark.skipif(SSHD is None or SSH is None, reason="needs sshd and ssh (openssh-server)")
def test_ssh_uses_it_as_its_proxy_command(open_tunnel):
    sshd = LocalSshd()
    try:
        proxy = shlex.join(stdio_client(open_tunnel, "%h:%p"))
        command = sshd.ssh_command(sshd.port, "head -c 1000000 /dev/zero | sha256sum; echo done")
        ssh = subprocess.run([command[0], "-o", f"ProxyCommand={proxy}", *command[1:]],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert ssh.returncode == 0, ssh.stderr
        zeros = hashlib.sha256(bytes(1_000_000)).hexdigest()
        assert ssh.stdout.split() == [zeros, "-", "done"], ssh.stdout
    finally:
        sshd.close()


def test_a_terminal_gets_its_flags_back_when_the_client_is_stopped(open_tunnel, echo):
    """-W makes standard input and output non-blocking; a terminal's flags are its
    shell's too, so a stop by signal must give them back (the shell would fail)."""
    controller, terminal = pty.openpty()
    try:
        command = stdio_client(open_tunnel, f"127.0.0.1:{echo.port}")
        client = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=subprocess.PIPE)
        os.write(controller, b"typed\n")
        deadline = time.monotonic() + 15
        echoed = b""
        while b"typed" not in echoed.replace(b"\r", b"").split(b"\n")[1:] and (
            time.monotonic() < deadline
        ):  # the terminal echoes the line once, the tunnel's echo target once more
            ready, _, _ = select.select([controller], [], [], 0.5)
            if ready:
                echoed += os.read(controller, 1024)
        assert echoed.count(b"typed") >= 2, echoed
        assert not os.get_blocking(terminal)  # -W's, while it runs
        client.send_signal(signal.SIGTERM)
        client.wait(15)
        assert os.get_blocking(terminal), "the terminal was left non-blocking"
    finally:
        os.close(controller)
        os.close(terminal)


def test_closed_standard_input_is_an_empty_one(open_tunnel, echo):
    """Started with ``<&-``: /dev/null takes descriptor 0, so -W sends nothing, the
    target ends, and the client exits 0 (not a loop on the reactor's own descriptor)."""
    done = subprocess.run(stdio_client(open_tunnel, f"127.0.0.1:{echo.port}"),
                          preexec_fn=lambda: os.close(0), capture_output=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"" and b"Traceback" not in done.stderr


def test_a_reader_that_stops_early_ends_it_cleanly(open_tunnel, echo):
    """``... -W host:port | head -c 10``: the reader closing its end is the end (status
    0), not a reset of the forwarded connection."""
    client = subprocess.Popen(stdio_client(open_tunnel, f"127.0.0.1:{echo.port}"),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    feeder = threading.Thread(target=_feed, args=(client.stdin,), daemon=True)
    feeder.start()
    assert client.stdout.read(10) == bytes(payload(2302, SIZE))[:10]
    client.stdout.close()
    assert client.wait(30) == 0, client.stderr.read() if client.stderr else ""


def _feed(pipe) -> None:  # type: ignore[no-untyped-def]
    try:
        pipe.write(payload(2302, SIZE))
        pipe.close()
    except OSError:
        pass  # the client ended first
