"""What the log says, seen as a user sees it: real processes, real peers.

The tests find each line by its event and check the facts it must carry (what
the peer turned out to be, which stream and mapping failed), not its wording."""

from __future__ import annotations

import functools
import http.server
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import MuxProcess, PortHolder, gave_up, parse_event, recv_exactly

import reactor_mux.__main__
from reactor_mux.tools.targets import ThreadedTCPServer

pytestmark = pytest.mark.codec_independent

FAST = ("--reconnect-min", "0.1", "--reconnect-max", "0.2")


class BannerServer(ThreadedTCPServer):
    """Sends ``banner`` as soon as it accepts, as an SSH or SMTP server does."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        conn.sendall(self.banner)
        conn.recv(1024)


def client_of(port: int, *extra: str) -> MuxProcess:
    return MuxProcess(
        ["client", "--server", f"127.0.0.1:{port}", "-L", "0:127.0.0.1:9", *FAST, *extra]
    )


def test_an_ssh_server_is_named_as_such():
    ssh = BannerServer(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    client = client_of(ssh.port)
    try:
        down = gave_up(client, "server_unusable", peer=f"127.0.0.1:{ssh.port}")
        assert "SSH" in down["reason"], down
    finally:
        client.stop()
        ssh.close()
    assert "Traceback" not in client.log


def test_with_persist_a_server_that_is_not_reactor_mux_is_retried():
    """A service keeps trying: the address may hold a reactor-mux server again later."""
    ssh = BannerServer(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    client = client_of(ssh.port, "--persist")
    try:
        for _ in range(2):
            down = client.wait_event("channel_down", start=client.mark)
            assert "SSH" in down["reason"] and down["delay"] is not None, down
        assert client.proc.poll() is None, client.log
    finally:
        assert client.stop() == 0
        ssh.close()


class BadRequestServer(ThreadedTCPServer):
    """Answers whatever arrives with a 400, as nginx does at once for a request
    line it cannot parse."""

    def handle(self, conn: socket.socket) -> None:
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_an_http_server_is_named_as_such():
    web = BadRequestServer()
    client = client_of(web.port)
    try:
        down = gave_up(client, "server_unusable", peer=f"127.0.0.1:{web.port}")
        assert "HTTP" in down["reason"], down
    finally:
        client.stop()
        web.close()


def test_a_server_that_says_nothing_is_called_out():
    """A server that waits for its client to speak first (Python's http.server waits
    for a whole request line) sends nothing: the handshake timeout says so."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory="/nonexistent")
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    client = client_of(web.server_address[1], "--handshake-timeout", "1")
    try:
        down = client.wait_event("channel_down", peer=f"127.0.0.1:{web.server_address[1]}")
        assert "sent nothing" in down["reason"] and "HELLO" in down["reason"], down
    finally:
        client.stop()
        web.shutdown()
        web.server_close()


def test_each_attempt_is_announced_and_quiet_mode_still_reports_the_outage():
    with PortHolder() as ports:
        dead = ports.take()
        loud = client_of(dead)
        quiet = client_of(dead, "-q")
        try:
            loud.wait_events("connecting", 6, timeout=15)
            quiet.wait_event("channel_down")
        finally:
            loud.stop()
            quiet.stop()
    assert loud.count_event("channel_down", peer=f"127.0.0.1:{dead}") >= 5
    # -q: errors only, and an outage is an error once per OUTAGE_REPORT_INTERVAL.
    [down] = quiet.events()
    assert down["event"] == "channel_down" and down["level"] == "error", quiet.log


def test_a_remote_target_failure_names_its_stream_and_mapping(tunnel):
    with PortHolder() as ports:
        closed = ports.take()
        client, forwards = tunnel.client("-R", f"0:127.0.0.1:{closed}")
        with socket.create_connection(("127.0.0.1", forwards[0][1]), timeout=5) as conn:
            conn.settimeout(5)
            try:
                assert conn.recv(10) == b""
            except ConnectionResetError:
                pass
        failed = client.wait_event("connect_failed", mapping=f"-R 0:127.0.0.1:{closed}",
                                   peer=f"127.0.0.1:{closed}")  # fmt: skip
        assert failed["stream"] is not None and failed["reason"], failed


