"""Memory per idle stream: the ``S`` of docs/limits.md's formula.

Opens one connection at a time through a client's -L mapping (each sends one
byte and reads the echo, then stays open), and prints the client's and
server's RSS before and after, per stream.

    python bench/idle_streams.py [STREAMS]        # default 2000; raise `ulimit -n` first
    REACTOR_MUX_CODEC=python python bench/idle_streams.py
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import EchoServer, Tunnel

from reactor_mux.tools.procs import proc_status


def main(streams: int) -> None:
    echo, tunnel = EchoServer(), Tunnel()
    conns: list[socket.socket] = []
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        port = forwards[0][1]
        pids = {"client": client.pid, "server": tunnel.server.pid}
        time.sleep(0.5)
        before = {name: proc_status(pid, "VmRSS") for name, pid in pids.items()}
        for _ in range(streams):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(b"x")
            assert conn.recv(1) == b"x"
            conns.append(conn)
        time.sleep(1)
        after = {name: proc_status(pid, "VmRSS") for name, pid in pids.items()}
        for name in pids:
            print(f"{name}: idle {before[name]} KiB, with {streams} streams {after[name]} KiB, "
                  f"{(after[name] - before[name]) / streams:.2f} KiB per stream")  # fmt: skip
    finally:
        for conn in conns:
            conn.close()
        tunnel.close()
        echo.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
