"""The floor of the design card: a relay that is nothing but a Python ``selectors`` loop.

One process, one thread, nonblocking sockets.  Each readiness event costs one
``recv_into`` and one ``send`` and nothing else: no frames, no streams, no
windows, no multiplexing.  Any tunnel built as the design card says (a
``selectors`` loop in Python, whatever C it calls per event) does at least this
much Python per message in each of its two processes, so two of these chained
(``peers.py --paths loop2``) bound from below what such a tunnel can reach on
small messages.

Usage: python bench/loop_relay.py LISTEN_PORT TARGET_PORT
(prints "listening on 127.0.0.1:PORT" on stderr once ready).
"""

from __future__ import annotations

import selectors
import socket
import sys

BUFFER = 256 * 1024


class Pipe:
    """One direction of one relayed connection: bytes read from ``source`` go to ``sink``."""

    def __init__(self, source: socket.socket, sink: socket.socket) -> None:
        self.source = source
        self.sink = sink
        self.buffer = bytearray(BUFFER)
        self.pending = memoryview(b"")
        self.eof = False


class Relay:
    def __init__(self, listener: socket.socket, target: tuple[str, int]) -> None:
        self.selector = selectors.DefaultSelector()
        self.target = target
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, None)
        self.pipes: dict[socket.socket, tuple[Pipe, Pipe]] = {}
        """Each socket: (the pipe it feeds, the pipe that writes to it)."""

    def run(self) -> None:
        while True:
            for key, events in self.selector.select():
                if key.data is None:
                    self.accept()
                    continue
                reader, writer = key.data
                if events & selectors.EVENT_WRITE and writer.pending:
                    self.flush(writer)
                if events & selectors.EVENT_READ:
                    self.read(reader)

    def accept(self) -> None:
        conn, _ = self.listener.accept()
        upstream = socket.create_connection(self.target)
        for sock in (conn, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        forward, backward = Pipe(conn, upstream), Pipe(upstream, conn)
        self.pipes[conn] = (forward, backward)
        self.pipes[upstream] = (backward, forward)
        self.selector.register(conn, selectors.EVENT_READ, (forward, backward))
        self.selector.register(upstream, selectors.EVENT_READ, (backward, forward))

    def read(self, pipe: Pipe) -> None:
        if pipe.pending or pipe.eof or pipe.source not in self.pipes:
            return
        try:
            count = pipe.source.recv_into(pipe.buffer)
        except BlockingIOError:
            return
        except OSError:
            count = 0
        if not count:
            pipe.eof = True
            self.finish(pipe)
            return
        view = memoryview(pipe.buffer)[:count]
        try:
            sent = pipe.sink.send(view)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close(pipe)
            return
        if sent < count:
            pipe.pending = view[sent:]
            self.interest(pipe.sink)
            self.interest(pipe.source)

    def flush(self, pipe: Pipe) -> None:
        try:
            sent = pipe.sink.send(pipe.pending)
        except BlockingIOError:
            return
        except OSError:
            self.close(pipe)
            return
        pipe.pending = pipe.pending[sent:]
        if not pipe.pending:
            self.interest(pipe.sink)
            self.interest(pipe.source)
            if pipe.eof:
                self.finish(pipe)

    def interest(self, sock: socket.socket) -> None:
        """Read while the pipe fed by ``sock`` can take more; write while the pipe
        writing to ``sock`` has bytes pending.  A socket wanting neither leaves the
        selector, since a socket at end of file would otherwise wake it forever."""
        feeds, fed_by = self.pipes[sock]
        events = 0
        if not feeds.pending and not feeds.eof:
            events |= selectors.EVENT_READ
        if fed_by.pending:
            events |= selectors.EVENT_WRITE
        registered = self.selector.get_map().get(sock)
        if registered is None and events:
            self.selector.register(sock, events, (feeds, fed_by))
        elif registered is not None and not events:
            self.selector.unregister(sock)
        elif registered is not None and registered.events != events:
            self.selector.modify(sock, events, (feeds, fed_by))

    def finish(self, pipe: Pipe) -> None:
        """Pass the half-close on once everything read has been written; close the
        connection once both directions are done."""
        if pipe.pending:
            return
        try:
            pipe.sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.interest(pipe.source)
        back = self.pipes[pipe.sink][0]
        if back.eof and not back.pending:
            self.close(pipe)

    def close(self, pipe: Pipe) -> None:
        for sock in (pipe.source, pipe.sink):
            if sock in self.pipes:
                del self.pipes[sock]
                if self.selector.get_map().get(sock) is not None:
                    self.selector.unregister(sock)
                sock.close()


def main() -> None:
    listen_port, target_port = int(sys.argv[1]), int(sys.argv[2])
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", listen_port))
    listener.listen(1024)
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", file=sys.stderr, flush=True)
    try:
        Relay(listener, ("127.0.0.1", target_port)).run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
