"""How 8 long channels spread over 2 workers: one shared accept queue (what
``server --workers`` does) against a queue per worker (``SO_REUSEPORT``).

* ``reuseport``: two SO_REUSEPORT sockets on one port, 8 connections, which
  socket each lands on, 500 times: the kernel hashes each connection's address
  and port, so the split is what chance gives, busy or not.
* ``shared``: a real ``reactor-mux server --workers 2``; 8 clients connect one
  after another, each starting a bulk stream through itself before the next
  connects (a busy worker is slower to accept), then the split from ``status``,
  10 times.

Run: ``python bench/accept_balance.py`` (prints the splits and how often each).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from reactor_mux.tools.procs import ReactorMuxProcess

LOADGEN = Path(__file__).parent / "loadgen.py"
CHANNELS = 8


def reuseport(trials: int = 500) -> Counter[tuple[int, int]]:
    splits: Counter[tuple[int, int]] = Counter()
    for _ in range(trials):
        first = socket.socket()
        first.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        second = socket.socket()
        second.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        second.bind(("127.0.0.1", port))
        for sock in (first, second):
            sock.listen(16)
            sock.setblocking(False)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(CHANNELS)]
        counts = []
        for sock in (first, second):
            count = 0
            while True:
                try:
                    sock.accept()[0].close()
                    count += 1
                except BlockingIOError:
                    break
            counts.append(count)
        splits[tuple(sorted(counts, reverse=True))] += 1  # type: ignore[index]
        for sock in (*clients, first, second):
            sock.close()
    return splits


def shared(trials: int = 10) -> Counter[tuple[int, int]]:
    splits: Counter[tuple[int, int]] = Counter()
    sink = subprocess.Popen([sys.executable, str(LOADGEN), "sink"], stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert sink.stderr is not None
    sink_port = int(sink.stderr.readline().rsplit(":", 1)[1])
    try:
        for _ in range(trials):
            control = Path(tempfile.mkdtemp()) / "server.sock"
            server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--workers", "2",
                                        "--control", str(control)])  # fmt: skip
            port = server.listening_port()
            clients, pushes = [], []
            time.sleep(1.0)  # both workers up
            for _ in range(CHANNELS):
                client = ReactorMuxProcess(["client", "--server", f"127.0.0.1:{port}", "-L",
                                            f"0:127.0.0.1:{sink_port}"])  # fmt: skip
                clients.append(client)
                local = client.forwards(1)[0][1]
                pushes.append(subprocess.Popen([sys.executable, str(LOADGEN), "push",
                                                str(local), "1", "30"],
                                               stdout=subprocess.DEVNULL))  # fmt: skip
                time.sleep(0.3)
            report = json.loads(subprocess.run(
                [sys.executable, "-m", "reactor_mux", "status", "--json", "--control",
                 str(control)], capture_output=True, text=True, check=True).stdout)  # fmt: skip
            counts = Counter(channel["worker"] for channel in report["channels"])
            splits[tuple(sorted((counts[0], counts[1]), reverse=True))] += 1  # type: ignore[index]
            for push in pushes:
                push.kill()
            for client in clients:
                client.stop()
            server.stop()
    finally:
        sink.kill()
    return splits


if __name__ == "__main__":
    for name, measure in (("reuseport", reuseport), ("shared", shared)):
        splits = measure()
        total = sum(splits.values())
        shown = ", ".join(
            f"{a}-{b}: {count / total:.0%}" for (a, b), count in sorted(splits.items())
        )
        print(f"{name}: {shown} ({total} trials)", flush=True)
