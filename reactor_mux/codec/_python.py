"""Pure-Python codec: the reference the compiled backend must match byte for byte.

Three jobs, each one call per socket operation rather than per frame:

* ``scan_frames``: find the complete frames of a buffer (headers are checked
  as soon as their 9 bytes are in: kind first, then length against that
  kind's limit, so an oversized body is refused before it is buffered);
* ``InboundDecoder``: after each ``recv_into``, scan the buffer and *splice*
  every run of data frames into a staging buffer, grouped per stream in order
  of first appearance, so the caller handles one record per stream and per
  command instead of one per frame;
* ``OutboundQueue``: per-stream rings filled straight from local sockets, and
  one output FIFO that ``fill`` assembles (control frames first, then one data
  frame per ready stream per round, round-robin, then a stream's FIN once its
  ring is empty) and ``sendmsg`` drains.

``_c.py`` wraps the same algorithms compiled from ``csrc/``; the differential
tests drive both with identical inputs and compare every output.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

HEADER = struct.Struct(">IIB")
HEADER_SIZE = HEADER.size

KIND_DATA = 0
KIND_COMMAND = 1
KIND_DATAGRAM = 2

OK = 0
ERR_DATA_TOO_LARGE = 1
ERR_COMMAND_TOO_LARGE = 2
ERR_BAD_KIND = 3
ERR_DATAGRAM_TOO_LARGE = 7

ERROR_MESSAGES = {
    ERR_DATA_TOO_LARGE: "data frame body exceeds the maximum frame size",
    ERR_COMMAND_TOO_LARGE: "command frame body exceeds the maximum command size",
    ERR_BAD_KIND: "frame kind byte is not 0 (data), 1 (command) or 2 (datagram)",
    ERR_DATAGRAM_TOO_LARGE: "datagram frame body exceeds the maximum frame size",
}

RECORD_DATA = 0
RECORD_COMMAND = 1
RECORD_DATAGRAM = 2

MAX_FRAMES_PER_SCAN = 4096
"""Frames handled per codec call; a buffer holding more takes several calls."""

MAX_BUFFER = 2**31
"""The largest receive buffer a decoder may be given.  The compiled codec holds
offsets into it as 32-bit numbers (csrc/rmux_codec.h, RMUX_MAX_BUFFER), and this
backend refuses the same sizes so that the two accept the same arguments."""

FIN_BODY = b"FIN"

Frame = tuple[int, int, int, int]
"""``(stream_id, kind, body_offset, body_length)``"""

Record = tuple[int, int, int, int]
"""``(RECORD_DATA, stream_id, staging_offset, length)`` for a stream's spliced data, or
``(RECORD_COMMAND, stream_id, buffer_offset, length)`` for a command body (and
``RECORD_DATAGRAM`` alike for a datagram's)."""

Buffer = bytes | bytearray | memoryview


def encode_header(length: int, stream_id: int, kind: int) -> bytes:
    """Return the 9 header bytes of a frame with a ``length``-byte body."""
    return HEADER.pack(length, stream_id, kind)


def scan_frames(
    buf: Buffer,
    start: int,
    end: int,
    max_data: int,
    max_command: int,
    max_frames: int = MAX_FRAMES_PER_SCAN,
) -> tuple[list[Frame], int, int]:
    """Parse up to ``max_frames`` complete frames in ``buf[start:end]``.

    Returns ``(frames, next_start, error)``.  On a violation, ``next_start``
    is the offset of the offending header and ``error`` says what is wrong.
    A buffer over ``MAX_BUFFER`` is refused (ValueError), as the C codec does.
    """
    if len(buf) > MAX_BUFFER:
        raise ValueError(f"buffer larger than {MAX_BUFFER} bytes")
    frames: list[Frame] = []
    append = frames.append
    unpack = HEADER.unpack_from
    pos = start
    while end - pos >= HEADER_SIZE and len(frames) < max_frames:
        length, stream_id, kind = unpack(buf, pos)
        if kind == KIND_DATA:
            if length > max_data:
                return frames, pos, ERR_DATA_TOO_LARGE
        elif kind == KIND_COMMAND:
            if length > max_command:
                return frames, pos, ERR_COMMAND_TOO_LARGE
        elif kind == KIND_DATAGRAM:
            if length > max_data:
                return frames, pos, ERR_DATAGRAM_TOO_LARGE
        else:
            return frames, pos, ERR_BAD_KIND
        body = pos + HEADER_SIZE
        if end - body < length:
            break
        append((stream_id, kind, body, length))
        pos = body + length
    return frames, pos, OK


def splice_frames(
    buf: Buffer,
    frames: list[Frame],
    staging: bytearray | memoryview,
    staged: int,
) -> tuple[list[Record], int]:
    """Turn scanned frames into records, copying data payloads into ``staging``.

    A run of consecutive data frames becomes one record per stream, in order of
    each stream's first frame in the run, its payloads concatenated from
    ``staging[staged:]`` on.  Returns ``(records, new_staged)``.
    """
    records: list[Record] = []
    count = len(frames)
    index = 0
    while index < count:
        stream_id, kind, offset, length = frames[index]
        if kind != KIND_DATA:  # a command or a datagram: its body in place
            record = RECORD_COMMAND if kind == KIND_COMMAND else RECORD_DATAGRAM
            records.append((record, stream_id, offset, length))
            index += 1
            continue
        groups: dict[int, list[int]] = {}
        while index < count:
            stream_id, kind, offset, length = frames[index]
            if kind != KIND_DATA:
                break
            segments = groups.get(stream_id)
            if segments is None:
                groups[stream_id] = [offset, length]
            else:
                segments += (offset, length)
            index += 1
        for stream_id, segments in groups.items():  # dicts keep first-appearance order
            start = staged
            for i in range(0, len(segments), 2):
                offset, length = segments[i], segments[i + 1]
                staging[staged : staged + length] = buf[offset : offset + length]
                staged += length
            records.append((RECORD_DATA, stream_id, start, staged - start))
    return records, staged


INITIAL_RECEIVE = 2 * 1024
"""Receive (and staging) buffer a channel starts with, and takes again after it
gave its buffers back while quiet: an idle channel holds this much (its
keepalives never fill it), a busy one grows it (doubling, a read that fills it
at a time) to ``buffer_size`` within its first few reads."""


PLANE_FAILED = 2
PLANE_ACK = 4
"""The event kinds of the compiled data plane that the session acts on
(csrc/rmux_plane.h, rmux_event_kind)."""

PlaneEvent = tuple[int, int, int, int]


class DataPlane(Protocol):
    """What a decoder's ``advance_through`` needs of the compiled data plane
    (reactor_mux/io/plane.py): deliver the data records it can, from ``index``
    on, and say where it stopped."""

    def deliver(
        self, staging: Any, staging_length: int, records: Any, count: int, index: int
    ) -> tuple[int, list[PlaneEvent]]: ...

    def hold_output(self) -> None:
        """The session queued a command: the plane sends nothing before Python's flush."""

    def take_sends(self) -> int:
        """The sends the plane made itself and has not reported yet."""
        ...

    def take_commands(self) -> int:
        """The peer's commands (ACK, BLOCKED) the plane took itself since the last call."""
        ...

    def take_acks(self) -> list[tuple[int, int]]:
        """Our ACKs the plane sent itself, oldest first: (stream id, count)."""
        ...

    def set_growth_left(self, growth_left: int) -> None:
        """Window growth the session may still grant (a BLOCKED past it asks for nothing)."""

    def pace_sends(self, every: int) -> None:
        """Report the plane's own sends once ``every`` are unreported."""


class InboundDecoder:
    """Receive buffer + staging buffer for one channel.

    The buffers start at ``INITIAL_RECEIVE`` and double, up to ``buffer_size``,
    when a read fills all that was offered or a frame needs more room; a
    partial frame is moved to the front when the free tail gets short.
    ``release`` gives both back (they come again with the next ``writable``), so
    a closed channel waiting for the garbage collector holds nothing large."""

    def __init__(self, max_data: int, max_command: int, buffer_size: int) -> None:
        self._check(max_data, max_command, buffer_size)
        self._capacity = buffer_size
        self._buffer = bytearray()
        self.buffer = memoryview(self._buffer)
        self._staging = bytearray()
        self.staging = memoryview(self._staging)
        self._start = 0
        self._end = 0
        self._offered = 0  # what the last writable() offered
        self._filled = False  # and the read after it took all of it
        self._max_data = max_data
        self._max_command = max_command
        self.error = OK
        """``advance_through``: the error ``advance`` would have returned."""
        self.plane_events: list[PlaneEvent] = []
        """``advance_through``: what the data plane reported."""

    @staticmethod
    def _check(max_data: int, max_command: int, buffer_size: int) -> None:
        if buffer_size < 2 * (HEADER_SIZE + max(max_data, max_command)):
            raise ValueError("receive buffer must hold two maximum frames")
        if buffer_size > MAX_BUFFER:
            raise ValueError(f"receive buffer may not exceed {MAX_BUFFER} bytes")

    def limit(self, max_data: int, buffer_size: int) -> None:
        """Change the largest data body accepted and how far the buffers may grow (the
        session keeps both small until the peer has authenticated)."""
        self._check(max_data, self._max_command, buffer_size)
        self._max_data = max_data
        self._capacity = buffer_size

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back for the next read."""
        return self._end - self._start

    @property
    def size(self) -> int:
        """Bytes the receive buffer holds allocated now (the staging buffer as many)."""
        return len(self._buffer)

    def writable(self) -> memoryview:
        """The free tail of the receive buffer (moving a partial frame first, or
        growing the buffers, if needed)."""
        start, end = self._start, self._end
        size = len(self._buffer)
        if start == end and size and (size >= self._capacity or not self._filled):
            # Most reads: everything parsed, and no reason to grow.
            self._start = self._end = 0
            self._offered = size
            return self.buffer
        pending = end - start
        if not pending:
            self._start = self._end = start = end = 0
        want = min(INITIAL_RECEIVE, self._capacity) if size == 0 else size
        if self._filled and want < self._capacity:
            want = min(2 * want, self._capacity)
        if pending >= HEADER_SIZE:  # a partial frame: room for all of it
            body = HEADER.unpack_from(self._buffer, start)[0]
            want = max(want, min(self._capacity, _next_power(HEADER_SIZE + body)))
        if want > size:
            self._resize(want)
        elif size - end < max(HEADER_SIZE, size // 4) and start:
            self._buffer[0:pending] = self.buffer[start:end]
            self._start, self._end = 0, pending
        view = self.buffer[self._end :]
        self._offered = len(view)
        return view

    def _resize(self, size: int) -> None:
        """New buffers of ``size`` bytes, the partial frame moved to the front."""
        start, end = self._start, self._end
        buffer = bytearray(size)
        buffer[0 : end - start] = self.buffer[start:end]
        self._buffer, self.buffer = buffer, memoryview(buffer)
        self._staging = bytearray(size)
        self.staging = memoryview(self._staging)
        self._start, self._end = 0, end - start
        self._buffers_changed()

    def release(self) -> None:
        """Give the buffers back if no partial frame is held (they return on demand)."""
        if self._start == self._end and self._buffer:
            self._start = self._end = 0
            self._filled = False
            self._buffer, self._staging = bytearray(), bytearray()
            self.buffer, self.staging = memoryview(self._buffer), memoryview(self._staging)
            self._buffers_changed()

    def release_grown(self) -> None:
        """A quiet channel: give back buffers a burst grew past ``INITIAL_RECEIVE``;
        first-size ones stay (the keepalives would only take them again)."""
        if len(self._buffer) > INITIAL_RECEIVE:
            self.release()

    def _buffers_changed(self) -> None:
        """The buffers were replaced (the compiled twin re-points at them)."""

    def advance(self, count: int) -> tuple[list[Record], int]:
        """Account ``count`` received bytes; return ``(records, error)``.

        Records before a violation are valid; after one, nothing more is parsed.
        """
        self._filled = count >= self._offered
        self._end += count
        records: list[Record] = []
        staged = 0
        while True:
            frames, self._start, error = scan_frames(
                self._buffer, self._start, self._end, self._max_data, self._max_command
            )
            more, staged = splice_frames(self._buffer, frames, self._staging, staged)
            records += more
            if error:
                self._end = self._start
                return records, error
            if len(frames) < MAX_FRAMES_PER_SCAN:
                return records, OK

    def advance_through(self, count: int, plane: DataPlane) -> Iterator[Record]:
        """``advance`` for a caller with a data plane: this decoder has no records
        in C to hand it, so every record is the caller's (the compiled twin
        delivers data records through ``plane`` instead)."""
        records, self.error = self.advance(count)
        self.plane_events = []
        yield from records


def _next_power(value: int) -> int:
    return 1 << (value - 1).bit_length()


class _TxStream:
    __slots__ = (
        "fin_pending",
        "grow_next",
        "head",
        "in_ready",
        "limit",
        "retained",
        "ring",
        "size",
        "stream_id",
    )

    def __init__(self, stream_id: int, limit: int) -> None:
        self.stream_id = stream_id
        self.ring = bytearray()
        self.head = 0
        self.size = 0
        self.retained = 0  # sent, not yet acknowledged: the bytes just behind head
        self.limit = limit
        self.fin_pending = False
        self.in_ready = False
        self.grow_next = False  # the last read filled the ring: offer twice as much next


INITIAL_RING = 16 * 1024
INITIAL_OUTPUT = 2 * 1024
"""The output FIFO's first allocation (it doubles as frames need): a keepalive's
PING or PONG takes a few dozen bytes of it."""


class ControlFrames:
    """Control frames waiting for room in the output FIFO (shared by both backends).

    They go in ahead of any data still in the stream rings, in the order queued,
    as many as fit within the FIFO's ``capacity``.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._control: deque[bytes] = deque()
        self.control_bytes = 0

    def queue_control(self, frame: bytes) -> None:
        self._control.append(frame)
        self.control_bytes += len(frame)

    def clear_control(self) -> None:
        self._control.clear()
        self.control_bytes = 0

    def _control_that_fits(self, unsent: int) -> list[bytes]:
        """Take the queued frames that fit after ``unsent`` bytes, oldest first."""
        control = self._control
        taken: list[bytes] = []
        while control and unsent + len(control[0]) <= self._capacity:
            frame = control.popleft()
            self.control_bytes -= len(frame)
            unsent += len(frame)
            taken.append(frame)
        return taken


