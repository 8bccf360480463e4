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
import math
import os
import socket
import struct
from typing import Any, Protocol

from reactor_mux.io.reactor import PROCESS, READ, IOWatch, Reactor
from reactor_mux.protocol.stream import RECEIVING_STATES, SENDING_STATES, Stream
from reactor_mux.protocol.streamstate import StreamState
from reactor_mux.protocol.windows import ReceiveWindow, SendWindow

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
SENT = 7
FIN_SENT = 8
OUTPUT_LEFT = 9
CHANNEL_FAILED = 10
CHANNEL_INPUT = 11
CHANNEL_READABLE = 12
CHANNEL_EOF = 13
CHANNEL_READ_FAILED = 14
CHANNEL_TLS_FAILED = 15
RING_FREED = 16

PlaneEvent = tuple[int, int, int, int]
"""(kind, plane tag, stream id, value): see csrc/rmux_plane.h, rmux_event."""

MAX_EVENTS = 4096
"""Events one pump or delivery reports at most; what is left waits for the next call."""

_EVENT = struct.Struct("=IIII")
_ACK_BATCH = 256


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
        # One set of out-arrays for the engine and all its planes (64 KiB of events
        # each would be most of an idle channel's memory): the reactor is
        # single-threaded, and every call copies its events out before it returns.
        self._events = ffi.new("rmux_event[]", MAX_EVENTS)
        self._events_buffer = ffi.buffer(self._events)
        self._left = ffi.new("uint64_t *")
        self._index = ffi.new("size_t *")
        self._ack_ids = ffi.new("uint32_t[]", _ACK_BATCH)
        self._ack_counts = ffi.new("uint32_t[]", _ACK_BATCH)
        self._pong_token = ffi.new("uint32_t *")
        self._pong_at = ffi.new("double *")
        self._outer_ready = ffi.new("int *")
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

    def watch_outer(self, fd: int, watch: bool = True) -> bool:
        """Put the selector's epoll set ``fd`` in the engine's (or take it out), so
        ``wait`` can be the reactor's wait; False where epoll refuses (the engine is
        then watched by the selector instead)."""
        status: int = lib.rmux_engine_watch_outer(self._engine, fd, int(watch))
        return status == 0

    def wait(self, timeout_ms: int) -> tuple[list[PlaneEvent], bool]:
        """Pump until there are events for Python or the outer set is ready (the
        second value), a signal came, or ``timeout_ms`` (-1: none) is up."""
        count = lib.rmux_engine_wait(self._engine, timeout_ms, self._events, MAX_EVENTS,
                                     self._outer_ready)  # fmt: skip
        status = self._outer_ready[0]
        if status < 0:
            raise OSError(-status, f"data plane: epoll_wait: {os.strerror(-status)}")
        outer = bool(status)
        if not count:
            return [], outer
        return list(_EVENT.iter_unpack(self._events_buffer[: count * _EVENT.size])), outer

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
        self._events, self._events_buffer = engine._events, engine._events_buffer
        self._left, self._index = engine._left, engine._index
        self._ack_ids, self._ack_counts = engine._ack_ids, engine._ack_counts
        self._pong_token, self._pong_at = engine._pong_token, engine._pong_at
        self._report_held = 0
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

    def set_channel(self, fd: int, tls: int = 0) -> None:
        """The channel's socket (-1: none), for the pump to send on, and the TLS
        session it sends through (io/nativetls.py; 0: plain)."""
        lib.rmux_plane_set_channel(self._plane, fd, tls)

    def set_send_ok(self, ok: bool) -> None:
        """Whether the pump may send now (Python has nothing of its own to go first)."""
        lib.rmux_plane_set_send_ok(self._plane, ok)

    def set_input(self, rx: Any, fd: int, tls: int = 0) -> None:
        """Read the channel's socket ``fd`` into the decoder's ``rx`` in the pump
        (-1: Python reads it), through the TLS session ``tls`` where not 0."""
        _check(lib.rmux_plane_set_input(self._plane, ffi.NULL if rx is None else rx, fd, tls),
               "set_input")  # fmt: skip

    def wake_input(self) -> None:
        """Python handled the input the plane left it: read the channel again."""
        lib.rmux_plane_wake_input(self._plane)

    @property
    def channel_reads(self) -> int:
        """Reads the plane made of the channel (traffic, for the keepalive)."""
        count: int = lib.rmux_plane_channel_reads(self._plane)
        return count

    @property
    def last_read_at(self) -> float:
        """When the plane last read the channel (time.monotonic's clock, coarse; 0.0:
        never): the keepalive's evidence that the peer talks."""
        at: float = lib.rmux_plane_last_read_at(self._plane)
        return at

    def set_inbound_limit(self, limit: int) -> None:
        """The inbound cap: past it, the plane leaves the channel's reads to Python."""
        lib.rmux_plane_set_inbound_limit(self._plane, limit)

    def set_send_reports(self, every: int, held: int) -> None:
        """Report the pump's own sends (SENT) once ``every`` are unreported, or once
        the send rings hold ``held`` bytes (0: not for that)."""
        self._report_held = held
        lib.rmux_plane_set_send_reports(self._plane, every, held)

    def pace_sends(self, every: int) -> None:
        """``set_send_reports`` with the held bytes set last."""
        lib.rmux_plane_set_send_reports(self._plane, every, self._report_held)

    def take_sends(self) -> int:
        """The pump's sends not reported yet (now reported)."""
        count: int = lib.rmux_plane_take_sends(self._plane)
        return count

    def set_max_window(self, max_window: int) -> None:
        """The largest window this side grants: the plane takes a BLOCKED at it."""
        lib.rmux_plane_set_max_window(self._plane, max_window)

    def set_growth_left(self, growth_left: int) -> None:
        """Window growth the session may still grant: the plane takes a BLOCKED
        whose doubling would pass it."""
        lib.rmux_plane_set_growth_left(self._plane, growth_left)

    def has_backlog(self) -> bool:
        """Streams have work a pump should do (an ACK the plane took opened a window)."""
        return bool(lib.rmux_engine_backlog(self._engine._engine))

    def take_acks(self) -> list[tuple[int, int]]:
        """Our ACKs the plane sent itself, oldest first, as (stream id, count)."""
        acks: list[tuple[int, int]] = []
        while True:
            n = lib.rmux_plane_take_acks(self._plane, self._ack_ids, self._ack_counts, _ACK_BATCH)
            acks += zip(self._ack_ids[0:n], self._ack_counts[0:n], strict=True)
            if n < _ACK_BATCH:
                return acks

    def take_pong(self) -> tuple[int, float] | None:
        """The last keepalive PONG the plane took since the last call: its token and
        when it came (``time.monotonic``); None if none came."""
        if not lib.rmux_plane_take_pongs(self._plane, self._pong_token, self._pong_at):
            return None
        return int(self._pong_token[0]), float(self._pong_at[0])

    def take_commands(self) -> int:
        """The peer's ACKs and BLOCKEDs the plane took itself since the last call
        (each one a command the resume log counts)."""
        count: int = lib.rmux_plane_take_commands(self._plane)
        return count

    def hold_output(self) -> None:
        """The session queued a command: it goes first, in Python's next flush."""
        lib.rmux_plane_set_send_ok(self._plane, 0)

    def set_paused(self, paused: bool) -> None:
        """Stop (or resume) reading local sockets: the channel's outbound cap."""
        lib.rmux_plane_set_paused(self._plane, paused)

    def set_inbound_paused(self, paused: bool) -> None:
        """Give inbound rings back as they empty: the channel's inbound cap."""
        lib.rmux_plane_set_inbound_paused(self._plane, paused)

    def write(self, handle: int, data: memoryview) -> list[PlaneEvent]:
        """Write data the session already counted as received (a record that
        ``deliver`` left to Python) to the stream's socket or inbound ring."""
        pointer = ffi.from_buffer(data)
        n = lib.rmux_plane_write(self._plane, handle, pointer, len(data), self._events, MAX_EVENTS)
        return list(_EVENT.iter_unpack(self._events_buffer[: n * _EVENT.size])) if n else []

    def take_input(self, rx: Any, count: int) -> tuple[int, list[PlaneEvent]]:
        """Python read ``count`` bytes of the channel after ``rx``'s end: the plane
        delivers the leading data frames in place.  Returns the bytes left for
        Python's own decoding (0: none) and the plane's events."""
        n = lib.rmux_plane_input(self._plane, rx, count, self._left, self._events, MAX_EVENTS)
        events = list(_EVENT.iter_unpack(self._events_buffer[: n * _EVENT.size])) if n else []
        left: int = self._left[0]
        return left, events

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


