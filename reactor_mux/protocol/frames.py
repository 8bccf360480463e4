"""Frame-level helpers on top of the codec: whole frames as bytes, for control
frames, tools and tests.  The hot paths use ``codec.InboundDecoder`` and
``codec.OutboundQueue`` directly."""

from __future__ import annotations

from reactor_mux import codec
from reactor_mux.protocol.limits import MAX_COMMAND_BODY, MAX_DATA_BODY

HEADER_SIZE = codec.HEADER_SIZE
KIND_DATA = codec.KIND_DATA
KIND_COMMAND = codec.KIND_COMMAND
KIND_DATAGRAM = codec.KIND_DATAGRAM

SplitFrame = tuple[int, int, bytes]
"""``(stream_id, kind, body)``"""


def encode_frame(stream_id: int, kind: int, body: bytes) -> bytes:
    """Return a whole frame as one bytes object (for small control frames)."""
    return codec.encode_header(len(body), stream_id, kind) + body


def split_frames(
    wire: bytes | bytearray | memoryview,
    max_data: int = MAX_DATA_BODY,
    max_command: int = MAX_COMMAND_BODY,
) -> tuple[list[SplitFrame], int, str | None]:
    """Split a byte string into frames: ``(frames, bytes_consumed, error)``."""
    frames: list[SplitFrame] = []
    start, end = 0, len(wire)
    while True:
        found, start, error = codec.scan_frames(wire, start, end, max_data, max_command)
        frames += [(sid, kind, bytes(wire[off : off + n])) for sid, kind, off, n in found]
        if error:
            return frames, start, codec.ERROR_MESSAGES[error]
        if len(found) < codec.MAX_FRAMES_PER_SCAN:
            return frames, start, None
