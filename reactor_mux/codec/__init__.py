"""The frame codec: the only code that touches every byte of the channel.

It is kept behind a deliberately small interface so that a compiled twin can
replace it without the protocol core noticing:

* ``scan_frames(buf, start, end, max_data, max_command)`` finds every complete
  frame in ``buf[start:end]`` in one call and returns
  ``(frames, next_start, error)`` where each frame is
  ``(stream_id, kind, body_offset, body_length)``; ``next_start`` is where the
  unparsed tail begins, and ``error`` is ``OK`` or the first violation found
  (frames before the violation are still returned).
* ``encode_header(length, stream_id, kind)`` returns the 9 header bytes.

``BACKEND`` names the implementation in use (only ``"python"`` so far).
"""

from reactor_mux.codec._python import (
    ERR_BAD_KIND,
    ERR_COMMAND_TOO_LARGE,
    ERR_DATA_TOO_LARGE,
    ERROR_MESSAGES,
    HEADER_SIZE,
    KIND_COMMAND,
    KIND_DATA,
    OK,
    encode_header,
    scan_frames,
)

BACKEND = "python"

__all__ = [
    "BACKEND",
    "ERROR_MESSAGES",
    "ERR_BAD_KIND",
    "ERR_COMMAND_TOO_LARGE",
    "ERR_DATA_TOO_LARGE",
    "HEADER_SIZE",
    "KIND_COMMAND",
    "KIND_DATA",
    "OK",
    "encode_header",
    "scan_frames",
]