def test_sighup_is_logged_and_drains(tunnel, echo):
    client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
    client.signal(signal.SIGHUP)
    client.wait_event("draining", reason="SIGHUP")
    assert client.proc.wait(15) == 0
    assert tunnel.server.wait_event("channel_down")["level"] == "info"  # an orderly close


MAIN = Path(reactor_mux.__main__.__file__)
QUIET_FROM = next(number for number, line in enumerate(MAIN.read_text().splitlines(), 1)
                  if line.startswith("signal.signal(signal.SIGINT"))  # fmt: skip


def before_our_code(err: str) -> bool:
    """A traceback from Python's own start-up (site.py, runpy), or from the lines of
    reactor_mux/__main__.py before the one that hands Ctrl-C to the default action:
    nothing a program can do about those."""
    frames = re.findall(r'File "([^"]+)", line (\d+)', err)
    ours = [(path, int(line)) for path, line in frames if "/reactor_mux/" in path]
    return all(path.endswith("__main__.py") and line <= QUIET_FROM for path, line in ours)


def test_ctrl_c_at_any_moment_of_startup_never_prints_a_traceback(echo):
    """SIGINT at a spread of moments from exec to running: never a traceback, and
    never lost (the client always ends)."""
    for delay in (0.0, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.18, 0.25, 0.35, 0.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor_mux", "client", "--server", "127.0.0.1:9",
             "-L", f"0:127.0.0.1:{echo.port}", *FAST],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
            if "Exception ignored" in err and "KeyboardInterrupt" in err and before_our_code(err):
                # Python raised it inside a finalizer during its own start-up and
                # dropped it there, before our first line could take Ctrl-C over.
                continue
            raise AssertionError(f"SIGINT after {delay}s was lost: it kept running; "
                                 f"stderr:\n{err}") from None  # fmt: skip
        if "Traceback" in err or "init_import_site" in err:
            assert before_our_code(err), (delay, err)
            continue
        # -SIGINT: the default action, which reactor_mux/__main__.py restores first thing.
        assert proc.returncode in (0, 130, -signal.SIGINT), (delay, proc.returncode, err)


def test_under_nohup_a_hangup_is_left_alone(tunnel, echo):
    """Started with SIGHUP ignored (``nohup``), the client keeps it ignored, as ssh does."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactor_mux", "client", "--server",
         f"127.0.0.1:{tunnel.server_port}", "-L", f"0:127.0.0.1:{echo.port}",
         "--log-format", "json"],
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )  # fmt: skip
    try:
        tunnel.server.wait_event("channel_up")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)  # a window in which a hangup that was not ignored would stop it
        assert proc.poll() is None, "a hangup under nohup stopped the client"
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    events = [event for event in map(parse_event, err.splitlines()) if event is not None]
    assert [event["reason"] for event in events if event["event"] == "draining"] == ["SIGTERM"]


def _loopback_v6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _loopback_v6(), reason="no IPv6 loopback")
def test_both_ends_name_every_address_an_r_forward_listens_on(tunnel, echo):
    """The server binds ``localhost`` on 127.0.0.1 and ::1; its log says so, and so
    does the client's, told by ``BIND OK localhost:PORT``."""
    client, [(_, _, _)] = tunnel.client("-R", f"0:127.0.0.1:{echo.port}")
    up = tunnel.server.wait_event("mapping_up", mapping=re.compile("^-R "))
    port = int(up["mapping"].rsplit(":", 1)[1])
    assert up["address"] == f"127.0.0.1:{port} and [::1]:{port}", up
    assert f"forwarding -R 127.0.0.1:{port} and [::1]:{port} -> client" in up["message"]
    told = client.wait_event("forward_up")
    assert told["address"] == f"127.0.0.1:{port} and [::1]:{port}", told
    assert f"forwarding -R 127.0.0.1:{port} and [::1]:{port} -> 127.0.0.1:" in told["message"]
    for host in ("127.0.0.1", "::1"):
        with socket.create_connection((host, port), timeout=10) as conn:
            conn.sendall(b"both")
            assert recv_exactly(conn, 4) == b"both"
    client.stop()
