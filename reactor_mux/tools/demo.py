"""``reactor-mux demo``: the whole tool on loopback in one command.

Starts an echo target, a server process and a client process with one
``-L`` and one ``-R`` mapping, pushes random data through each (and directly
to the target, as the baseline), checks every byte by SHA-256, prints what
flowed and how fast, and exits 0 only if everything arrived intact.
"""

from __future__ import annotations

import hashlib
import random
import socket
import sys
import threading
import time

from reactor_mux import codec
from reactor_mux.tools.procs import ReactorMuxProcess
from reactor_mux.tools.targets import EchoServer

CHUNK = 256 * 1024


def echo_roundtrip(port: int, data: bytes, timeout: float = 60.0) -> tuple[int, bool, float]:
    """Send ``data`` to an echo at ``port`` while reading it back.

    Returns (bytes echoed, sha256 matched, seconds).
    """
    digest = hashlib.sha256()
    received = 0
    conn = socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def read_back() -> None:
        nonlocal received
        buffer = bytearray(CHUNK)
        while True:
            count = conn.recv_into(buffer)
            if not count:
                return
            digest.update(memoryview(buffer)[:count])
            received += count

    started = time.perf_counter()
    reader = threading.Thread(target=read_back, daemon=True)
    reader.start()
    view = memoryview(data)
    for offset in range(0, len(data), CHUNK):
        conn.sendall(view[offset : offset + CHUNK])
    conn.shutdown(socket.SHUT_WR)
    reader.join(timeout)
    elapsed = time.perf_counter() - started
    conn.close()
    return received, digest.digest() == hashlib.sha256(data).digest(), elapsed


DEFAULT_SIZE_MIB = 64
"""MiB pushed each way through each path."""


def run_demo(size_mib: int = DEFAULT_SIZE_MIB) -> int:
    size = max(1, size_mib) * 1024 * 1024
    print(f"reactor-mux demo: codec {codec.BACKEND}, {size_mib} MiB each way per path")
    target = EchoServer()
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0"])
    client = None
    try:
        server_port = server.listening_port()
        client = ReactorMuxProcess(
            [
                "client",
                "--server",
                f"127.0.0.1:{server_port}",
                "-L",
                f"0:127.0.0.1:{target.port}",
                "-R",
                f"0:127.0.0.1:{target.port}",
            ]
        )
        ports = {kind: port for kind, port, _target in client.forwards(2)}
        print(f"  echo target  127.0.0.1:{target.port}")
        print(f"  server       127.0.0.1:{server_port}")
        print(
            f"  client       -L 127.0.0.1:{ports['L']} -> target, "
            f"-R 127.0.0.1:{ports['R']} (on the server) -> target"
        )
        data = random.Random(2018).randbytes(size)
        paths = [
            ("direct to target (baseline)", target.port),
            ("client -L -> server -> target", ports["L"]),
            ("server -R -> client -> target", ports["R"]),
        ]
        print(f"  {'path':32} {'sent':>10} {'echoed':>10} {'sha256':>7} {'MiB/s':>8}")
        all_ok = True
        baseline = None
        for name, port in paths:
            echoed, ok, seconds = echo_roundtrip(port, data)
            all_ok &= ok and echoed == size
            rate = 2 * size / seconds / 2**20  # bytes moved both ways
            baseline = baseline or rate
            print(
                f"  {name:32} {size / 2**20:>7.1f}MiB {echoed / 2**20:>7.1f}MiB "
                f"{'ok' if ok else 'BAD':>7} {rate:>8.0f}  ({rate / baseline:.2f}x direct)"
            )
        print("demo " + ("passed: every byte arrived intact" if all_ok else "FAILED"))
        return 0 if all_ok else 1
    except (TimeoutError, OSError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if client is not None:
            client.stop()
        server.stop()
        target.close()
