"""Frame decoding into a preallocated buffer, and frame encoding.

The decoder owns one buffer.  The reactor ``recv_into``s straight into
``writable()`` and calls ``advance(n)``; complete frames come back as views
into that buffer, valid until the next ``writable()`` call.  Only the partial
frame at the tail is ever moved, and only when the free space runs short, so
a ``recv`` of many frames costs one codec call and no copies.
"""

from __future__ import annotations

from reactor_mux import codec
from reactor_mux.protocol.limits import (
    MAX_COMMAND_BODY,
    MAX_DATA_BODY,
    RECEIVE_BUFFER_SIZE,
)

HEADER_SIZE = codec.HEADER_SIZE
KIND_DATA = codec.KIND_DATA
KIND_COMMAND = codec.KIND_COMMAND
encode_header = codec.encode_header

DecodedFrame = tuple[int, int, memoryview]
"""``(stream_id, kind, body)``; ``body`` is a view into the decoder's buffer."""


def encode_frame(stream_id: int, kind: int, body: bytes) -> bytes:
    """Return a whole frame as one bytes object (for small control frames)."""
    return encode_header(len(body), stream_id, kind) + body


class FrameDecoder:
    """Incremental frame decoder over a fixed receive buffer."""

    def __init__(
        self,
        max_data: int = MAX_DATA_BODY,
        max_command: int = MAX_COMMAND_BODY,
        buffer_size: int = RECEIVE_BUFFER_SIZE,
    ) -> None:
        if buffer_size < 2 * (HEADER_SIZE + max(max_data, max_command)):
            raise ValueError("receive buffer must hold two maximum frames")
        self._buffer = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        self._max_data = max_data
        self._max_command = max_command
        self._min_free = HEADER_SIZE + max(max_data, max_command)

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back for the next read."""
        return self._end - self._start

    def writable(self) -> memoryview:
        """Return the free tail of the buffer to receive into."""
        start, end = self._start, self._end
        if start == end:
            self._start = self._end = 0
        elif len(self._buffer) - end < self._min_free:
            self._buffer[0 : end - start] = self._view[start:end]
            self._start, self._end = 0, end - start
        return self._view[self._end :]

    def advance(self, count: int) -> tuple[list[DecodedFrame], str | None]:
        """Account ``count`` bytes received into ``writable()``.

        Returns the complete frames and, if a malformed header follows them,
        the reason (the frames before it are still valid and returned).
        """
        self._end += count
        frames, self._start, error = codec.scan_frames(
            self._buffer, self._start, self._end, self._max_data, self._max_command
        )
        view = self._view
        decoded = [(sid, kind, view[off : off + length]) for sid, kind, off, length in frames]
        if error:
            self._end = self._start  # nothing after a violation is ever parsed
            return decoded, codec.ERROR_MESSAGES[error]
        return decoded, None

    def feed(self, data: bytes) -> tuple[list[DecodedFrame], str | None]:
        """Copy ``data`` in and decode (convenience for tests and tools).

        The returned bodies are copied out, because a long ``data`` may cycle
        through the buffer more than once.
        """
        out: list[DecodedFrame] = []
        data_view = memoryview(data)
        while data_view:
            target = self.writable()
            n = min(len(target), len(data_view))
            target[:n] = data_view[:n]
            data_view = data_view[n:]
            frames, error = self.advance(n)
            out.extend((sid, kind, memoryview(bytes(body))) for sid, kind, body in frames)
            if error:
                return out, error
        return out, None
