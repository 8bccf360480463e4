"""One local TCP connection carried as a stream on a channel.

Bytes flow two ways:

* local socket -> channel: ``recv_into`` the stream's send ring (handed out
  by the host), only while the host grants space (stream credit, and the
  channel's outbound cap), so a stalled peer stops us reading and the local
  sender feels TCP backpressure;
* channel -> local socket: frames are ``send``-ed straight from the channel's
  receive buffer; only what the socket does not take is copied into
  ``inbound`` (at most one window), and what reached the socket is reported
  as ``written``, which is what earns the peer its ACKs.

The socket is closed once both directions are done: the local side sent EOF
(we queued FIN) and the peer's FIN was passed on after all its data
(``shutdown(SHUT_WR)``).  Any socket error aborts the stream with RST.

A stream sees its channel only through ``StreamHost``, the handful of calls
above; it never touches the channel's session, socket or other streams.
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

from reactor_mux.io.netutil import abort_socket, describe_error, unsent_bytes
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Reactor
from reactor_mux.tunnel.ringbuffer import RingBuffer

log = logging.getLogger("reactor_mux")

READ_CHUNK = 128 * 1024
"""Most bytes read from a local socket per readiness event."""

KEEPING_UP_FRACTION = 4
"""A local reader keeps up while its socket's send queue is under 1/4 of the
window.  BLOCKED leaves ahead of the data read just before it (control frames
go first), up to a read chunk: at half the window, a target that stopped
reading could still look as if it kept up when that BLOCKED arrives."""


class OpenHook(Protocol):
    """Told the peer's answer to a stream we opened, before any data moves (the
    SOCKS server of ``-D`` replies to its client here)."""

    def accepted(self, sock: socket.socket) -> bytes | None:
        """SYN OK: return bytes the local client sent early, to go out first, or
        None if the local client cannot be told (the stream is reset)."""

    def refused(self, sock: socket.socket, reason: str) -> None:
        """SYN ERROR: the socket is closed (without RST) right after this."""


class StreamHost(Protocol):
    """What a stream needs of the channel that carries it."""

    def outbound_space(self, stream_id: int) -> int:
        """Bytes the stream may read from its socket now (0 while it has no send
        credit, or the channel has paused local reads)."""

    def outbound_buffer(self, stream_id: int, count: int) -> list[memoryview]:
        """Where to ``recv_into`` up to ``count`` bytes (the stream's send ring)."""

    def outbound_added(self, stream_id: int, count: int) -> None:
        """``count`` bytes were read into ``outbound_buffer``: send them."""

    def outbound_eof(self, stream_id: int) -> None:
        """The local socket sent EOF: send FIN after the data."""

    def inbound_delivered(self, stream_id: int, count: int) -> None:
        """``count`` bytes from the peer reached the local socket."""

    def inbound_storage_changed(self, delta: int) -> None:
        """The stream's inbound ring took (+) or gave back (-) storage."""

    @property
    def inbound_paused(self) -> bool:
        """The channel stopped reading because inbound rings hold too much:
        give storage back as soon as a ring empties."""

    def stream_closed(self, stream: LocalStream, reason: str, *, reset: bool) -> None:
        """The stream is finished (``reset``: abort it at the peer too)."""


class LocalStream:
    __slots__ = (
        "_host",
        "_inbound",
        "_watch",
        "bytes_down",
        "bytes_up",
        "closed",
        "id",
        "label",
        "mapping",
        "on_open",
        "opened_at",
        "peer_eof",
        "read_eof",
        "reading",
        "sock",
        "write_closed",
    )

    def __init__(
        self,
        reactor: Reactor,
        host: StreamHost,
        stream_id: int,
        sock: socket.socket,
        label: str,
        window: int,
    ) -> None:
        self._host = host
        self.id = stream_id
        self.sock = sock
        self.label = label
        self._watch = IOWatch(reactor, sock, self._on_io, self)
        self._inbound = RingBuffer(window)
        self.reading = False
        self.read_eof = False
        self.peer_eof = False
        self.write_closed = False
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0
        self.on_open: OpenHook | None = None
        self.mapping = ""
        """The forward it belongs to, as the metrics and status name it (``-L 8080:db:5432``)."""
        self.opened_at = reactor.time()

    @property
    def inbound_buffered(self) -> int:
        """Bytes from the peer waiting for the local socket to take them."""
        return self._inbound.size

    def start_reading(self) -> None:
        """The stream is open at both ends: start moving local bytes."""
        self.reading = True
        self.update()

    def update(self) -> None:
        """Register exactly the interest the current state calls for."""
        if self.closed:
            return
        mask = 0
        if self.reading and not self.read_eof and self._host.outbound_space(self.id) > 0:
            mask = READ
        if self._inbound.size:
            mask |= WRITE
        self._watch.want(mask)

    def _on_io(self, mask: int) -> None:
        if mask & WRITE:
            self._write_buffered()
        if mask & READ and not self.closed:
            self._read()
        self.update()

    def close_after_bug(self) -> None:
        self.abort("internal error")

    # ------------------------------------------------------- local -> peer

    def _read(self) -> None:
        host = self._host
        space = host.outbound_space(self.id)
        if space <= 0:
            return
        views = host.outbound_buffer(self.id, min(space, READ_CHUNK))
        try:
            if len(views) == 1:
                count = self.sock.recv_into(views[0])
            else:
                count = self.sock.recvmsg_into(views)[0]
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.abort(f"local connection failed: {describe_error(exc)}")
            return
        if count == 0:
            self.read_eof = True
            host.outbound_eof(self.id)
            self._close_if_done()
            return
        self.bytes_up += count
        host.outbound_added(self.id, count)

    # ------------------------------------------------------- peer -> local

    def keeping_up(self) -> bool:
        """The local application takes what the peer sends as it arrives, so a
        bigger window would be used, not buffered: nothing waits in ``inbound``
        and the socket's send queue is short (a target that stopped reading
        fills its receive buffer, then our send queue, before ``inbound``)."""
        if self.closed or self._inbound.size:
            return False
        return unsent_bytes(self.sock) < self._inbound.limit // KEEPING_UP_FRACTION

    def window_grown(self, window: int) -> None:
        """We granted the peer a larger window: ``inbound`` may have to hold it."""
        self._inbound.limit = window

    def deliver(self, data: memoryview) -> None:
        """Write stream data from the peer; buffer what the socket refuses."""
        if self.closed:
            return
        inbound = self._inbound
        if inbound.size:
            held = inbound.capacity
            inbound.write(data)
            if inbound.capacity != held:
                self._host.inbound_storage_changed(inbound.capacity - held)
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self.abort(f"local connection failed: {describe_error(exc)}")
            return
        if sent:
            self.bytes_down += sent
            self._host.inbound_delivered(self.id, sent)
        if sent < len(data):
            held = inbound.capacity
            inbound.write(data[sent:])
            if inbound.capacity != held:
                self._host.inbound_storage_changed(inbound.capacity - held)
            self.update()

    def _write_buffered(self) -> None:
        inbound = self._inbound
        if not inbound.size:
            return
        try:
            sent = self.sock.sendmsg(inbound.peek(0, inbound.size))
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.abort(f"local connection failed: {describe_error(exc)}")
            return
        inbound.consume(sent)
        self.bytes_down += sent
        if not inbound.size and self._host.inbound_paused:
            self._release_inbound()
        self._host.inbound_delivered(self.id, sent)
        if not inbound.size and self.peer_eof:
            self._shutdown_write()

    def peer_finished(self) -> None:
        """The peer sent FIN: pass EOF on once everything before it is written."""
        self.peer_eof = True
        if not self._inbound.size:
            self._shutdown_write()

    def _shutdown_write(self) -> None:
        if self.write_closed or self.closed:
            return
        self.write_closed = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._close_if_done()

    # ------------------------------------------------------------- closing

    def release_idle_inbound(self) -> None:
        """Give back the inbound ring's storage if it is empty (memory pressure)."""
        if not self._inbound.size:
            self._release_inbound()

    def _release_inbound(self) -> None:
        """Drop whatever the inbound ring holds and give its storage back."""
        self._inbound.consume(self._inbound.size)
        released = self._inbound.release()
        if released:
            self._host.inbound_storage_changed(-released)

    def _close_if_done(self) -> None:
        if self.read_eof and self.write_closed and not self.closed:
            self.closed = True
            self._release_inbound()
            self._watch.close()
            self.sock.close()
            self._host.stream_closed(self, "closed", reset=False)

    def abort(self, reason: str) -> None:
        """A local failure: reset the stream at the peer and here."""
        if self.closed:
            return
        self.abort_local()
        self._host.stream_closed(self, reason, reset=True)

    def close_local(self) -> None:
        """Close the local socket with an orderly FIN (after a refusal was written to it)."""
        if self.closed:
            return
        self.closed = True
        self._release_inbound()
        self._watch.close()
        self.sock.close()

    def abort_local(self) -> None:
        """Close the local socket with RST (peer reset, refusal, channel loss)."""
        if self.closed:
            return
        self.closed = True
        self._release_inbound()
        self._watch.close()
        abort_socket(self.sock)