# ---------------------------------------------------------------- counters
#
# While a stream's socket is in a plane, its counters live in the plane's
# rmux_flow, where the pump and delivery change them.  The session keeps using
# its Stream record and the windows' methods (protocol/windows.py, the one place
# the rules are written): these subclasses only move the attributes those
# methods read and write into the rmux_flow, and FlowStream tells the plane when
# the stream's state lets the peer send or the socket be read.

_STREAM_FIELDS = {"received": "recv_total", "written": "send_total",
                  "blocked_reported": "blocked_reported", "acked": "acked",
                  "released": "released"}  # fmt: skip


def _field(name: str) -> property:
    def get(self: Any) -> int:
        value: int = getattr(self._flow, name)
        return value

    def put(self: Any, value: int) -> None:
        setattr(self._flow, name, value)

    return property(get, put)


class FlowSendWindow(SendWindow):
    """A SendWindow whose numbers are a plane's."""

    __slots__ = ("_flow",)
    size = _field("send_size")
    unacked = _field("send_unacked")

    def __init__(self, flow: Any) -> None:
        self._flow = flow


class FlowReceiveWindow(ReceiveWindow):
    """A ReceiveWindow whose numbers are a plane's."""

    __slots__ = ("_flow",)
    size = _field("recv_size")
    unacked = _field("recv_unacked")
    undelivered = _field("recv_undelivered")
    delivered_unacked = _field("recv_delivered_unacked")
    threshold = _field("recv_threshold")

    def __init__(self, flow: Any) -> None:
        self._flow = flow


