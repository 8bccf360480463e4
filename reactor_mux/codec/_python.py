"""Pure-Python frame codec: the reference the compiled backend must match.

A frame is a 9-byte header (``len`` uint32 BE, stream ``id`` uint32 BE,
``kind`` uint8) followed by ``len`` body bytes.  Lengths are checked against
the limits as soon as the header is complete, before any body byte is
awaited, so a peer cannot make us wait for (or buffer) an oversized body.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IIB")
HEADER_SIZE = HEADER.size

KIND_DATA = 0
KIND_COMMAND = 1

OK = 0
ERR_DATA_TOO_LARGE = 1
ERR_COMMAND_TOO_LARGE = 2
ERR_BAD_KIND = 3

ERROR_MESSAGES = {
    ERR_DATA_TOO_LARGE: "data frame body exceeds the maximum frame size",
    ERR_COMMAND_TOO_LARGE: "command frame body exceeds the maximum command size",
    ERR_BAD_KIND: "frame kind byte is neither 0 (data) nor 1 (command)",
}

Frame = tuple[int, int, int, int]
"""``(stream_id, kind, body_offset, body_length)``"""


def encode_header(length: int, stream_id: int, kind: int) -> bytes:
    """Return the 9 header bytes of a frame with a ``length``-byte body."""
    return HEADER.pack(length, stream_id, kind)


def scan_frames(
    buf: bytes | bytearray | memoryview,
    start: int,
    end: int,
    max_data: int,
    max_command: int,
) -> tuple[list[Frame], int, int]:
    """Parse every complete frame in ``buf[start:end]``.

    Returns ``(frames, next_start, error)``.  On a violation, ``next_start``
    is the offset of the offending header and ``error`` says what is wrong.
    """
    frames: list[Frame] = []
    append = frames.append
    unpack = HEADER.unpack_from
    pos = start
    while end - pos >= HEADER_SIZE:
        length, stream_id, kind = unpack(buf, pos)
        if kind == KIND_DATA:
            if length > max_data:
                return frames, pos, ERR_DATA_TOO_LARGE
        elif kind == KIND_COMMAND:
            if length > max_command:
                return frames, pos, ERR_COMMAND_TOO_LARGE
        else:
            return frames, pos, ERR_BAD_KIND
        body = pos + HEADER_SIZE
        if end - body < length:
            break
        append((stream_id, kind, body, length))
        pos = body + length
    return frames, pos, OK
