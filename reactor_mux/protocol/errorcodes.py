"""What ended a channel, as a value to decide by (h2's ``ErrorCodes``, yamux's go-away codes).

Decisions about a failed channel (retry soon, back off, penalise the source)
match on an ``ErrorCode``, never on the words of its reason, which are for
people and may be reworded.  A code a peer must act on travels as the first
word of ``ERROR``, followed by a colon: ``ERROR busy: too many unauthenticated
connections`` (docs/protocol.md §7).  A reason whose first word is not a known
code (an older peer's, or a code this side does not know) reads as ``None``:
the peer said why, but not as a code.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    BUSY = "busy"
    """The server turned the connection away before it authenticated (too many
    unauthenticated connections): nothing is wrong with the client; retry soon."""
    AUTH_FAILED = "auth"
    """Authentication failed, either way (a secret, a proof, a certificate)."""
    PROTOCOL = "protocol"
    """The peer broke the protocol (or speaks another one)."""
    TLS = "tls"
    """The TLS handshake failed: the peer does not speak TLS, or TLS where we do not."""
    HANDSHAKE_TIMEOUT = "timeout"
    """The peer did not finish the handshake in time."""
    KEEPALIVE_TIMEOUT = "silent"
    """The peer fell silent past the keepalive timeout."""
    PEER_CLOSED = "closed"
    """The connection ended or broke (EOF, a reset) without a reason from the peer."""


_BY_WORD = {code.value: code for code in ErrorCode}

WIRE_CODES = frozenset((ErrorCode.BUSY,))
"""The codes this version writes in front of an ERROR's reason."""


def with_code(code: ErrorCode, text: str) -> str:
    """The reason of an ERROR that carries ``code``: ``busy: text``."""
    return f"{code.value}: {text}"


def code_of(reason: str) -> ErrorCode | None:
    """The code an ERROR's reason starts with, or None."""
    word, colon, _rest = reason.partition(":")
    if not colon or " " in word:
        return None
    return _BY_WORD.get(word)
