"""Just enough of redis's RESP to send a command and read its reply in a test."""

from __future__ import annotations

import socket


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


def command(conn: socket.socket, *words: bytes) -> bytes | int | None:
    """Send one command; its reply: a status or bulk string as bytes, an integer, or
    None for a null bulk string."""
    request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    conn.sendall(request)
    return _Reader(conn).reply()


class _Reader:
    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exactly(self, count: int) -> bytes:
        while len(self._buffer) < count + 2:
            self._fill()
        data, self._buffer = self._buffer[:count], self._buffer[count + 2 :]
        return data

    def _fill(self) -> None:
        chunk = self._conn.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection mid-reply")
        self._buffer += chunk

    def reply(self) -> bytes | int | None:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            return None if length < 0 else self._exactly(length)
        raise RedisError(f"unexpected reply {line[:40]!r}")
