"""The frame codec: the only code that touches every byte of the channel.

Two backends implement the same interface, byte for byte:

* ``c``: compiled from ``csrc/`` by ``build_codec.py`` (cffi, API mode);
* ``python``: ``_python.py``, the reference.

The compiled backend is used when it was built; ``REACTOR_MUX_CODEC=python``
forces pure Python, and ``REACTOR_MUX_CODEC=c`` makes a missing or broken build
an ImportError instead of a silent fallback.  ``BACKEND`` names the one in use
(``reactor-mux --version`` prints it).

Interface (see ``_python.py`` for the contracts):

* ``scan_frames(buf, start, end, max_data, max_command[, max_frames])``
* ``encode_header(length, stream_id, kind)``
* ``InboundDecoder(max_data, max_command, buffer_size)``: ``writable()``,
  ``advance(n) -> (records, error)``, ``buffer``, ``staging``, ``pending``,
  ``size``, ``release()``
* ``OutboundQueue(frame_size, budget, capacity)``: per-stream rings
  (``open/close/reserve/commit/finish/buffered``), control frames
  (``queue_control/clear_control``) and the FIFO (``fill/pending/sent``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Protocol

from reactor_mux.codec._python import (
    ERR_BAD_KIND,
    ERR_COMMAND_TOO_LARGE,
    ERR_DATA_TOO_LARGE,
    ERR_DATAGRAM_TOO_LARGE,
    ERROR_MESSAGES,
    HEADER_SIZE,
    KIND_COMMAND,
    KIND_DATA,
    KIND_DATAGRAM,
    MAX_FRAMES_PER_SCAN,
    OK,
    PLANE_ACK,
    PLANE_FAILED,
    RECORD_COMMAND,
    RECORD_DATA,
    RECORD_DATAGRAM,
    DataPlane,
    PlaneEvent,
)
from reactor_mux.codec._python import (
    InboundDecoder as PythonInboundDecoder,
)
from reactor_mux.codec._python import (
    OutboundQueue as PythonOutboundQueue,
)
from reactor_mux.codec._python import (
    encode_header as python_encode_header,
)
from reactor_mux.codec._python import (
    scan_frames as python_scan_frames,
)

Record = tuple[int, int, int, int]


class InboundDecoderAPI(Protocol):
    """What both backends' ``InboundDecoder`` provide."""

    buffer: memoryview
    staging: memoryview
    error: int
    plane_events: list[PlaneEvent]

    @property
    def pending(self) -> int: ...

    @property
    def size(self) -> int: ...

    def writable(self) -> memoryview: ...

    def advance(self, count: int) -> tuple[list[Record], int]: ...

    def advance_through(self, count: int, plane: DataPlane) -> Iterator[Record]: ...

    def release(self) -> None: ...

    def release_grown(self) -> None: ...

    def limit(self, max_data: int, buffer_size: int) -> None: ...


class OutboundQueueAPI(Protocol):
    """What both backends' ``OutboundQueue`` provide."""

    control_bytes: int

    def set_frame_size(self, frame_size: int) -> None: ...

    def buffered_total(self) -> int: ...

    def held_total(self) -> int: ...

    def release_idle(self) -> int: ...

    def release_output(self) -> None: ...

    def open(self, stream_id: int, limit: int) -> int: ...

    def set_limit(self, slot: int, limit: int) -> None: ...

    def close(self, slot: int) -> None: ...

    def drop_streams(self) -> None: ...

    def buffered(self, slot: int) -> int: ...

    def reserve(self, slot: int, count: int) -> list[memoryview]: ...

    def commit(self, slot: int, count: int) -> None: ...

    def finish(self, slot: int) -> None: ...

    def set_retain(self, retain: bool) -> None: ...

    def retained(self, slot: int) -> int: ...

    def acknowledge(self, slot: int, count: int) -> None: ...

    def rewind(self, slot: int, count: int) -> None: ...

    def drop_output(self) -> None: ...

    def queue_control(self, frame: bytes) -> None: ...

    def clear_control(self) -> None: ...

    def has_output(self) -> bool: ...

    def fill(self) -> list[int]: ...

    def pending(self) -> memoryview: ...

    def sent(self, count: int) -> None: ...


POLICY_VARIABLE = "REACTOR_MUX_CODEC"
_policy = os.environ.get(POLICY_VARIABLE, "auto").strip().lower() or "auto"
if _policy not in ("auto", "c", "python"):
    raise ImportError(f"{POLICY_VARIABLE}={_policy!r}: expected 'c', 'python' or 'auto'")

BACKEND = "python"
InboundDecoder: Callable[[int, int, int], InboundDecoderAPI] = PythonInboundDecoder
OutboundQueue: Callable[[int, int, int, bool], OutboundQueueAPI] = PythonOutboundQueue
scan_frames = python_scan_frames
encode_header = python_encode_header

if _policy != "python":
    try:
        from . import _c
    except ImportError as exc:
        if _policy == "c":
            raise ImportError(
                f"{POLICY_VARIABLE}=c but the compiled codec is unavailable: {exc}"
            ) from exc
    else:
        BACKEND = "c"
        InboundDecoder = _c.InboundDecoder
        OutboundQueue = _c.OutboundQueue
        scan_frames = _c.scan_frames
        encode_header = _c.encode_header

__all__ = [
    "BACKEND",
    "ERROR_MESSAGES",
    "ERR_BAD_KIND",
    "ERR_COMMAND_TOO_LARGE",
    "ERR_DATAGRAM_TOO_LARGE",
    "ERR_DATA_TOO_LARGE",
    "HEADER_SIZE",
    "KIND_COMMAND",
    "KIND_DATA",
    "KIND_DATAGRAM",
    "MAX_FRAMES_PER_SCAN",
    "OK",
    "PLANE_ACK",
    "PLANE_FAILED",
    "RECORD_COMMAND",
    "RECORD_DATA",
    "RECORD_DATAGRAM",
    "DataPlane",
    "InboundDecoder",
    "OutboundQueue",
    "encode_header",
    "scan_frames",
]
