"""Two local sockets joined in the reactor, each direction with its own buffer.

Used where the client serves SOCKS for a reverse dynamic forward (``-R PORT``
with no target): the stream's end of a socketpair is joined to the target
connection.  Each direction reads only while its buffer is empty, so memory
is ``SPLICE_BUFFER`` per direction and a slow reader slows its writer through
TCP.  EOF is passed on as ``shutdown(SHUT_WR)`` after the last byte; an error
on either socket resets both.
"""

from __future__ import annotations

import logging
import socket

from reactor_mux.io.netutil import abort_socket
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Reactor

log = logging.getLogger("reactor_mux")

SPLICE_BUFFER = 64 * 1024
"""Bytes held per direction of a splice."""


class _Direction:
    __slots__ = ("buffer", "done", "eof", "pending")

    def __init__(self) -> None:
        self.buffer = bytearray(SPLICE_BUFFER)
        self.pending = memoryview(b"")
        self.eof = False
        self.done = False  # EOF read and passed on


class Splice:
    def __init__(self, reactor: Reactor, a: socket.socket, b: socket.socket, name: str) -> None:
        self.name = name
        self._socks = (a, b)
        self._directions = (_Direction(), _Direction())  # a -> b, b -> a
        self._watches = (
            IOWatch(reactor, a, lambda mask: self._on_io(0, mask), self),
            IOWatch(reactor, b, lambda mask: self._on_io(1, mask), self),
        )
        self.closed = False
        self._update()

    def _on_io(self, side: int, mask: int) -> None:
        if mask & WRITE:
            self._flush(1 - side)
        if mask & READ and not self.closed:
            self._read(side)
        if not self.closed:
            self._update()

    def _read(self, side: int) -> None:
        direction = self._directions[side]
        if direction.pending or direction.eof:
            return
        try:
            count = self._socks[side].recv_into(direction.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if not count:
            direction.eof = True
        else:
            direction.pending = memoryview(direction.buffer)[:count]
        self._flush(side)

    def _flush(self, side: int) -> None:
        """Write what ``side`` read to the other socket; pass EOF on once all is out."""
        direction = self._directions[side]
        sink = self._socks[1 - side]
        if direction.pending:
            try:
                sent = sink.send(direction.pending)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.abort()
                return
            direction.pending = direction.pending[sent:]
        if direction.eof and not direction.pending and not direction.done:
            direction.done = True
            try:
                sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            if all(d.done for d in self._directions):
                self.close()

    def _update(self) -> None:
        for side, watch in enumerate(self._watches):
            mine, theirs = self._directions[side], self._directions[1 - side]
            mask = 0
            if not mine.pending and not mine.eof:
                mask |= READ
            if theirs.pending:
                mask |= WRITE
            watch.want(mask)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for watch, sock in zip(self._watches, self._socks, strict=True):
            watch.close()
            sock.close()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        for watch, sock in zip(self._watches, self._socks, strict=True):
            watch.close()
            abort_socket(sock)

    def close_after_bug(self) -> None:
        self.abort()
