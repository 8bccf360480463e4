"""A reconnect storm (issue 26, item 5): restart a server under N channels and
measure how long until every one is back.

One run: an echo target (bench/loadgen.py), a server with a shared secret (and
TLS with ``--tls``, a certificate from ``reactor-mux keygen``), and a swarm of N
channels (bench/swarm.py, ``--storm``).  Once all are up, the server is stopped
(SIGTERM, as ``systemctl restart`` does: it tells every channel it shuts down)
and started again on the same port; each channel reconnects on the client's own
jittered backoff, from an address of its own (127.x.y.1: a fleet's clients are
as many sources to the per-source limits and penalties).  The swarm reports
how long until all were back, how many attempts were told ``busy`` by the
admission limits, and the channels the new server took per second.

    python bench/storm.py --channels 10000 [--tls] [--remote] [--metrics 127.0.0.1:9797]

Prints the swarm's JSON, with the restart's gap (``restart_seconds``: from the
SIGTERM until the new server listens).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
SERVER = [sys.executable, "-m", "reactor_mux", "server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, extra: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A server on ``port`` logging to ``log``, once it listens (its log line)."""
    with log.open("wb") as sink:
        proc = subprocess.Popen([*SERVER, "--listen", f"127.0.0.1:{port}", *extra],
                                stderr=sink)  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if b"listening on" in log.read_bytes():
            return proc
        time.sleep(0.01)
    raise RuntimeError(f"the server did not listen: {log.read_text()[-2000:]}")


def host_port(text: str) -> str:
    """``--metrics``: checked before the first phase, not when the server restarts."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=1000, help="channels to restart under")
    parser.add_argument("--tls", action="store_true", help="TLS and a secret (else a secret)")
    parser.add_argument("--remote", action="store_true", help="an -R per channel too")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds the swarm may wait for each phase"
    )
    parser.add_argument("--metrics", metavar="HOST:PORT", type=host_port,
                        help="the restarted server's --metrics (to watch the admission "
                        "counters during the storm)")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        secret, cert, key = work / "secret", work / "cert.pem", work / "key.pem"
        keygen = [sys.executable, "-m", "reactor_mux", "keygen", "--secret", str(secret)]
        if args.tls:
            keygen += ["--cert", str(cert), "--key", str(key), "--name", "localhost"]
        subprocess.run(keygen, check=True, capture_output=True)
        extra = ["--secret-file", str(secret), "--max-channels", str(2 * args.channels)]
        swarm_tls: list[str] = []
        if args.tls:
            extra += ["--tls-cert", str(cert), "--tls-key", str(key)]
            swarm_tls = ["--tls", "--ca", str(cert), "--server-name", "localhost"]
        echo = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "echo"],
                                stderr=subprocess.PIPE)  # fmt: skip
        assert echo.stderr is not None
        target = echo.stderr.readline().decode().split()[-1]
        port = free_port()
        server = start_server(port, extra, work / "server1.log")
        swarm = subprocess.Popen(
            [sys.executable, str(HERE / "swarm.py"), "--server", f"127.0.0.1:{port}",
             "--secret-file", str(secret), "--target", target, "--channels",
             str(args.channels), "--idle", "0", "--storm", "--timeout", str(args.timeout),
             "--sources", str(args.channels),
             *swarm_tls, *(["--remote"] if args.remote else [])],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            assert swarm.stderr is not None and swarm.stdout is not None
            for line in swarm.stderr:
                if line.strip() == b"ready":
                    break
            else:
                raise RuntimeError("the swarm exited before all its channels were up")
            stopped = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            metrics = ["--metrics", args.metrics] if args.metrics else []
            server = start_server(port, [*extra, *metrics], work / "server2.log")
            restart = time.monotonic() - stopped
            report = json.loads(swarm.stdout.read())
            report["restart_seconds"] = round(restart, 2)
            report["tls"] = args.tls
            json.dump(report, sys.stdout)
            print()
        finally:
            for proc in (swarm, server, echo):
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()


if __name__ == "__main__":
    main()
