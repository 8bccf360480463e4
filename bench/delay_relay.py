"""A TCP relay that delays every byte by a fixed time each way: a long link on loopback.

Used where the kernel has no netem qdisc (containers without ``sch_netem``):
each direction reads as fast as the socket allows and writes every chunk
``delay`` seconds after it arrived, so whatever crosses the relay sees a
round trip of twice the delay while the bandwidth stays that of loopback.
It holds at most ``MAX_HELD`` bytes per direction (it stops reading beyond),
enough for a 50 ms round trip at over 1 GB/s.

    python bench/delay_relay.py LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_SECONDS

Prints ``listening on 127.0.0.1:PORT`` on stderr once ready.
"""

from __future__ import annotations

import collections
import socket
import sys
import threading
import time

MAX_HELD = 64 * 1024 * 1024
CHUNK = 256 * 1024


class DelayedPipe:
    """One direction: a reader thread queues chunks, a writer sends each when due."""

    def __init__(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        self.source, self.sink, self.delay = source, sink, delay
        self.queue: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self.held = 0
        self.ready = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._write, daemon=True).start()

    def _read(self) -> None:
        while True:
            with self.ready:
                while self.held > MAX_HELD:
                    self.ready.wait()
            try:
                chunk = self.source.recv(CHUNK)
            except OSError:
                chunk = b""
            with self.ready:
                self.queue.append((time.monotonic() + self.delay, chunk or None))
                self.held += len(chunk)
                self.ready.notify_all()
            if not chunk:
                return

    def _write(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                due, chunk = self.queue[0]
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            with self.ready:
                self.queue.popleft()
                self.held -= len(chunk or b"")
                self.ready.notify_all()
            try:
                if chunk is None:
                    self.sink.shutdown(socket.SHUT_WR)
                    return
                self.sink.sendall(chunk)
            except OSError:
                return


def main() -> None:
    listen_port, host, port, delay = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                      float(sys.argv[4]))  # fmt: skip
    listener = socket.create_server(("127.0.0.1", listen_port))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    while True:
        near, _ = listener.accept()
        far = socket.create_connection((host, port))
        for conn in (near, far):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        DelayedPipe(near, far, delay)
        DelayedPipe(far, near, delay)


if __name__ == "__main__":
    main()
