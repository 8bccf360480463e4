"""What connections that never authenticate cost a server: the ``H`` of docs/limits.md.

    python bench/startup_memory.py [N]                 # default 200 held, 3,000 churned
    REACTOR_MUX_CODEC=python python bench/startup_memory.py
    python bench/startup_memory.py --python OLD/.venv/bin/python   # a checkout without
                                                                   # the admission options

Three figures, each from a server of its own with a secret (admission lifted so
every connection is served):

* *held*: N connections that stay in their handshake (TLS ones finish the TLS
  handshake and then say nothing), the server's RSS growth per connection;
* *churned*: N x 15 connections that connect and close one after another, the
  server's RSS before, after each thousand, and at the end (a closed channel
  must give its memory back, not wait for the garbage collector);
* *pinging*: N / 10 TLS connections that say HELLO, then send PINGs for 8 s and
  never read the PONGs: the server's peak RSS growth per connection, and how
  many it cut off (``HANDSHAKE_REPLY_BACKLOG``, ``STRANGER_SEND_BACKLOG``).
"""

from __future__ import annotations

import argparse
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from reactor_mux.protocol.frames import KIND_COMMAND, encode_frame
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import Role
from reactor_mux.tools.procs import ReactorMuxProcess, proc_status

ADMIT_ALL = ("--max-startups", "100000", "--per-source-max-startups", "100000",
             "--per-source-penalties", "off", "--handshake-timeout", "600")  # fmt: skip


PYTHON: str | None = None
"""Another checkout's interpreter (``--python``): it runs without ADMIT_ALL."""


def server(work: Path, tls: bool) -> ReactorMuxProcess:
    secret = work / "secret"
    secret.write_text("a secret long enough to be accepted\n")
    secret.chmod(0o600)
    args = ["server", "--listen", "127.0.0.1:0", "--secret-file", str(secret)]
    args += ["--max-channels", "100000"] if PYTHON else ADMIT_ALL
    if tls:
        cert, key = work / "s.pem", work / "s.key"
        keygen = [PYTHON or sys.executable, "-m", "reactor_mux", "keygen"]
        subprocess.run([*keygen, "--cert", str(cert), "--key", str(key)], check=True,
                       capture_output=True)  # fmt: skip
        args += ["--tls-cert", str(cert), "--tls-key", str(key)]
    return ReactorMuxProcess(args, python=PYTHON)


def held(count: int, tls: bool) -> float:
    with tempfile.TemporaryDirectory() as work:
        proc = server(Path(work), tls)
        try:
            port = proc.listening_port()
            time.sleep(0.5)
            before = proc_status(proc.pid, "VmRSS")
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conns = []
            for _ in range(count):
                conn = socket.create_connection(("127.0.0.1", port))
                conns.append(context.wrap_socket(conn) if tls else conn)
            time.sleep(1.0)
            grown = proc_status(proc.pid, "VmRSS") - before
            for conn in conns:
                conn.close()
            return grown / count
        finally:
            proc.stop()


def churned(count: int) -> list[int]:
    with tempfile.TemporaryDirectory() as work:
        proc = server(Path(work), tls=False)
        try:
            port = proc.listening_port()
            time.sleep(0.5)
            figures = [proc_status(proc.pid, "VmRSS") // 1024]
            for index in range(1, count + 1):
                socket.create_connection(("127.0.0.1", port)).close()
                if index % 1000 == 0:
                    time.sleep(0.2)
                    figures.append(proc_status(proc.pid, "VmRSS") // 1024)
            time.sleep(2.0)
            figures.append(proc_status(proc.pid, "VmRSS") // 1024)
            return figures
        finally:
            proc.stop()


def pinging(count: int, seconds: float = 8.0) -> tuple[float, int]:
    """(peak RSS growth per connection in KiB, connections the server cut off)."""
    hello = Session(Role.CLIENT, client_id="startup-memory-bench").data_to_send()
    pings = encode_frame(0, KIND_COMMAND, b"PING 1") * 4096
    with tempfile.TemporaryDirectory() as work:
        proc = server(Path(work), tls=True)
        try:
            port = proc.listening_port()
            time.sleep(0.5)
            before = proc_status(proc.pid, "VmRSS")
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            conns = []
            for _ in range(count):
                raw = socket.socket()
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing
                raw.connect(("127.0.0.1", port))
                conn = context.wrap_socket(raw)
                conn.sendall(hello)
                conn.setblocking(False)
                conns.append(conn)
            alive, peak, deadline = set(conns), 0, time.monotonic() + seconds
            while alive and time.monotonic() < deadline:
                for conn in list(alive):
                    try:
                        conn.send(pings)
                    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                    except OSError:
                        alive.discard(conn)
                peak = max(peak, proc_status(proc.pid, "VmRSS") - before)
                time.sleep(0.01)
            for conn in conns:
                conn.close()
            return peak / count, count - len(alive)
        finally:
            proc.stop()


def main(count: int) -> None:
    for tls in (False, True):
        print(f"held ({'TLS' if tls else 'plaintext'}): {held(count, tls):.0f} KiB a connection")
    strangers = max(count // 10, 1)
    per_connection, cut = pinging(strangers)
    print(f"pinging (TLS, {strangers} never reading): peak {per_connection:.0f} KiB a "
          f"connection; {cut} cut off")  # fmt: skip
    figures = churned(count * 15)
    steps = ", ".join(f"{mib}" for mib in figures[1:-1])
    print(f"churned {count * 15:,}: RSS {figures[0]} MiB before; after each thousand: {steps}; "
          f"at the end {figures[-1]} MiB")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", type=int, nargs="?", default=200)
    parser.add_argument("--python", help="run another checkout's reactor_mux")
    options = parser.parse_args()
    PYTHON = options.python
    main(options.count)
