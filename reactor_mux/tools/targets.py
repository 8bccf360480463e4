"""Loopback TCP targets for the demo, the tests and the benchmarks.

These stand in for the services a tunnel reaches (an echo, a sink); they are
plain blocking sockets with a thread per connection, deliberately simple and
independent of the reactor they are used to check.
"""

from __future__ import annotations

import socket
import threading

CHUNK = 256 * 1024


class ThreadedTCPServer:
    """Accepts on ``host`` (a free port) and runs ``handle(conn)`` in a thread each."""

    def __init__(
        self, host: str = "127.0.0.1", backlog: int = 1024, receive_buffer: int | None = None
    ) -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer is not None:  # before listen(): accepted sockets inherit it
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.bind((host, 0))
        self.sock.listen(backlog)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.errors: list[OSError] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handle(conn)
        except OSError as exc:
            self.errors.append(exc)
        finally:
            conn.close()

    def handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.sock.close()


class EchoServer(ThreadedTCPServer):
    """Returns every byte; passes the client's EOF back after the last one."""

    def handle(self, conn: socket.socket) -> None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while count := conn.recv_into(buffer):
            conn.sendall(view[:count])
        conn.shutdown(socket.SHUT_WR)