def _total(name: str) -> property:
    """A Stream record's count kept in its plane's flow (FlowStream's)."""

    def get(self: Any) -> int:
        value: int = getattr(self._flow(), name)
        return value

    def put(self: Any, value: int) -> None:
        setattr(self._flow(), name, value)

    return property(get, put)


_STATE = Stream.__dict__["state"]
_FIN_PENDING = Stream.__dict__["fin_pending"]
_SLOTS = {name: Stream.__dict__[name] for name in _STREAM_FIELDS}


class FlowStream(Stream):
    """A Stream record whose counters are a plane's (set by ``bind``, undone by
    ``unbind``).  Its state and FIN tell the plane what may move."""

    __slots__ = ()

    def _flow(self) -> Any:
        binding: FlowBinding = self.flow_owner  # type: ignore[assignment]
        return binding.flow

    def _flags_changed(self) -> None:
        binding: FlowBinding = self.flow_owner  # type: ignore[assignment]
        state = _STATE.__get__(self)
        binding.plane.set_receiving(binding.handle, state in RECEIVING_STATES)
        binding.plane.set_sending(
            binding.handle, state in SENDING_STATES and not _FIN_PENDING.__get__(self)
        )

    @property
    def state(self) -> StreamState:
        value: StreamState = _STATE.__get__(self)
        return value

    @state.setter
    def state(self, value: StreamState) -> None:
        if value is not _STATE.__get__(self):  # most transitions (data, ACK) keep it
            _STATE.__set__(self, value)
            self._flags_changed()

    @property
    def fin_pending(self) -> bool:
        value: bool = _FIN_PENDING.__get__(self)
        return value

    @fin_pending.setter
    def fin_pending(self, value: bool) -> None:
        _FIN_PENDING.__set__(self, value)
        self._flags_changed()

    received = _total("recv_total")
    written = _total("send_total")
    acked = _total("acked")
    released = _total("released")

    @property
    def blocked_reported(self) -> bool:
        return bool(self._flow().blocked_reported)

    @blocked_reported.setter
    def blocked_reported(self, value: bool) -> None:
        self._flow().blocked_reported = int(value)