class OutboundQueue(ControlFrames):
    """Per-stream send rings and the channel's output FIFO.

    With ``retain`` a ring keeps the bytes it sent until ``acknowledge`` frees
    them, and ``rewind`` makes them unsent again (a replay after a broken
    channel, docs/design-resume.md).  Sent and unsent bytes together never
    exceed the ring's limit, the stream's window, so retention needs no more
    memory than the window already allowed.
    """

    def __init__(self, frame_size: int, budget: int, capacity: int, retain: bool = False) -> None:
        if capacity < budget + 2 * HEADER_SIZE + frame_size + len(FIN_BODY):
            raise ValueError("capacity must hold the budget plus a whole data frame and a FIN")
        super().__init__(capacity)
        self._retain = retain
        self._frame_size = frame_size
        self._budget = budget
        self._out = bytearray()
        self._start = 0
        self._end = 0
        self._streams: list[_TxStream | None] = []
        self._free: list[int] = []
        self._ready: deque[int] = deque()
        self._buffered = 0
        self._held = 0

    def buffered_total(self) -> int:
        """Bytes waiting in all send rings (not counting the FIFO)."""
        return self._buffered

    def held_total(self) -> int:
        """Bytes of storage the send rings hold: what a memory cap has to bound."""
        return self._held

    def release_idle(self) -> int:
        """Free the storage of every empty ring (it starts small again); returns the
        bytes freed.  For memory pressure and quiet channels only: regrowing
        costs allocations."""
        released = 0
        for stream in self._streams:
            if stream is not None and not stream.size and not stream.retained and stream.ring:
                released += len(stream.ring)
                stream.ring = bytearray()
                stream.head = 0
                stream.grow_next = False
        self._held -= released
        return released

    def release_output(self) -> None:
        """A quiet channel: free the output FIFO if it holds nothing and a burst grew
        it past its first size (it starts small again)."""
        if self._start == self._end and len(self._out) > INITIAL_OUTPUT:
            self._out = bytearray()
            self._start = self._end = 0

    def set_frame_size(self, frame_size: int) -> None:
        """Use smaller data frames from now on (the peer announced its maximum)."""
        if not 0 < frame_size <= self._frame_size:
            raise ValueError("the frame size can only shrink")
        self._frame_size = frame_size

    # -- streams

    def open(self, stream_id: int, limit: int) -> int:
        """A send ring of at most ``limit`` bytes for ``stream_id``; returns its slot."""
        stream = _TxStream(stream_id, limit)
        if self._free:
            slot = self._free.pop()
            self._streams[slot] = stream
        else:
            slot = len(self._streams)
            self._streams.append(stream)
        return slot

    def set_limit(self, slot: int, limit: int) -> None:
        """Raise the ring's limit (the peer grew the stream's window)."""
        stream = self._get(slot)
        if limit < stream.limit:
            raise ValueError("invalid slot, or a limit that shrinks")
        stream.limit = limit

    def close(self, slot: int) -> None:
        """Forget a stream: its unsent bytes and any pending FIN are dropped."""
        stream = self._streams[slot]
        if stream is None:
            raise ValueError("slot is not open")
        if stream.in_ready:
            self._ready.remove(slot)
        self._buffered -= stream.size
        self._held -= len(stream.ring)
        self._streams[slot] = None
        self._free.append(slot)

    def _get(self, slot: int) -> _TxStream:
        stream = self._streams[slot]
        if stream is None:
            raise ValueError("slot is not open")
        return stream

    def drop_streams(self) -> None:
        """Forget every stream (the channel failed); the FIFO keeps what it holds."""
        self._streams.clear()
        self._free.clear()
        self._ready.clear()
        self._buffered = 0
        self._held = 0

    def buffered(self, slot: int) -> int:
        return self._get(slot).size

    def retained(self, slot: int) -> int:
        """Bytes sent and kept until acknowledged (0 without ``retain``)."""
        return self._get(slot).retained

    def acknowledge(self, slot: int, count: int) -> None:
        """The peer has ``count`` more bytes: forget the oldest retained ones."""
        stream = self._get(slot)
        if not 0 <= count <= stream.retained:
            raise ValueError("acknowledged more than was retained")
        stream.retained -= count
        if not stream.size and not stream.retained:
            stream.head = 0

    def rewind(self, slot: int, count: int) -> None:
        """Send the newest ``count`` retained bytes again (the peer lost them)."""
        stream = self._get(slot)
        if not 0 <= count <= stream.retained:
            raise ValueError("rewound more than was retained")
        if count == 0:
            return
        stream.head = (stream.head - count) % len(stream.ring)
        stream.size += count
        stream.retained -= count
        self._buffered += count
        if not stream.in_ready:
            stream.in_ready = True
            self._ready.append(slot)

    def reserve(self, slot: int, count: int) -> list[memoryview]:
        """Views of up to ``count`` free bytes of the ring (one or two pieces).

        A ring starts at ``INITIAL_RING`` and doubles (up to its limit) only when
        the previous read filled it, so an idle stream stays small while a bulk
        one soon reads large chunks.  Storage is kept while the ring empties and
        refills (``release_idle`` frees it under memory pressure).  ``count``
        may not exceed the limit's room.
        """
        stream = self._streams[slot]  # _get() inlined: a call per read
        if stream is None:
            raise ValueError("slot is not open")
        if count <= 0:
            return []
        held = stream.size + stream.retained  # retained bytes lie just behind head
        if stream.fin_pending or held + count > stream.limit:
            raise ValueError("send ring overflow")
        capacity = len(stream.ring)
        if capacity == 0:
            target = INITIAL_RING
        elif stream.grow_next or held == capacity:
            target = 2 * capacity
        else:
            target = capacity
        target = min(target, stream.limit)
        stream.grow_next = False
        if target > capacity:
            new = bytearray(target)
            start = (stream.head - stream.retained) % capacity if capacity else 0
            first = min(held, capacity - start)
            new[:first] = stream.ring[start : start + first]
            new[first:held] = stream.ring[: held - first]
            self._held += target - capacity
            stream.ring, stream.head, capacity = new, stream.retained, target
        count = min(count, capacity - held)
        view = memoryview(stream.ring)
        tail = (stream.head + stream.size) % capacity
        first = min(count, capacity - tail)
        views = [view[tail : tail + first]]
        if first < count:
            views.append(view[: count - first])
        return views

    def commit(self, slot: int, count: int) -> None:
        """``count`` bytes were written into ``reserve``'s views."""
        stream = self._streams[slot]  # _get() inlined: a call per read
        if stream is None:
            raise ValueError("slot is not open")
        held = stream.size + stream.retained
        if count < 0 or held + count > min(stream.limit, len(stream.ring)):
            raise ValueError("commit beyond the reserved space")
        if count == 0:
            return
        stream.size += count
        self._buffered += count
        stream.grow_next = held + count == len(stream.ring)
        if not stream.in_ready:
            stream.in_ready = True
            self._ready.append(slot)

    def finish(self, slot: int) -> None:
        """Send FIN for this stream after its last buffered byte."""
        stream = self._get(slot)
        if stream.fin_pending:
            return
        stream.fin_pending = True
        if not stream.in_ready:
            stream.in_ready = True
            self._ready.append(slot)

    # -- control frames

    # -- the output FIFO

    def has_output(self) -> bool:
        return self._end > self._start or bool(self._control) or bool(self._ready)

    def _make_room(self, extra: int) -> None:
        unsent = self._end - self._start
        if self._start and (self._start == self._end or self._end + extra > len(self._out)):
            self._out[0:unsent] = self._out[self._start : self._end]
            self._start, self._end = 0, unsent
        if self._end + extra > len(self._out):
            size = max(INITIAL_OUTPUT, len(self._out))
            while size < self._end + extra:
                size *= 2
            new = bytearray(min(size, self._capacity))
            new[:unsent] = self._out[self._start : self._end]
            self._out, self._start, self._end = new, 0, unsent

    def _append(self, data: Buffer) -> None:
        end = self._end
        self._out[end : end + len(data)] = data
        self._end = end + len(data)

    def fill(self) -> list[int]:
        """Move control frames, then data frames round-robin, into the FIFO.

        Returns the ids of streams whose FIN was appended in this call.
        """
        if self._control:
            for frame in self._control_that_fits(self._end - self._start):
                self._make_room(len(frame))
                self._append(frame)
        fins: list[int] = []
        ready = self._ready
        if not ready:
            return fins
        frame_size, budget, streams = self._frame_size, self._budget, self._streams
        pack_into = HEADER.pack_into
        while ready and self._end - self._start < budget:
            slot = ready.popleft()
            stream = streams[slot]
            assert stream is not None
            stream.in_ready = False
            count = stream.size if stream.size < frame_size else frame_size
            if count:
                self._make_room(HEADER_SIZE + count)
                out, end = self._out, self._end
                pack_into(out, end, count, stream.stream_id, KIND_DATA)
                end += HEADER_SIZE
                ring, head = stream.ring, stream.head
                first = len(ring) - head
                if count <= first:
                    out[end : end + count] = memoryview(ring)[head : head + count]
                else:
                    out[end : end + first] = memoryview(ring)[head:]
                    out[end + first : end + count] = memoryview(ring)[: count - first]
                self._end = end + count
                self._buffered -= count
                stream.size -= count
                if self._retain:
                    stream.retained += count
                if stream.size == 0 and stream.retained == 0:
                    stream.head = 0
                else:
                    stream.head = (head + count) % len(ring)
            if stream.size:
                stream.in_ready = True
                ready.append(slot)
            elif stream.fin_pending:
                stream.fin_pending = False
                self._make_room(HEADER_SIZE + len(FIN_BODY))
                self._append(HEADER.pack(len(FIN_BODY), stream.stream_id, KIND_COMMAND) + FIN_BODY)
                fins.append(stream.stream_id)
        return fins

    def pending(self) -> memoryview:
        """The unsent bytes of the FIFO (use before the next call on this queue)."""
        return memoryview(self._out)[self._start : self._end]

    def set_retain(self, retain: bool) -> None:
        """Keep sent bytes from now on, or stop (rings already retaining keep theirs
        until ``acknowledge``)."""
        self._retain = retain

    def drop_output(self) -> None:
        """Forget the FIFO's unsent bytes and the queued control frames, and keep
        the rings: the channel broke, and with ``retain`` what the FIFO held is
        retained, so a ``rewind`` sends it again on the next channel."""
        self.clear_control()
        self._start = self._end = 0

    def sent(self, count: int) -> None:
        if count < 0 or count > self._end - self._start:
            raise ValueError("sent more than was pending")
        self._start += count
        if self._start == self._end:
            self._start = self._end = 0
