"""Small-message load generator and echo target, each a single-threaded selectors loop.

Threads in the benchmark process cannot drive many small messages without the
GIL becoming the bottleneck (every path then measures the same), so the
small-message benchmark runs these in processes of their own:

    python bench/loadgen.py echo                 # prints "listening on 127.0.0.1:PORT"
    python bench/loadgen.py load PORT CONNS LIMIT SIZE
                                                 # prints "messages N seconds S"
    python bench/loadgen.py sink                 # prints "listening on 127.0.0.1:PORT"
    python bench/loadgen.py push PORT CONNS SECONDS
                                                 # prints "bytes N seconds S"

PORT may be several ports, comma-separated: the connections are spread over
them in turn (one process drives the load through several tunnels).  ``sink``
reads and discards; ``push`` writes as fast as its connections take it, for
SECONDS, and counts the bytes.

``load`` keeps CONNS connections each with one SIZE-byte request outstanding
(request/response, like an RPC or an interactive session) and counts the
completed round trips until LIMIT: a duration ("3s") or a message count
("60000").
"""

from __future__ import annotations

import selectors
import socket
import sys
import time


def listening() -> tuple[socket.socket, selectors.BaseSelector]:
    """A listening socket on 127.0.0.1, its port printed, in a selector of its own."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    server.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ, None)
    print(f"listening on 127.0.0.1:{server.getsockname()[1]}", file=sys.stderr, flush=True)
    return server, selector


def echo() -> None:
    server, selector = listening()
    buffer = bytearray(1 << 16)
    view = memoryview(buffer)
    while True:
        for key, _mask in selector.select():
            if key.data is None:
                conn, _ = server.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ, True)
                continue
            conn = key.fileobj
            try:
                count = conn.recv_into(buffer)
            except (BlockingIOError, ConnectionError):
                count = 0 if not isinstance(sys.exc_info()[1], BlockingIOError) else -1
            if count > 0:
                conn.setblocking(True)  # small echoes: a blocking send never waits long
                conn.sendall(view[:count])
                conn.setblocking(False)
            elif count == 0:
                selector.unregister(conn)
                conn.close()


def load(ports: list[int], connections: int, limit: str, size: int) -> None:
    selector = selectors.DefaultSelector()
    message = bytes(size)
    pending: dict[socket.socket, int] = {}
    for index in range(connections):
        conn = socket.create_connection(("127.0.0.1", ports[index % len(ports)]))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_READ)
        pending[conn] = size
        conn.send(message)
    completed = 0
    started = time.perf_counter()
    seconds = float(limit[:-1]) if limit.endswith("s") else float("inf")
    count = int(limit) if not limit.endswith("s") else None
    deadline = started + seconds
    while time.perf_counter() < deadline and (count is None or completed < count):
        for key, _mask in selector.select(0.1):
            conn = key.fileobj
            data = conn.recv(65536)
            if not data:
                raise SystemExit("connection closed by the path under test")
            pending[conn] -= len(data)
            while pending[conn] <= 0:
                completed += 1
                pending[conn] += size
                conn.send(message)
    elapsed = time.perf_counter() - started
    print(f"messages {completed} seconds {elapsed:.3f}", flush=True)
    for conn in pending:
        conn.close()


def sink() -> None:
    server, selector = listening()
    buffer = bytearray(1 << 18)
    while True:
        for key, _mask in selector.select():
            if key.data is None:
                conn, _ = server.accept()
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, True)
                continue
            try:
                count = key.fileobj.recv_into(buffer)
            except BlockingIOError:
                continue
            except ConnectionError:
                count = 0
            if count == 0:
                selector.unregister(key.fileobj)
                key.fileobj.close()


def push(ports: list[int], connections: int, seconds: float) -> None:
    selector = selectors.DefaultSelector()
    chunk = memoryview(bytes(1 << 17))
    for index in range(connections):
        conn = socket.create_connection(("127.0.0.1", ports[index % len(ports)]))
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_WRITE)
    sent = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for key, _mask in selector.select(0.1):
            try:
                sent += key.fileobj.send(chunk)
            except BlockingIOError:
                pass
    elapsed = time.perf_counter() - started
    print(f"bytes {sent} seconds {elapsed:.3f}", flush=True)
    for key in list(selector.get_map().values()):
        key.fileobj.close()


ARGUMENTS = {"echo": 0, "sink": 0, "push": 3, "load": 4}
"""How many arguments each command takes after its name."""

if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if ARGUMENTS.get(command) != len(sys.argv) - 2:
        usage = __doc__.split("\n\n")[2] if __doc__ else ""
        sys.exit(f"usage:\n{usage}")
    ports = [int(port) for port in sys.argv[2].split(",")] if len(sys.argv) > 2 else []
    if command == "echo":
        echo()
    elif command == "sink":
        sink()
    elif command == "push":
        push(ports, int(sys.argv[3]), float(sys.argv[4]))
    else:
        load(ports, int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