class FlowBinding:
    """What a bound Stream record keeps in ``flow_owner``."""

    __slots__ = ("flow", "handle", "plane")

    def __init__(self, plane: Plane, handle: int, flow: Any) -> None:
        self.plane = plane
        self.handle = handle
        self.flow = flow


def bind(record: Stream, plane: Plane, handle: int) -> None:
    """Move the record's counters into the plane's flow for ``handle`` and make it
    a FlowStream; the session goes on using it as before."""
    flow = plane.flow(handle)
    send, recv = record.send, record.recv
    flow.send_size, flow.send_unacked = send.size, send.unacked
    flow.recv_size, flow.recv_unacked = recv.size, recv.unacked
    flow.recv_undelivered, flow.recv_delivered_unacked = recv.undelivered, recv.delivered_unacked
    flow.recv_threshold = recv.threshold
    flow.recv_total, flow.send_total = record.received, record.written
    flow.blocked_reported = int(record.blocked_reported)
    flow.acked, flow.released = record.acked, record.released
    record.flow_owner = FlowBinding(plane, handle, flow)
    record.send = FlowSendWindow(flow)
    record.recv = FlowReceiveWindow(flow)
    record.__class__ = FlowStream
    record._flags_changed()  # type: ignore[attr-defined]


def unbind(record: Stream) -> None:
    """Copy the counters back into plain Python objects, before the plane forgets
    the stream (a resume's tombstone may still read them)."""
    if not isinstance(record, FlowStream):
        return
    flow = record._flow()
    totals = {name: getattr(flow, field) for name, field in _STREAM_FIELDS.items()}
    send, recv = SendWindow(flow.send_size), ReceiveWindow(flow.recv_size)
    send.unacked = flow.send_unacked
    recv.unacked, recv.undelivered = flow.recv_unacked, flow.recv_undelivered
    recv.delivered_unacked, recv.threshold = flow.recv_delivered_unacked, flow.recv_threshold
    record.__class__ = Stream  # type: ignore[assignment]
    record.send, record.recv = send, recv
    for name, value in totals.items():
        _SLOTS[name].__set__(record, bool(value) if name == "blocked_reported" else value)
    record.flow_owner = None


# ------------------------------------------------------------------- the loop


class PlaneOwner(Protocol):
    """A channel with a plane: told its events after each pump."""

    def on_plane_events(self, events: list[PlaneEvent]) -> None: ...

    def close_after_bug(self) -> None: ...


MAX_WAIT_MS = 2**31 - 1
"""epoll_wait's longest timeout; a longer one waits again."""


