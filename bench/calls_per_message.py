"""Python function calls per 64-byte round trip in each tunnel process (cProfile).

A deterministic measure of "Python steps per message": one connection
through ``-L`` to an echo thread, ``N`` request/response round trips, client
and server run under ``cProfile``; prints the calls per round trip of each
process and its most frequent callees.  Each process handles two messages
per round trip (one each way).

    python bench/calls_per_message.py [ROUND_TRIPS] [--top 30] [--codec python]
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from test_tunnel import ping_pong

from reactor_mux.tools.targets import EchoServer

CODEC = ["c"]  # the codec both processes run, set once from --codec


def profiled(profile: Path, ready: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """A reactor-mux process under cProfile, and the port named by the first log
    line that matches ``ready`` (the client's forward is up only once the
    channel is: connecting to its listener earlier gets a reset)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "reactor_mux", *args],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "REACTOR_MUX_CODEC": CODEC[0]},
    )  # fmt: skip
    assert proc.stderr is not None
    while line := proc.stderr.readline():
        if match := re.search(ready, line):
            threading.Thread(target=proc.communicate, daemon=True).start()
            return proc, int(match.group(1))
    raise RuntimeError(f"{args[0]} exited before it was ready")


def report(name: str, profile: Path, round_trips: int, top: int) -> None:
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    counts = sorted(((entry[1], key) for key, entry in stats.items()), reverse=True)
    print(f"{name}: {sum(n for n, _ in counts) / round_trips:.1f} calls per round trip")
    for calls, (path, line, function) in counts[:top]:
        print(f"  {calls / round_trips:7.2f}  {function} ({os.path.basename(path)}:{line})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("round_trips", nargs="?", type=int, default=5000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--codec", choices=("c", "python"), default="c")
    args = parser.parse_args()
    CODEC[0] = args.codec
    echo = EchoServer()
    with tempfile.TemporaryDirectory() as tmp:
        server_profile, client_profile = Path(tmp) / "server.prof", Path(tmp) / "client.prof"
        server, port = profiled(server_profile, r"listening on \S+:(\d+)",
                                "server", "--listen", "127.0.0.1:0")  # fmt: skip
        processes = [server]
        try:
            client, forward = profiled(client_profile, r"forwarding -L \S+:(\d+)",
                                       "client", "--server", f"127.0.0.1:{port}",
                                       "-L", f"0:127.0.0.1:{echo.port}")  # fmt: skip
            processes.insert(0, client)
            ping_pong(forward, args.round_trips)
        finally:
            for proc in processes:  # SIGTERM: a clean exit, so cProfile writes its file
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        report("client", client_profile, args.round_trips, args.top)
        report("server", server_profile, args.round_trips, args.top)


if __name__ == "__main__":
    main()
