"""The compiled backend: thin wrappers giving csrc/ the interface of _python.py.

Each method is one call into C whatever the number of frames involved.
Views returned by ``reserve``, ``pending``, ``buffer`` and ``staging`` point
into C or Python memory that later calls may move: use them before calling
the same object again (the session and reactor always do).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import Any

from reactor_mux.codec import _python
from reactor_mux.codec._ccodec import ffi, lib  # type: ignore[import-not-found]
from reactor_mux.codec._python import (
    ERR_BAD_KIND,
    ERR_COMMAND_TOO_LARGE,
    ERR_DATA_TOO_LARGE,
    ERR_DATAGRAM_TOO_LARGE,
    FIN_BODY,
    HEADER_SIZE,
    INITIAL_OUTPUT,
    INITIAL_RING,
    KIND_COMMAND,
    KIND_DATA,
    KIND_DATAGRAM,
    MAX_BUFFER,
    MAX_FRAMES_PER_SCAN,
    OK,
    PLANE_ACK,
    PLANE_FAILED,
    RECORD_COMMAND,
    RECORD_DATA,
    RECORD_DATAGRAM,
    Buffer,
    DataPlane,
    Frame,
    Record,
)

# Numbers both backends use.  The header the module was compiled from must agree
# with _python.py: a stale build, or an edit to one side only, fails here.
_SHARED = {
    "RMUX_HEADER_SIZE": HEADER_SIZE,
    "RMUX_MAX_FRAMES_PER_SCAN": MAX_FRAMES_PER_SCAN,
    "RMUX_MAX_BUFFER": MAX_BUFFER,
    "RMUX_INITIAL_RING": INITIAL_RING,
    "RMUX_INITIAL_OUTPUT": INITIAL_OUTPUT,
    "RMUX_KIND_DATA": KIND_DATA,
    "RMUX_KIND_COMMAND": KIND_COMMAND,
    "RMUX_KIND_DATAGRAM": KIND_DATAGRAM,
    "RMUX_OK": OK,
    "RMUX_ERR_DATA_TOO_LARGE": ERR_DATA_TOO_LARGE,
    "RMUX_ERR_COMMAND_TOO_LARGE": ERR_COMMAND_TOO_LARGE,
    "RMUX_ERR_BAD_KIND": ERR_BAD_KIND,
    "RMUX_ERR_DATAGRAM_TOO_LARGE": ERR_DATAGRAM_TOO_LARGE,
    "RMUX_RECORD_DATA": RECORD_DATA,
    "RMUX_RECORD_COMMAND": RECORD_COMMAND,
    "RMUX_RECORD_DATAGRAM": RECORD_DATAGRAM,
    "RMUX_EVENT_ACK": PLANE_ACK,
    "RMUX_EVENT_FAILED": PLANE_FAILED,
}

# Frames and records come back as C arrays of four uint32 fields, unpacked into
# Frame and Record tuples in one call: the struct's field order is the tuple's.
_FOUR_U32 = struct.Struct("=IIII")
_ENTRY_SIZE = _FOUR_U32.size
_LAYOUTS = {
    "rmux_frame": ["stream_id", "kind", "offset", "length"],
    "rmux_record": ["kind", "stream_id", "offset", "length"],
}


def _check_build() -> None:
    differ = [name for name, value in _SHARED.items() if getattr(lib, name, None) != value]
    for name, fields in _LAYOUTS.items():
        if ffi.sizeof(name) != _ENTRY_SIZE or [f for f, _ in ffi.typeof(name).fields] != fields:
            differ.append(name)
    if differ:
        raise ImportError(f"compiled codec was built from different sources: {', '.join(differ)}")


_check_build()

_DECODE_ERRORS = (
    lib.RMUX_ERR_DATA_TOO_LARGE,
    lib.RMUX_ERR_COMMAND_TOO_LARGE,
    lib.RMUX_ERR_BAD_KIND,
    lib.RMUX_ERR_DATAGRAM_TOO_LARGE,
)  # what advance() hands on; anything else (the caller's-mistake codes) is a wrapper bug
_TX_OK = lib.RMUX_TX_OK
_TX_INVALID = lib.RMUX_TX_INVALID
_TX_NO_MEMORY = lib.RMUX_TX_NO_MEMORY
_TX_NO_ROOM = lib.RMUX_TX_NO_ROOM


class _Scratch:
    """What the codec's calls write into and unpack at once, so a decoder allocates
    nothing in C: the scratch space, the records and frames a call fills (at most
    MAX_FRAMES_PER_SCAN: advance() calls again while one fills them), and the out
    arguments.  One per thread, not per process: a reactor is single-threaded, but
    a program may run several (the Python API runs each tunnel in its own thread),
    and a cffi call lets another thread run meanwhile."""

    def __init__(self) -> None:
        self.scratch = ffi.gc(lib.rmux_scratch_new(), lib.rmux_scratch_free)
        if self.scratch == ffi.NULL:
            raise MemoryError("cannot allocate the codec's scratch space")
        self.frames = ffi.new("rmux_frame[]", MAX_FRAMES_PER_SCAN)
        self.frames_buffer = ffi.buffer(self.frames)
        self.records = ffi.new("rmux_record[]", MAX_FRAMES_PER_SCAN)
        self.records_buffer = ffi.buffer(self.records)
        self.cursor = ffi.new("size_t[3]")  # start, staged, nframes
        self.size_out = ffi.new("size_t *")
        self.status_out = ffi.new("rmux_status *")
        self.header_out = ffi.new("uint8_t[]", HEADER_SIZE)


class _PerThread(threading.local):
    def __init__(self) -> None:  # runs once in each thread that uses the codec
        self.scratch = _Scratch()


_PER_THREAD = _PerThread()


def encode_header(length: int, stream_id: int, kind: int) -> bytes:
    """Return the 9 header bytes of a frame with a ``length``-byte body."""
    header = _PER_THREAD.scratch.header_out
    lib.rmux_encode_header(header, length, stream_id, kind)
    return bytes(ffi.buffer(header))


def scan_frames(
    buf: Buffer,
    start: int,
    end: int,
    max_data: int,
    max_command: int,
    max_frames: int = MAX_FRAMES_PER_SCAN,
) -> tuple[list[Frame], int, int]:
    """Same contract as the pure-Python ``scan_frames``."""
    max_frames = min(max_frames, MAX_FRAMES_PER_SCAN)
    if not 0 <= start <= end <= len(buf):
        raise ValueError("start/end outside the buffer")
    if len(buf) > MAX_BUFFER:
        raise ValueError(f"buffer larger than {MAX_BUFFER} bytes")
    pointer = ffi.from_buffer(buf)
    own = _PER_THREAD.scratch
    count = lib.rmux_scan_frames(
        pointer, len(pointer), start, end, max_data, max_command, max_frames, own.frames,
        own.size_out, own.status_out,
    )  # fmt: skip
    frames = list(_FOUR_U32.iter_unpack(own.frames_buffer[: count * _ENTRY_SIZE]))
    return frames, own.size_out[0], own.status_out[0]


def _rx_field(name: str, convert: Any = int) -> property:
    def get(self: InboundDecoder) -> Any:
        return convert(getattr(self.rx, name))

    def put(self: InboundDecoder, value: Any) -> None:
        setattr(self.rx, name, value)

    return property(get, put)


class InboundDecoder(_python.InboundDecoder):
    """The twin's buffers (and their management); parsing and splicing in C.

    Its cursor lives in ``rx`` (an ``rmux_rx``), where the compiled data plane
    reads the channel into the same buffers: both always see one state."""

    _start = _rx_field("start")
    _end = _rx_field("end")
    _offered = _rx_field("offered")
    _filled = _rx_field("filled", bool)
    _capacity = _rx_field("capacity")
    _max_data = _rx_field("max_data")
    _max_command = _rx_field("max_command")

    def __init__(self, max_data: int, max_command: int, buffer_size: int) -> None:
        self.rx = ffi.new("rmux_rx *")
        super().__init__(max_data, max_command, buffer_size)
        self._buffers_changed()

    def _buffers_changed(self) -> None:
        self._buffer_pointer = ffi.from_buffer(self._buffer)
        self._buffer_length = len(self._buffer)
        self._staging_pointer = ffi.from_buffer(self._staging)
        self._staging_length = len(self._staging)
        rx = self.rx
        rx.buffer, rx.buffer_length = self._buffer_pointer, self._buffer_length
        rx.staging, rx.staging_length = self._staging_pointer, self._staging_length

    def advance(self, count: int) -> tuple[list[Record], int]:
        self._filled = count >= self._offered
        self._end += count
        own = _PER_THREAD.scratch
        cursor = own.cursor
        cursor[0] = self._start
        cursor[1] = 0
        records: list[Record] = []
        while True:
            n = lib.rmux_decode(
                own.scratch, self._buffer_pointer, self._buffer_length, cursor, self._end,
                self._max_data, self._max_command, self._staging_pointer, self._staging_length,
                cursor + 1, own.records, MAX_FRAMES_PER_SCAN, cursor + 2, own.status_out,
            )  # fmt: skip
            records += _FOUR_U32.iter_unpack(own.records_buffer[: n * _ENTRY_SIZE])
            error = own.status_out[0]
            if error != OK:
                if error not in _DECODE_ERRORS:
                    raise RuntimeError(f"codec internal error {error}")
                self._start = self._end = cursor[0]
                return records, error
            if cursor[2] < MAX_FRAMES_PER_SCAN:
                self._start = cursor[0]
                return records, OK

    def advance_through(self, count: int, plane: DataPlane) -> Iterator[Record]:
        """``advance``, with the data records handed to ``plane.deliver`` (the
        compiled data plane writes them to their sockets) as they are decoded.
        Yields, in order, each record the plane left to the caller (commands,
        data it cannot take); the plane goes on after it only once the caller
        asks for the next one.  When the iterator ends, ``error`` is what
        ``advance`` would have returned with the records, and ``plane_events``
        what the plane reported."""
        self._filled = count >= self._offered
        self._end += count
        # The cursor is this call's own: the caller runs Python between records.
        # The records array is the thread's: nothing the caller does with a
        # record decodes another channel's bytes before asking for the next.
        own = _PER_THREAD.scratch
        records = own.records
        cursor = ffi.new("size_t[3]")
        cursor[0] = self._start
        self.plane_events = events = []
        self.error = OK
        deliver = plane.deliver
        staging, staging_length = self._staging_pointer, self._staging_length
        while True:
            n = lib.rmux_decode(
                own.scratch, self._buffer_pointer, self._buffer_length, cursor, self._end,
                self._max_data, self._max_command, staging, staging_length,
                cursor + 1, records, MAX_FRAMES_PER_SCAN, cursor + 2, own.status_out,
            )  # fmt: skip
            error, scanned, start = own.status_out[0], cursor[2], cursor[0]
            index = 0
            while index < n:
                index, delivered = deliver(staging, staging_length, records, n, index)
                if delivered:
                    events += delivered
                if index < n:
                    record = records[index]
                    yield record.kind, record.stream_id, record.offset, record.length
                    index += 1
            if error != OK:
                if error not in _DECODE_ERRORS:
                    raise RuntimeError(f"codec internal error {error}")
                self._start = self._end = start
                self.error = error
                return
            if scanned < MAX_FRAMES_PER_SCAN:
                self._start = start
                return


class OutboundQueue(_python.ControlFrames):
    """Per-stream send rings and the output FIFO, in C (see _python.OutboundQueue)."""

    def __init__(self, frame_size: int, budget: int, capacity: int, retain: bool = False) -> None:
        tx = lib.rmux_tx_new(frame_size, budget, capacity)
        if tx == ffi.NULL:
            raise ValueError("capacity must hold the budget plus a whole data frame and a FIN")
        super().__init__(capacity)
        self._tx = ffi.gc(tx, lib.rmux_tx_free)
        lib.rmux_tx_set_retain(tx, 1 if retain else 0)
        self._open = 0
        self._fins = ffi.new("uint32_t[]", 64)
        self._fins_capacity = 64
        self._regions = ffi.new("uint8_t *[2]")
        self._lengths = ffi.new("uint32_t[2]")
        self._length_out = ffi.new("size_t *")

    @staticmethod
    def _check(code: int) -> None:
        if code == _TX_INVALID:
            raise ValueError("invalid slot or size for the send queue")
        if code == _TX_NO_MEMORY:
            raise MemoryError("send queue out of memory")

    def buffered_total(self) -> int:
        total: int = lib.rmux_tx_buffered_total(self._tx)
        return total

    def held_total(self) -> int:
        total: int = lib.rmux_tx_held_total(self._tx)
        return total

    def release_idle(self) -> int:
        released: int = lib.rmux_tx_release_idle(self._tx)
        return released

    def release_output(self) -> None:
        lib.rmux_tx_release_output(self._tx)

    def set_frame_size(self, frame_size: int) -> None:
        if lib.rmux_tx_set_frame_size(self._tx, frame_size) != _TX_OK:
            raise ValueError("the frame size can only shrink")

    def open(self, stream_id: int, limit: int) -> int:
        slot: int = lib.rmux_tx_open(self._tx, stream_id, limit)
        if slot < 0:
            raise MemoryError("send queue out of memory")
        self._open += 1
        return slot

    def set_limit(self, slot: int, limit: int) -> None:
        if lib.rmux_tx_set_limit(self._tx, slot, limit) != _TX_OK:
            raise ValueError("invalid slot, or a limit that shrinks")

    def close(self, slot: int) -> None:
        self._check(lib.rmux_tx_close(self._tx, slot))
        self._open -= 1

    def drop_streams(self) -> None:
        lib.rmux_tx_drop_streams(self._tx)
        self._open = 0

    def buffered(self, slot: int) -> int:
        size: int = lib.rmux_tx_buffered(self._tx, slot)
        if size < 0:
            raise ValueError("slot is not open")
        return size

    def retained(self, slot: int) -> int:
        size: int = lib.rmux_tx_retained(self._tx, slot)
        if size < 0:
            raise ValueError("slot is not open")
        return size

    def acknowledge(self, slot: int, count: int) -> None:
        if not 0 <= count < 1 << 32 or lib.rmux_tx_acknowledge(self._tx, slot, count) != _TX_OK:
            raise ValueError("acknowledged more than was retained")

    def rewind(self, slot: int, count: int) -> None:
        if not 0 <= count < 1 << 32:
            raise ValueError("rewound more than was retained")
        code = lib.rmux_tx_rewind(self._tx, slot, count)
        if code == _TX_INVALID:
            raise ValueError("rewound more than was retained")
        self._check(code)

    def reserve(self, slot: int, count: int) -> list[memoryview]:
        if count <= 0:
            self.buffered(slot)  # validates the slot, as the twin does
            return []
        regions, lengths = self._regions, self._lengths
        code = lib.rmux_tx_reserve(
            self._tx, slot, count, regions, lengths, regions + 1, lengths + 1
        )
        if code != _TX_OK:  # one comparison on the common path
            if code == _TX_INVALID:
                raise ValueError("send ring overflow")
            self._check(code)
        views = [memoryview(ffi.buffer(regions[0], lengths[0]))]
        if lengths[1]:
            views.append(memoryview(ffi.buffer(regions[1], lengths[1])))
        return views

    def commit(self, slot: int, count: int) -> None:
        if count < 0:
            raise ValueError("commit beyond the reserved space")
        code = lib.rmux_tx_commit(self._tx, slot, count)
        if code != _TX_OK:
            if code == _TX_INVALID:
                raise ValueError("commit beyond the reserved space")
            self._check(code)

    def finish(self, slot: int) -> None:
        self._check(lib.rmux_tx_finish(self._tx, slot))

    def has_output(self) -> bool:
        return bool(self._control) or bool(lib.rmux_tx_has_data(self._tx))

    def fill(self) -> list[int]:
        tx = self._tx
        if self._control:
            for frame in self._control_that_fits(lib.rmux_tx_unsent(tx)):
                code = lib.rmux_tx_append(tx, frame, len(frame))
                if code == _TX_NO_ROOM:  # _control_that_fits only takes frames that fit
                    raise RuntimeError("codec internal error: a control frame did not fit")
                self._check(code)
        if self._fins_capacity < self._open:
            self._fins_capacity = max(self._open, 2 * self._fins_capacity)
            self._fins = ffi.new("uint32_t[]", self._fins_capacity)
        count = lib.rmux_tx_fill(tx, self._fins, self._fins_capacity)
        if count < 0:
            raise MemoryError("send queue out of memory")
        return list(self._fins[0:count]) if count else []

    def pending(self) -> memoryview:
        pointer = lib.rmux_tx_pending(self._tx, self._length_out)
        length = self._length_out[0]
        if not length:
            return memoryview(b"")
        return memoryview(ffi.buffer(pointer, length))

    def drop_output(self) -> None:
        self.clear_control()
        lib.rmux_tx_drop_output(self._tx)

    def set_retain(self, retain: bool) -> None:
        lib.rmux_tx_set_retain(self._tx, 1 if retain else 0)

    def sent(self, count: int) -> None:
        if count < 0 or lib.rmux_tx_sent(self._tx, count) != _TX_OK:
            raise ValueError("sent more than was pending")


__all__ = [
    "FIN_BODY",
    "InboundDecoder",
    "OutboundQueue",
    "encode_header",
    "scan_frames",
]
