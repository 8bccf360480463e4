"""A local connection whose bytes the compiled data plane moves.

Everything about the stream is a ``LocalStream``'s (its host, its closing rules,
what the channel and status see) except where its bytes go: once the stream is
open at both ends (``start_reading``) its socket joins the plane, which reads it
into the send ring and writes the peer's data to it in C, and the session's
record of the stream keeps its counters in the plane (``plane.bind``).  What the
plane reports (EOF, a failed socket, a FIN passed on) comes back through the
channel to the ``on_*`` methods here.  Before it is open, and after it closes,
the stream holds nothing in the plane.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol

from reactor_mux.io import plane as data_plane
from reactor_mux.io.netutil import describe_error, unsent_bytes
from reactor_mux.io.reactor import Reactor
from reactor_mux.protocol.stream import Stream
from reactor_mux.tunnel.localstream import KEEPING_UP_FRACTION, LocalStream, StreamHost


class PlaneHost(StreamHost, Protocol):
    """What a plane stream needs beyond a ``StreamHost``."""

    def flow_record(self, stream_id: int) -> Stream:
        """The session's record of the stream (its counters move into the plane)."""

    def outbound_slot(self, stream_id: int) -> int:
        """The stream's send ring (opened now if it has none)."""

    def plane_acks(self, events: list[data_plane.PlaneEvent]) -> None:
        """Events of a write the plane made for us (ACKs due, a failed socket)."""

    def plane_woken(self) -> None:
        """A stream's window opened: pump soon."""


class PlaneStream(LocalStream):
    __slots__ = ("_handle", "_plane", "_plane_host", "_record", "_totals")

    def __init__(
        self,
        reactor: Reactor,
        host: PlaneHost,
        stream_id: int,
        sock: socket.socket,
        label: str,
        window: int,
        plane: data_plane.Plane,
    ) -> None:
        self._handle = -1  # before LocalStream sets the counters, which read it
        self._totals = (0, 0)  # bytes up and down, kept when the plane lets go
        super().__init__(reactor, host, stream_id, sock, label, window)
        self._plane = plane
        self._plane_host = host
        self._record: Stream | None = None

    # ------------------------------------------------------------- counters

    @property
    def bytes_up(self) -> int:
        if self._handle < 0:
            return self._totals[0]
        count: int = self._plane.flow(self._handle).bytes_up
        return count

    @bytes_up.setter
    def bytes_up(self, value: int) -> None:
        self._totals = (value, self._totals[1])

    @property
    def bytes_down(self) -> int:
        if self._handle < 0:
            return self._totals[1]
        count: int = self._plane.flow(self._handle).bytes_down
        return count

    @bytes_down.setter
    def bytes_down(self, value: int) -> None:
        self._totals = (self._totals[0], value)

    @property
    def inbound_buffered(self) -> int:
        if self._handle < 0:
            return 0
        return self._plane.inbound_buffered(self._handle)

    # ---------------------------------------------------------------- open

    def start_reading(self) -> None:
        """The stream is open at both ends: its socket joins the plane."""
        if self.closed or self._handle >= 0:
            return
        self.reading = True
        self._watch.want(0)  # the plane watches the socket from now on
        plane = self._plane
        record = self._plane_host.flow_record(self.id)
        handle = plane.add(self.id, record.send.size, record.recv.size)
        slot = self._plane_host.outbound_slot(self.id)
        try:
            plane.attach(handle, self.sock, slot)
        except OSError:
            plane.remove(handle)
            raise
        self._handle = handle
        self._record = record
        data_plane.bind(record, plane, handle)  # its state decides what may move

    def _on_io(self, mask: int) -> None:
        if self._handle < 0:  # an event from before the plane took the socket
            super()._on_io(mask)

    def update(self) -> None:
        if self._handle >= 0:
            self._plane.wake(self._handle)
            self._plane_host.plane_woken()
        else:
            super().update()

    def keeping_up(self) -> bool:
        if self.closed or self._handle < 0 or self.inbound_buffered:
            return False
        window: int = self._plane.flow(self._handle).recv_size
        return unsent_bytes(self.sock) < window // KEEPING_UP_FRACTION

    def window_grown(self, window: int) -> None:
        """Nothing to do: the inbound ring's bound is the plane's receive window."""

    def deliver(self, data: memoryview) -> None:
        """Data the plane left to Python (it came in the read that opened the
        stream): the plane writes it, counting it as it counts its own."""
        if self.closed:
            return
        if self._handle < 0:
            super().deliver(data)
            return
        events = self._plane.write(self._handle, data)
        if events:
            self._plane_host.plane_acks(events)

    def peer_finished(self) -> None:
        self.peer_eof = True
        if self._handle < 0:
            super().peer_finished()
        elif not self.closed and self._plane.peer_finished(self._handle):
            self.write_closed = True
            self._close_if_done()

    def release_idle_inbound(self) -> None:
        """The plane gives its rings back itself (``set_inbound_paused``)."""
        if self._handle < 0:
            super().release_idle_inbound()

    # ------------------------------------------------------ what C reports

    def on_plane_event(self, kind: int, value: int) -> None:
        """EOF, a failed socket or a FIN passed on, as the plane reported it."""
        if kind == data_plane.READ_EOF:
            self.on_read_eof()
        elif kind == data_plane.WRITE_CLOSED:
            self.on_write_closed()
        elif kind == data_plane.FAILED:
            self.on_failed(value)

    def on_read_eof(self) -> None:
        self.read_eof = True
        self._host.outbound_eof(self.id)
        self._close_if_done()

    def on_write_closed(self) -> None:
        self.write_closed = True
        self._close_if_done()

    def on_failed(self, error: int) -> None:
        self.abort(f"local connection failed: {describe_error(OSError(error, os.strerror(error)))}")

    # ------------------------------------------------------------- closing

    def _leave_plane(self) -> None:
        """Copy the counters back and forget the socket, before it is closed."""
        handle = self._handle
        if handle < 0:
            return
        flow = self._plane.flow(handle)
        self._totals = (flow.bytes_up, flow.bytes_down)
        if self._record is not None:
            data_plane.unbind(self._record)
            self._record = None
        self._plane.remove(handle)
        self._handle = -1

    def _close_if_done(self) -> None:
        if self.read_eof and self.write_closed and not self.closed:
            self._leave_plane()
        super()._close_if_done()

    def close_local(self) -> None:
        self._leave_plane()
        super().close_local()

    def abort_local(self) -> None:
        self._leave_plane()
        super().abort_local()
