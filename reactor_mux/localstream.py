"""One local TCP connection carried as a stream on a channel.

Bytes flow two ways:

* local socket -> channel: ``recv_into`` the session's outbound ring for this
  stream, only while the stream has send credit (so a stalled peer stops us
  reading, and the local sender feels TCP backpressure);
* channel -> local socket: frames are ``send``-ed straight from the channel's
  receive buffer; only what the socket does not take is copied into
  ``inbound`` (at most one window), and ``consumed`` is reported for what
  reached the socket, which is what earns the peer its ACKs.

The socket is closed once both directions are done: the local side sent EOF
(we queued FIN) and the peer's FIN was passed on after all its data
(``shutdown(SHUT_WR)``).  Any socket error aborts the stream with RST.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from reactor_mux.netutil import abort_socket, describe_error
from reactor_mux.protocol.ringbuffer import RingBuffer
from reactor_mux.reactor import READ, WRITE, IOWatch

if TYPE_CHECKING:
    from reactor_mux.channel import Channel

log = logging.getLogger("reactor_mux")

READ_CHUNK = 128 * 1024
"""Most bytes read from a local socket per readiness event."""


class LocalStream:
    __slots__ = (
        "_inbound",
        "_watch",
        "bytes_down",
        "bytes_up",
        "channel",
        "closed",
        "id",
        "label",
        "peer_eof",
        "read_eof",
        "reading",
        "session",
        "sock",
        "write_closed",
    )

    def __init__(self, channel: Channel, stream_id: int, sock: socket.socket, label: str) -> None:
        self.channel = channel
        self.session = channel.session
        self.id = stream_id
        self.sock = sock
        self.label = label
        self._watch = IOWatch(channel.reactor, sock, self._on_io)
        self._inbound = RingBuffer(self.session.window)
        self.reading = False
        self.read_eof = False
        self.peer_eof = False
        self.write_closed = False
        self.closed = False
        self.bytes_up = 0
        self.bytes_down = 0

    @property
    def buffered(self) -> int:
        """Bytes received from the peer and not yet written locally."""
        return len(self._inbound)

    def start_reading(self) -> None:
        """The stream is open at both ends: start moving local bytes."""
        self.reading = True
        self.update()

    def update(self) -> None:
        """Register exactly the interest the current state calls for."""
        if self.closed:
            return
        mask = 0
        if (
            self.reading
            and not self.read_eof
            and self.session.send_space(self.id) > 0
            and not self.channel.outbound_paused
        ):
            mask = READ
        if len(self._inbound):
            mask |= WRITE
        self._watch.want(mask)

    def _on_io(self, mask: int) -> None:
        try:
            if mask & WRITE:
                self._write_buffered()
            if mask & READ and not self.closed:
                self._read()
            self.update()
        except Exception:
            log.exception("%s: internal error; resetting the stream", self.label)
            self.abort("internal error")

    # ------------------------------------------------------- local -> peer

    def _read(self) -> None:
        session = self.session
        space = session.send_space(self.id)
        if space <= 0 or self.channel.outbound_paused:
            return
        views = session.outbound_views(self.id, min(space, READ_CHUNK))
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
            session.end_stream(self.id)
            self.channel.schedule_flush()
            self._close_if_done()
            return
        session.outbound_written(self.id, count)
        self.channel.outbound_grew()
        self.bytes_up += count
        self.channel.schedule_flush()

    # ------------------------------------------------------- peer -> local

    def deliver(self, views: list[memoryview]) -> None:
        """Write stream data from the peer; buffer what the socket refuses."""
        if self.closed:
            return
        inbound = self._inbound
        held = inbound.capacity
        if not len(inbound):
            try:
                sent = self.sock.sendmsg(views) if len(views) > 1 else self.sock.send(views[0])
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.abort(f"local connection failed: {describe_error(exc)}")
                return
            if sent:
                self.bytes_down += sent
                self.session.consumed(self.id, sent)
            before = len(inbound)
            for view in views:
                if sent >= len(view):
                    sent -= len(view)
                    continue
                inbound.write(view[sent:])
                sent = 0
        else:
            before = len(inbound)
            for view in views:
                inbound.write(view)
        if inbound.capacity != held:
            self.channel.inbound_changed(inbound.capacity - held)
        if len(inbound) > before:
            self.update()

    def _write_buffered(self) -> None:
        inbound = self._inbound
        if not len(inbound):
            return
        views = inbound.peek(0, len(inbound))
        try:
            sent = self.sock.sendmsg(views)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.abort(f"local connection failed: {describe_error(exc)}")
            return
        inbound.consume(sent)
        if not len(inbound) and self.channel.read_paused:
            self.release_idle_inbound()
        self.bytes_down += sent
        self.session.consumed(self.id, sent)
        self.channel.schedule_flush()
        if not len(inbound) and self.peer_eof:
            self._shutdown_write()

    def peer_finished(self) -> None:
        """The peer sent FIN: pass EOF on once everything before it is written."""
        self.peer_eof = True
        if not len(self._inbound):
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
        released = self._inbound.release()
        if released:
            self.channel.inbound_changed(-released)

    def _release_inbound(self) -> None:
        self._inbound.consume(len(self._inbound))
        self.release_idle_inbound()

    def _close_if_done(self) -> None:
        if self.read_eof and self.write_closed and not self.closed:
            self.closed = True
            self._release_inbound()
            self._watch.close()
            self.sock.close()
            self.channel.stream_closed(self, "closed")

    def abort(self, reason: str) -> None:
        """A local failure: reset the stream at the peer and here."""
        if self.closed:
            return
        self.session.reset_stream(self.id, reason)
        self.abort_local()
        self.channel.stream_closed(self, reason)
        self.channel.schedule_flush()

    def abort_local(self) -> None:
        """Close the local socket with RST (peer reset, refusal, channel loss)."""
        if self.closed:
            return
        self.closed = True
        self._release_inbound()
        self._watch.close()
        abort_socket(self.sock)
