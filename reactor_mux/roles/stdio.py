"""``client -W HOST:PORT``: standard input and output as one forwarded connection,
as ``ssh -W`` gives them (``ssh -o ProxyCommand='reactor-mux client S -W %h:%p'``).

The stream itself is an ordinary one on one end of a loopback pair, so the
tunnel treats it as any accepted connection (windows, half-close, resume).
``StdioBridge`` copies between the pair's other end and file descriptors 0 and
1, in the reactor, through two bounded buffers: it stops reading a side while
its buffer is full.  End of input half-closes the connection; the connection's
end closes standard output once everything before it is written; when both
directions are over, ``done`` is called with whether they ended cleanly.

A pipe, socket or terminal is waited on; a regular file or ``/dev/null``, which
epoll refuses and which never blocks, is read or written as soon as there is
room or data, one buffer per turn of the loop.
"""

from __future__ import annotations

import os
import selectors
import socket
import stat
from collections.abc import Callable

from reactor_mux.io.reactor import IOWatch, Reactor

BRIDGE_BUFFER = 64 * 1024
"""Bytes held per direction between standard input/output and the connection."""

STDIN, STDOUT = 0, 1


class StdioBridge:
    """Copies standard input to ``sock`` and ``sock`` to standard output."""

    def __init__(self, reactor: Reactor, sock: socket.socket, done: Callable[[bool], None]) -> None:
        self.name = "-W standard input/output"
        self._reactor = reactor
        self._sock = sock
        self._done: Callable[[bool], None] | None = done
        self._up = bytearray()  # read from standard input, for the connection
        self._down = bytearray()  # read from the connection, for standard output
        self._input_ended = False
        self._output_ended = False
        self._input_closed = False
        self._output_closed = False
        self._scheduled = False
        self._closed = False
        self._blocking = (os.get_blocking(STDIN), os.get_blocking(STDOUT))
        os.set_blocking(STDIN, False)
        os.set_blocking(STDOUT, False)
        sock.setblocking(False)
        self._stdin = IOWatch(reactor, STDIN, self._on_stdin, self) if _waitable(STDIN) else None
        self._stdout = (
            IOWatch(reactor, STDOUT, self._on_stdout, self) if _waitable(STDOUT) else None
        )
        self._conn = IOWatch(reactor, sock, self._on_conn, self)
        try:
            self._update()
        except OSError:  # epoll refused a descriptor: give the flags back first
            self.close()
            raise

    def _on_stdin(self, _mask: int = 0) -> None:
        try:
            data = os.read(STDIN, BRIDGE_BUFFER - len(self._up))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._up += data
        else:
            self._input_ended = True
        self._update()

    def _on_stdout(self, _mask: int = 0) -> None:
        try:
            written = os.write(STDOUT, self._down)
        except BlockingIOError:
            return
        except OSError:  # nobody reads our output any more (`| head`): as a pipe's writer
            self._finish(clean=True)  # ends then, it is done, not failed
            return
        del self._down[:written]
        self._update()

    def _on_conn(self, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE and self._up:
                del self._up[: self._sock.send(self._up)]
            if mask & selectors.EVENT_READ:
                data = self._sock.recv(BRIDGE_BUFFER - len(self._down))
                if data:
                    self._down += data
                else:
                    self._output_ended = True
        except BlockingIOError:
            pass
        except OSError:  # reset: the forwarded connection failed
            self._finish(clean=False)
            return
        self._update()

    def _update(self) -> None:
        """Wait for what can move now; pass on each end once its buffer is empty."""
        if self._closed:
            return
        if self._input_ended and not self._up and not self._input_closed:
            self._input_closed = True
            if self._stdin is not None:
                self._stdin.close()
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self._output_ended and not self._down and not self._output_closed:
            self._output_closed = True
            if self._stdout is not None:
                self._stdout.close()
            _end_output()
        if self._input_closed and self._output_closed:
            self._finish(clean=True)
            return
        read_input = not self._input_ended and len(self._up) < BRIDGE_BUFFER
        write_output = bool(self._down) and not self._output_closed
        if self._stdin is not None:
            self._stdin.want(selectors.EVENT_READ if read_input else 0)
        if self._stdout is not None:
            self._stdout.want(selectors.EVENT_WRITE if write_output else 0)
        if (read_input and self._stdin is None) or (write_output and self._stdout is None):
            self._schedule()
        conn_mask = selectors.EVENT_WRITE if self._up else 0
        if not self._output_ended and len(self._down) < BRIDGE_BUFFER:
            conn_mask |= selectors.EVENT_READ
        self._conn.want(conn_mask)

    def _schedule(self) -> None:
        """A file that never blocks has room or data: serve it on the loop's next turn."""
        if not self._scheduled:
            self._scheduled = True
            self._reactor.call_soon(self._serve_files, self)

    def _serve_files(self) -> None:
        self._scheduled = False
        if self._closed:
            return
        if self._stdin is None and not self._input_ended and len(self._up) < BRIDGE_BUFFER:
            self._on_stdin()
        if self._stdout is None and self._down and not self._output_closed and not self._closed:
            self._on_stdout()

    def close_after_bug(self) -> None:
        """A bug in a callback: the connection is over, as if it had been reset."""
        self._finish(clean=False)

    def _finish(self, *, clean: bool) -> None:
        done, self._done = self._done, None
        self.close()
        if done is not None:
            done(clean)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for watch in (self._stdin, self._stdout, self._conn):
            if watch is not None:
                watch.close()
        self._sock.close()
        for fd, blocking in zip((STDIN, STDOUT), self._blocking, strict=True):
            try:
                os.set_blocking(fd, blocking)
            except OSError:
                pass


def _waitable(fd: int) -> bool:
    """epoll takes pipes, sockets and terminals; a regular file or /dev/null it refuses."""
    mode = os.fstat(fd).st_mode
    return not (stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not os.isatty(fd)))


def _end_output() -> None:
    """Our reader sees the end of its input: /dev/null takes file descriptor 1's place
    (closing it would let a later socket take the number, and stray output with it)."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, STDOUT)
    os.close(null)
