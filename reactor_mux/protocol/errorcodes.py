"""What ended a channel, as a value to decide by (h2's ``ErrorCodes``, yamux's go-away codes).

Decisions about an ended channel (retry soon, back off, start a new session,
penalise the source) match on an ``ErrorCode``, never on the words of its
reason, which are for people and may be reworded.  A side that ends a channel
on purpose says why with ``ERROR code: words`` (docs/protocol.md §7): the
first word and its colon are the code, sent for every ``ERROR`` this version
writes.  Some endings are never sent (the peer is gone, or broke the
protocol in a way it is told as ``protocol``); ``told_as`` says what the peer
hears.

An older peer's ``ERROR`` has no code.  ``code_of`` reads the few phrases
such a peer uses, here and nowhere else, so that its refusals keep their
meaning (docs/protocol.md §7, "Older peers").
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    # Sent as the first word of ERROR.
    PROTOCOL = "protocol"
    """The peer broke the protocol."""
    AUTH_FAILED = "auth"
    """Authentication failed, either way (a secret, a proof, a certificate)."""
    TLS = "tls"
    """TLS met plaintext (a TLS client at a plaintext server, or the reverse), or
    the TLS handshake failed for a reason other than a refused certificate."""
    BUSY = "busy"
    """The server turned the connection away before it authenticated (too many
    unauthenticated connections): nothing is wrong with the client; retry soon."""
    FULL = "full"
    """The server serves as many clients as it may (``--max-channels``)."""
    HANDSHAKE_TIMEOUT = "timeout"
    """The handshake did not finish in time (and, as the word a peer reads, any
    timeout: ``KEEPALIVE_TIMEOUT`` is told as this)."""
    SHUTDOWN = "shutdown"
    """The sender is shutting down (or draining): an orderly end."""
    RESUME_REFUSED = "resume"
    """The session named cannot be resumed (unknown, ended, its server draining)."""
    ELSEWHERE = "elsewhere"
    """The session is held by another host (``--node-id``): connect again, to its
    advertised address or through the balancer; the session is untouched."""
    REPLACED = "replaced"
    """A newer channel, or a new session, of the same client took this one's place."""
    REVOKED = "revoked"
    """A reload removed the client, or changed its secret."""
    INTERNAL = "internal"
    """A bug on the sender's side ended the channel."""
    # Never sent: the peer is gone, or is told something else (``told_as``).
    PEER_CLOSED = "closed"
    """The connection ended or broke (EOF, a reset) without a word from the peer."""
    KEEPALIVE_TIMEOUT = "silent"
    """The peer fell silent past the keepalive timeout."""
    NO_ANSWER = "no-answer"
    """The handshake timed out without a byte from the peer: probably not a
    reactor-mux peer, or a stopped one."""
    NOT_A_PEER = "foreign"
    """The peer speaks another protocol (an SSH banner, an HTTP request, ...)."""
    WEB_REQUEST = "web"
    """A server with ``--ws-path`` answered an HTTP request that is no upgrade at its
    path as a web server would (404): no offence, since behind a reverse proxy every
    request comes from the proxy's address."""
    RESUME_EXPIRED = "expired"
    """The resume window passed with no resume."""
    UNSUPPORTED = "unsupported"
    """The peer refused what we offered for being older (an older server refusing
    the HELLO that offers resume)."""

    @property
    def told_as(self) -> ErrorCode:
        """The code the peer reads for this ending."""
        return _TOLD_AS.get(self, self)

    @property
    def sent(self) -> bool:
        """This code is written on the wire (as the first word of ERROR)."""
        return self in SENT


SENT = frozenset((
    ErrorCode.PROTOCOL, ErrorCode.AUTH_FAILED, ErrorCode.TLS, ErrorCode.BUSY, ErrorCode.FULL,
    ErrorCode.HANDSHAKE_TIMEOUT, ErrorCode.SHUTDOWN, ErrorCode.RESUME_REFUSED,
    ErrorCode.ELSEWHERE, ErrorCode.REPLACED, ErrorCode.REVOKED, ErrorCode.INTERNAL,
))  # fmt: skip
"""The codes this version writes; the others describe an end the peer is not told
of as such (``told_as``)."""

_TOLD_AS = {
    ErrorCode.NO_ANSWER: ErrorCode.HANDSHAKE_TIMEOUT,
    ErrorCode.NOT_A_PEER: ErrorCode.PROTOCOL,
    ErrorCode.WEB_REQUEST: ErrorCode.PROTOCOL,
    ErrorCode.KEEPALIVE_TIMEOUT: ErrorCode.HANDSHAKE_TIMEOUT,
    ErrorCode.RESUME_EXPIRED: ErrorCode.RESUME_REFUSED,
    ErrorCode.UNSUPPORTED: ErrorCode.PROTOCOL,
    ErrorCode.PEER_CLOSED: ErrorCode.PROTOCOL,
}
_BY_WORD = {code.value: code for code in SENT}

_OLDER_PEERS = (  # (how an older peer's reason starts, what it meant)
    ("HELLO takes 3..4 arguments", ErrorCode.UNSUPPORTED),
    ("authentication failed", ErrorCode.AUTH_FAILED),
    ("too many channels", ErrorCode.FULL),
    ("handshake timed out", ErrorCode.HANDSHAKE_TIMEOUT),
    ("resume refused: bad proof", ErrorCode.AUTH_FAILED),
    ("resume refused", ErrorCode.RESUME_REFUSED),
    ("this server expects TLS", ErrorCode.TLS),
    ("replaced by a new", ErrorCode.REPLACED),
    ("internal error", ErrorCode.INTERNAL),
)


def with_code(code: ErrorCode, text: str) -> str:
    """The reason of an ERROR that says ``code``: ``busy: text``."""
    told = code.told_as
    return f"{told.value}: {text}"


def code_of(reason: str) -> ErrorCode | None:
    """What an ERROR's reason says: its code word, or for an older peer's reason the
    meaning of its words; None when it says neither."""
    word, colon, _rest = reason.partition(":")
    if colon and word in _BY_WORD:
        return _BY_WORD[word]
    for start, code in _OLDER_PEERS:
        if reason.startswith(start):
            return code
    if reason.endswith("shutting down"):  # "client shutting down", "server shutting down"
        return ErrorCode.SHUTDOWN
    return None


def text_of(reason: str) -> str:
    """An ERROR's reason without its code word: what a log line shows."""
    word, colon, rest = reason.partition(":")
    return rest.lstrip() if colon and word in _BY_WORD else reason
