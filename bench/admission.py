"""Admission under attack: can clients get in, and resume, while a stranger floods?

    python bench/admission.py                          # every scenario, this checkout
    python bench/admission.py --python OLD/.venv/bin/python --attempt-timeout 5
    python bench/admission.py --only idle-1            # one scenario

For each scenario a hardened server (a secret, ``--max-channels 16``, TLS where
the scenario says) is flooded by ``tests/attacker.py`` (one process, as fast as
it goes, from 127.0.0.2 or from sixteen loopback addresses) while:

* ten clients start one after another, each must forward and echo a ping
  (``joined``: how many did, and the median time from start to forwarding);
* a client whose channel is cut (through a relay) must resume its open stream
  (``resumed``: how long after the cut, or ``no``);

and the server's log lines, descriptors, RSS growth and CPU are sampled.
``--python`` runs the server and clients of another checkout's venv (the
attacker and the measurements stay this checkout's), for a before/after table
in one run: the figures in docs/security.md were made that way.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support import ChaosRelay, EchoServer, PortHolder, echo_once  # noqa: E402

from reactor_mux.tools.procs import ReactorMuxProcess, cpu_time, fd_count, proc_status  # noqa: E402

ATTACKER = HERE.parent / "tests" / "attacker.py"
MANY = ",".join(f"127.0.0.{index}" for index in range(2, 18))
SCENARIOS = {  # name: (mode, sources, tls)
    "idle-1": ("idle", "127.0.0.2", False),
    "idle-16": ("idle", MANY, False),
    "garbage-16": ("garbage", MANY, False),
    "half-hello-16": ("half-hello", MANY, False),
    "tls-idle-16": ("idle", MANY, True),
    "tls-hello-16": ("tls-hello", MANY, True),
}
SECRET = "a secret long enough to be accepted"


def scenario(name: str, python: str, attempt_timeout: float, work: Path) -> dict[str, object]:
    mode, sources, tls = SCENARIOS[name]
    secret = work / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    server_args = ["--secret-file", str(secret), "--max-channels", "16"]
    client_args = ["--secret-file", str(secret), "--reconnect-min", "0.2", "--reconnect-max", "2"]
    if tls:
        cert, key = work / "s.pem", work / "s.key"
        if not cert.exists():
            subprocess.run([python, "-m", "reactor_mux", "keygen", "--cert", str(cert), "--key",
                            str(key)], check=True, capture_output=True)  # fmt: skip
        server_args += ["--tls-cert", str(cert), "--tls-key", str(key)]
        client_args += ["--tls", "--tls-insecure"]
    echo = EchoServer()
    ports = PortHolder()
    port = ports.take()
    server = ReactorMuxProcess(["server", "--listen", f"127.0.0.1:{port}", *server_args],
                               python=python)  # fmt: skip
    server.listening_port()
    relay = ChaosRelay(port)
    procs: list[ReactorMuxProcess] = [server]
    try:
        resumer = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{relay.port}",
                                     "-L", f"0:127.0.0.1:{echo.port}", *client_args],
                                    python=python)  # fmt: skip
        procs.append(resumer)
        app = socket.create_connection(("127.0.0.1", resumer.forwards(1, 15)[0][1]), timeout=10)
        app.sendall(b"x")
        assert app.recv(1) == b"x"
        lines_before, cpu_before = len(server.lines), cpu_time(server.pid)
        rss_before = proc_status(server.pid, "VmRSS")
        peak = {"fds": 0, "rss": rss_before}
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.1):
                peak["fds"] = max(peak["fds"], fd_count(server.pid))
                peak["rss"] = max(peak["rss"], proc_status(server.pid, "VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        attacker = subprocess.Popen([sys.executable, str(ATTACKER), str(port), "--sources",
                                     sources, "--mode", mode, "--seconds", "600"],
                                    stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert attacker.stdout is not None
        attacker.stdout.readline()
        started = time.monotonic()
        sampler.start()
        time.sleep(1.0)
        joined: list[float] = []
        for _ in range(10):
            began = time.monotonic()
            client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                        "-L", f"0:127.0.0.1:{echo.port}", *client_args],
                                       python=python)  # fmt: skip
            try:
                forwards = client.forwards(1, attempt_timeout)
                if echo_once(forwards[0][1]) == b"ping":
                    joined.append(time.monotonic() - began)
            except TimeoutError:
                pass
            finally:
                client.stop()
        mark = len(resumer.lines)
        relay.cut()
        cut_at = time.monotonic()
        try:
            resumer.wait_for("resumed the session", 35, mark)
            app.sendall(b"y")
            resumed: str = f"{time.monotonic() - cut_at:.2f} s" if app.recv(1) == b"y" else "no"
        except (TimeoutError, OSError):
            resumed = "no"
        elapsed = time.monotonic() - started
        attacker.terminate()
        counts = json.loads(attacker.communicate(timeout=30)[0].strip().splitlines()[-1])
        sampling.set()
        sampler.join()
        return {
            "scenario": name,
            "attack conn/s": round(counts["opened"] / elapsed),
            "joined": f"{len(joined)}/10",
            "median join s": round(statistics.median(joined), 2) if joined else None,
            "resumed": resumed,
            "log lines": len(server.lines) - lines_before,
            "max fds": peak["fds"],
            "RSS growth MiB": round((peak["rss"] - rss_before) / 1024, 1),
            "server CPU %": round(100 * (cpu_time(server.pid) - cpu_before) / elapsed),
        }
    finally:
        relay.close()
        for proc in procs:
            proc.stop()
        ports.close()
        echo.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter whose reactor_mux runs the server and clients",
    )
    parser.add_argument("--attempt-timeout", type=float, default=15.0,
                        help="seconds a client may take to forward")  # fmt: skip
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    args = parser.parse_args()
    work = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
    rows = [scenario(name, args.python, args.attempt_timeout, work)
            for name in args.only or SCENARIOS]  # fmt: skip
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key in keys) + " |")


if __name__ == "__main__":
    main()