class PlaneHub:
    """The reactor's engine, and the reactor's wait: the selector's epoll set sits
    in the engine's, so one epoll_wait serves both and a wake-up that only the
    plane has work for never reaches Python (docs/design-dataplane.md).  Where
    that is refused, the engine is a watch in the selector, pumped when its
    descriptor is ready.  Either way it is pumped again soon while streams have
    work left (or a window opened), and each plane's events go to its channel
    under the reactor's guard (a bug costs that channel only)."""

    def __init__(self, reactor: Reactor) -> None:
        self.engine = Engine()
        self._reactor = reactor
        self._owners: dict[int, PlaneOwner] = {}
        self._next_tag = 1
        self._pump_pending = False
        self._watch: IOWatch | None = None
        fileno = getattr(reactor.selector, "fileno", None)  # an epoll set's; poll has none
        self._outer_fd: int = fileno() if fileno is not None else -1
        self.waits = self._outer_fd >= 0 and self.engine.watch_outer(self._outer_fd)
        if not self.waits:
            self._watch_engine()

    def _watch_engine(self) -> None:
        """The other arrangement: the engine is a watch in the selector, pumped when
        its descriptor is ready."""
        self._watch = IOWatch(self._reactor, self.engine, self.pump, PROCESS)
        self._watch.want(READ)

    def stop_waiting(self) -> None:
        """The wait failed (``Reactor._wait_in_plane`` logged why): take the selector's
        set out of the engine and watch the engine from the selector, for good, so
        a wait that keeps failing costs one error, not a loop of them."""
        if not self.waits:
            return
        self.waits = False
        self.engine.watch_outer(self._outer_fd, watch=False)
        self._watch_engine()

    def new_plane(self, tx: Any, owner: PlaneOwner) -> Plane:
        tag = self._next_tag
        self._next_tag = tag + 1 if tag < 0xFFFFFFFF else 1
        plane = Plane(self.engine, tx, tag)
        self._owners[tag] = owner
        return plane

    def close_plane(self, plane: Plane) -> None:
        self._owners.pop(plane.tag, None)
        plane.close()

    def close(self) -> None:
        """The reactor closes: stop watching, and free the epoll set."""
        self.waits = False
        if self._watch is not None:
            self._watch.close()
        self._owners.clear()
        if not self.engine.planes:  # else the last plane's owner keeps it until collected
            self.engine.close()

    def pump_soon(self) -> None:
        """A window opened or a plane resumed: pump at the end of this tick.  (The
        work is on the engine's work list, which the next wait takes first without
        blocking: only the selector's arrangement needs the call.)"""
        if not self._pump_pending and not self.waits:
            self._pump_pending = True
            self._reactor.call_soon(self._pump_now, PROCESS)

    def _pump_now(self) -> None:
        self._pump_pending = False
        self.pump()

    def wait(self, timeout: float | None) -> bool:
        """The reactor's wait (``Reactor._run``): move bytes until Python has events
        to handle or ``timeout`` is up, and hand out the plane's events; True when
        the selector has descriptors ready.  The timeout is rounded up to whole
        milliseconds, as ``selectors`` rounds it."""
        timeout_ms = -1 if timeout is None else min(math.ceil(timeout * 1e3), MAX_WAIT_MS)
        events, outer = self.engine.wait(timeout_ms)
        if events:
            self._hand_out(events)
        return outer

    def pump(self, _mask: int = 0) -> None:
        """Pump once (the selector calls it with the ready mask, which says nothing
        more: the engine knows what is ready) and hand out the events."""
        events = self.engine.pump()
        if events:
            self._hand_out(events)
        self._pump_again_if_work_left()

    def _pump_again_if_work_left(self) -> None:
        """The selector's arrangement pumps again soon while streams have work left;
        the wait goes on with the work list itself."""
        if not self.waits and lib.rmux_engine_backlog(self.engine._engine):
            self.pump_soon()

    def _hand_out(self, events: list[PlaneEvent]) -> None:
        """Each plane's events to its channel, in the order they happened."""
        owners = self._owners
        guarded = self._reactor.call_guarded
        if len(owners) == 1:  # a client's one channel: every event is its own
            [(tag, only)] = owners.items()  # not a loop: the call may change owners
            if events[0][1] == tag:
                guarded(only, only.on_plane_events, events)
            return
        by_plane: dict[int, list[PlaneEvent]] = {}
        for event in events:  # each channel's events, in the order they happened
            by_plane.setdefault(event[1], []).append(event)
        for tag, mine in by_plane.items():
            owner = owners.get(tag)
            if owner is not None:
                guarded(owner, owner.on_plane_events, mine)


POLICY_VARIABLE = "REACTOR_MUX_DATA_PLANE"
"""``python`` keeps the Python data path even with the compiled codec (for
comparisons); anything else uses the compiled plane where it exists."""


def hub_for(reactor: Reactor) -> PlaneHub | None:
    """The reactor's plane hub, made on first use; None where the compiled plane
    is not used (see ``enabled``)."""
    hub = reactor.plane_hub
    if hub is None:
        if not enabled():
            return None
        hub = reactor.plane_hub = PlaneHub(reactor)
    assert isinstance(hub, PlaneHub)
    return hub


def enabled() -> bool:
    """Channels use the compiled plane: the codec is compiled, the kernel has
    epoll, and REACTOR_MUX_DATA_PLANE is not ``python``."""
    from reactor_mux import codec

    if os.environ.get(POLICY_VARIABLE, "").strip().lower() == "python":
        return False
    return codec.BACKEND == "c" and available()
