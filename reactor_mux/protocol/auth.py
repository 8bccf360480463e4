"""Mutual challenge-response authentication: what is signed, and how it is checked.

Both sides contribute a fresh 32-byte nonce: the server in its HELLO (its
*challenge*), the client in its ``AUTH``.  Each side proves that it knows the
secret with HMAC-SHA256 over a transcript that names the protocol, the
prover's role, the client's name and id, and both nonces:

    b"reactor-mux auth 1\\0" + role + b"\\0" + name + b"\\0" + client_id + b"\\0"
        + client_nonce + b"\\0" + server_nonce          (nonces in lowercase hex)

So a proof recorded on one channel is useless on another (the other side's
nonce differs), a client's proof cannot be reflected back as the server's
(the role differs), and the secret never crosses the wire.  Proofs are
compared in constant time.  docs/protocol.md §4 has test vectors, which
``tests/test_auth.py`` checks.

Nothing here touches a socket or a clock; the nonce source is injectable so
the transcripts can be tested exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

NONCE_BYTES = 32
NONCE_HEX = 2 * NONCE_BYTES
PROOF_HEX = 64  # SHA-256
TRANSCRIPT_LABEL = b"reactor-mux auth 1"
SHARED_NAME = "-"
"""The name a client gives when it authenticates with the shared secret only."""

MIN_SECRET_BYTES = 16
"""A shorter secret could be guessed offline from one recorded handshake."""

_NAME = re.compile(r"[0-9A-Za-z_.-]{1,64}")
_HEX = re.compile(r"[0-9a-f]+")


def is_client_name(text: str) -> bool:
    """1 to 64 of [0-9A-Za-z_.-], except "OK" (``AUTH OK`` is the server's reply)."""
    return bool(_NAME.fullmatch(text)) and text != "OK"


def is_nonce(text: str) -> bool:
    return len(text) == NONCE_HEX and bool(_HEX.fullmatch(text))


def is_proof(text: str) -> bool:
    return len(text) == PROOF_HEX and bool(_HEX.fullmatch(text))


def new_nonce(random_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    return random_bytes(NONCE_BYTES).hex()


def transcript(role: str, name: str, client_id: str, client_nonce: str, server_nonce: str) -> bytes:
    """The bytes a ``role`` ("client" or "server") signs."""
    fields = (TRANSCRIPT_LABEL, role.encode(), name.encode(), client_id.encode(),
              client_nonce.encode(), server_nonce.encode())  # fmt: skip
    return b"\0".join(fields)


def proof(secret: bytes, role: str, name: str, client_id: str, client_nonce: str,
          server_nonce: str) -> str:  # fmt: skip
    """HMAC-SHA256 of the transcript, in lowercase hex."""
    message = transcript(role, name, client_id, client_nonce, server_nonce)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


SESSION_LABEL = b"reactor-mux session 1"
RESUME_LABEL = b"reactor-mux resume 1"
SESSION_ID_HEX = 32
KEY_HEX = 64


def is_session_id(text: str) -> bool:
    return len(text) == SESSION_ID_HEX and bool(_HEX.fullmatch(text))


def is_key(text: str) -> bool:
    return len(text) == KEY_HEX and bool(_HEX.fullmatch(text))


def session_key(secret: bytes, name: str, client_id: str, client_nonce: str,
                server_nonce: str) -> bytes:  # fmt: skip
    """The key that lets an authenticated client resume its session: both ends
    derive it from the AUTH exchange, so it never crosses the wire."""
    fields = (SESSION_LABEL, name.encode(), client_id.encode(), client_nonce.encode(),
              server_nonce.encode())  # fmt: skip
    return hmac.new(secret, b"\0".join(fields), hashlib.sha256).digest()


def resume_proof(key: bytes, session_id: str, name: str, client_id: str, client_nonce: str,
                 server_nonce: str) -> str:  # fmt: skip
    """What a client shows to resume ``session_id``: fresh nonces on both sides,
    so a recorded proof is worth nothing on another connection."""
    fields = (RESUME_LABEL, session_id.encode(), name.encode(), client_id.encode(),
              client_nonce.encode(), server_nonce.encode())  # fmt: skip
    return hmac.new(key, b"\0".join(fields), hashlib.sha256).hexdigest()


def proof_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class Credentials:
    """What a client authenticates with."""

    secret: bytes
    name: str = SHARED_NAME

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a secret must be at least {MIN_SECRET_BYTES} bytes")
        if not is_client_name(self.name):
            raise ValueError(f"not a client name: {self.name!r} (1 to 64 of [0-9A-Za-z_.-])")

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(name={self.name!r}, secret=<{len(self.secret)} bytes>)"


class SecretBook(Protocol):
    """A server's view of who may connect: the secret for a client name, or None
    if no client of that name exists."""

    def secret_for(self, name: str) -> bytes | None: ...


@dataclass(frozen=True)
class SharedSecret:
    """One secret for every client, whatever name it gives."""

    secret: bytes

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a secret must be at least {MIN_SECRET_BYTES} bytes")

    def secret_for(self, name: str) -> bytes | None:
        return self.secret

    def __repr__(self) -> str:
        return f"SharedSecret(<{len(self.secret)} bytes>)"
