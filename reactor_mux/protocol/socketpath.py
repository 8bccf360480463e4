"""Unix socket paths as command words (``CONNECT /PATH``, ``BIND /PATH``, ``BIND OK /PATH``).

A path is bytes, and a command word is printable ASCII without spaces, so the
word spells the path's bytes with ``%XX`` (two upper-case hex digits) for every
byte outside 0x21-0x7E and for ``%`` itself, and literally otherwise: one
spelling per path, so the receiver can insist on it.  The leading ``/`` tells a
path from ``host:port`` (a host never starts with one).  Paths are held as
``str`` the way ``os.fsdecode`` gives them, so any byte string survives.
"""

from __future__ import annotations

import os
import re

from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.limits import MAX_UNIX_PATH

_ESCAPE = re.compile(rb"%([0-9A-F]{2})")


def is_socket_path_word(word: str) -> bool:
    """The word names a Unix socket (not ``host:port``)."""
    return word.startswith("/")


def encode_socket_path(path: str) -> str:
    """The command word for an absolute ``path``."""
    raw = os.fsencode(path)
    return "".join(
        chr(byte) if 0x21 <= byte <= 0x7E and byte != 0x25 else f"%{byte:02X}" for byte in raw
    )


def parse_socket_path(word: str) -> str:
    """The path a command word spells; raises ``ProtocolError`` unless the word is
    the one spelling of an absolute path of at most ``MAX_UNIX_PATH`` bytes."""
    raw = _ESCAPE.sub(lambda match: bytes((int(match.group(1), 16),)), word.encode("ascii"))
    if not raw.startswith(b"/"):
        raise ProtocolError(f"not an absolute socket path: {word[:64]!r}")
    if len(raw) > MAX_UNIX_PATH:
        raise ProtocolError(f"socket path longer than {MAX_UNIX_PATH} bytes")
    if b"\0" in raw:
        raise ProtocolError("socket path holds a NUL byte")
    path = os.fsdecode(raw)
    if encode_socket_path(path) != word:
        raise ProtocolError(f"socket path not in its one spelling: {word[:64]!r}")
    return path
