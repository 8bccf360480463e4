"""The compiled data plane (csrc/rmux_plane.c): stream sockets moved in C.

``Engine`` is one epoll set per reactor, watched by the reactor like a socket;
``Engine.pump`` reads and writes every ready stream of every channel in one
call.  ``Plane`` is one channel's part of it: its streams' sockets, their
flow-control counters (``flow``, which the protocol's windows read and write)
and their inbound rings.  docs/design-dataplane.md explains the split.

Available where the compiled codec is built on Linux; ``available()`` says
whether this process can use it.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

try:
    from reactor_mux.codec._ccodec import ffi, lib  # type: ignore[import-not-found]
except ImportError:  # no compiler at install time: the Python data path only
    ffi = lib = None

READ_EOF = 1
FAILED = 2
BLOCKED = 3
ACK = 4
WRITE_CLOSED = 5
OUTPUT = 6

PlaneEvent = tuple[int, int, int, int]
"""(kind, plane tag, stream id, value): see csrc/rmux_plane.h, rmux_event."""

MAX_EVENTS = 4096
"""Events one pump or delivery reports at most; what is left waits for the next call."""

_EVENT = struct.Struct("=IIII")


def available() -> bool:
    """The compiled plane exists and the kernel gives it an epoll set."""
    if lib is None:
        return False
    engine = lib.rmux_engine_new()
    if engine == ffi.NULL:
        return False
    lib.rmux_engine_free(engine)
    return True


def _check(status: int, what: str) -> None:
    if status == 0:
        return
    if status == lib.RMUX_PLANE_NO_MEMORY:
        raise MemoryError(f"data plane: out of memory ({what})")
    if status == lib.RMUX_PLANE_SYSTEM:
        code = ffi.errno
        raise OSError(code, f"data plane: {what}: {errno.errorcode.get(code, code)}")
    raise ValueError(f"data plane: {what} refused")


class Engine:
    """The epoll set every plane of a reactor registers its streams in."""

    def __init__(self) -> None:
        if lib is None:
            raise RuntimeError("the compiled data plane is not built")
        engine = lib.rmux_engine_new()
        if engine == ffi.NULL:
            raise OSError(ffi.errno, "data plane: no epoll set")
        self._engine = ffi.gc(engine, lib.rmux_engine_free)
        self._events = ffi.new("rmux_event[]", MAX_EVENTS)
        self._events_buffer = ffi.buffer(self._events)
        self.planes = 0

    def fileno(self) -> int:
        fd: int = lib.rmux_engine_fd(self._engine)
        return fd

    @property
    def backlog(self) -> int:
        """Streams the last pump left work for (a call soon should go on)."""
        count: int = lib.rmux_engine_backlog(self._engine)
        return count

    def pump(self) -> list[PlaneEvent]:
        """Move every ready stream's bytes; return what Python must act on."""
        count = lib.rmux_engine_pump(self._engine, self._events, MAX_EVENTS)
        if not count:
            return []
        return list(_EVENT.iter_unpack(self._events_buffer[: count * _EVENT.size]))

    def close(self) -> None:
        """Free the epoll set; every plane must be closed first."""
        if self.planes:
            raise RuntimeError("data plane: engine closed with planes open")
        engine, self._engine = self._engine, ffi.NULL
        if engine != ffi.NULL:
            ffi.release(engine)


class Plane:
    """One channel's streams in the engine.  ``tx`` is the channel's compiled
    send queue (``codec._c.OutboundQueue``), which must outlive the plane."""

    def __init__(self, engine: Engine, tx: Any, tag: int) -> None:
        plane = lib.rmux_plane_new(engine._engine, tx._tx, tag)
        if plane == ffi.NULL:
            raise MemoryError("data plane: out of memory (plane)")
        self._engine = engine
        self._tx = tx  # keeps the send queue alive as long as the plane
        self._plane = plane
        self.tag = tag
        self._events = ffi.new("rmux_event[]", MAX_EVENTS)
        self._events_buffer = ffi.buffer(self._events)
        self._index = ffi.new("size_t *")
        engine.planes += 1

    def close(self) -> None:
        """Forget every stream (their sockets stay open: their owners close them)."""
        plane, self._plane = self._plane, ffi.NULL
        if plane != ffi.NULL:
            lib.rmux_plane_free(plane)
            self._engine.planes -= 1

    def add(self, stream_id: int, send_window: int, receive_window: int) -> int:
        """Track a stream; returns its handle."""
        handle: int = lib.rmux_plane_add(self._plane, stream_id, send_window, receive_window)
        if handle < 0:
            _check(handle, f"add stream {stream_id}")
        return handle

    def flow(self, handle: int) -> Any:
        """The stream's counters (``rmux_flow *``), valid until ``remove``."""
        flow = lib.rmux_plane_flow(self._plane, handle)
        if flow == ffi.NULL:
            raise ValueError(f"data plane: no stream with handle {handle}")
        return flow

    def attach(self, handle: int, sock: socket.socket, tx_slot: int) -> None:
        """Move the socket's bytes in C from now on (it stays the caller's to close)."""
        _check(lib.rmux_plane_attach(self._plane, handle, sock.fileno(), tx_slot), "attach")

    def detach(self, handle: int) -> None:
        _check(lib.rmux_plane_detach(self._plane, handle), "detach")

    def remove(self, handle: int) -> None:
        _check(lib.rmux_plane_remove(self._plane, handle), "remove")

    def set_receiving(self, handle: int, receiving: bool) -> None:
        _check(lib.rmux_plane_set_receiving(self._plane, handle, receiving), "set_receiving")

    def set_sending(self, handle: int, sending: bool) -> None:
        _check(lib.rmux_plane_set_sending(self._plane, handle, sending), "set_sending")

    def wake(self, handle: int) -> None:
        """The send window opened: read the socket again at the next pump."""
        _check(lib.rmux_plane_wake(self._plane, handle), "wake")

    def peer_finished(self, handle: int) -> bool:
        """The peer's FIN arrived; True if EOF was passed on now (else WRITE_CLOSED
        reports it once the inbound ring is written)."""
        done: int = lib.rmux_plane_peer_finished(self._plane, handle)
        if done < 0:
            _check(done, "peer_finished")
        return done == 1

    def inbound_buffered(self, handle: int) -> int:
        count: int = lib.rmux_plane_inbound_buffered(self._plane, handle)
        if count < 0:
            _check(count, "inbound_buffered")
        return count

    @property
    def inbound_held(self) -> int:
        """Storage every inbound ring of the plane holds (the inbound cap counts it)."""
        held: int = lib.rmux_plane_inbound_held(self._plane)
        return held

    def release_idle_inbound(self) -> int:
        released: int = lib.rmux_plane_release_idle_inbound(self._plane)
        return released

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) reading local sockets: the channel's outbound cap."""
        lib.rmux_plane_set_paused(self._plane, paused)

    def set_inbound_paused(self, paused: bool) -> None:
        """Give inbound rings back as they empty: the channel's inbound cap."""
        lib.rmux_plane_set_inbound_paused(self._plane, paused)

    def deliver(
        self, staging: Any, staging_length: int, records: Any, count: int, index: int
    ) -> tuple[int, list[PlaneEvent]]:
        """Deliver data records from ``index`` on until one Python must handle;
        returns that record's index (``count`` if none) and the events."""
        self._index[0] = index
        n = lib.rmux_plane_deliver(
            self._plane, staging, staging_length, records, count, self._index,
            self._events, MAX_EVENTS,
        )  # fmt: skip
        events = list(_EVENT.iter_unpack(self._events_buffer[: n * _EVENT.size])) if n else []
        return self._index[0], events
