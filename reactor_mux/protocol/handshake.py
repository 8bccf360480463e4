"""One connection's handshake (docs/protocol.md §4): the HELLOs, and where
authentication is on, the client's AUTH and the server's AUTH OK.

It knows the nonces, the secret (or the book of them) and what was proved; it
never sees streams or output.  The session asks it what to send and what a
received HELLO, AUTH or AUTH OK means, and acts on the answer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from reactor_mux.protocol import auth
from reactor_mux.protocol.commands import parse_client_id, parse_decimal
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.limits import (
    MAX_DATA_BODY,
    MAX_WINDOW,
    MIN_FRAME,
    MIN_WINDOW,
    PROTOCOL_VERSION,
)
from reactor_mux.protocol.verbs import Role

RESUME_WORD = "resume"
"""The fifth word of a client's HELLO: keep a session for me (``resume:ID``: resume ID)."""

NEEDS_SECRET = (
    "the server requires authentication and this client has no secret "
    "(--secret-file or REACTOR_MUX_SECRET)"
)
UNASKED_SECRET = (
    "the server did not ask this client to authenticate, so it cannot "
    "prove it knows the secret: is it the server you meant?"
)
WRONG_SERVER_PROOF = (
    "the server's proof is wrong: it does not know the secret (is it the server you meant?)"
)


class ResumeAsk(enum.Enum):
    """What a client's HELLO asks about sessions (§9.1)."""

    NONE = "none"  # nothing: it keeps no session
    NEW = "new"  # ``resume``: keep one for me
    RESUME = "resume"  # ``resume:ID``: carry on session ID


@dataclass(frozen=True, slots=True)
class ResumeOffer:
    ask: ResumeAsk
    session_id: str = ""

    @classmethod
    def parse(cls, word: str) -> ResumeOffer:
        if word == RESUME_WORD:
            return NEW_SESSION
        session_id = word.removeprefix(RESUME_WORD + ":")
        if session_id == word or not auth.is_session_id(session_id):
            raise ProtocolError(f"unknown HELLO option {word[:80]!r}")
        return cls(ResumeAsk.RESUME, session_id)

    @property
    def word(self) -> str:
        return RESUME_WORD if self.ask is ResumeAsk.NEW else f"{RESUME_WORD}:{self.session_id}"


NO_OFFER = ResumeOffer(ResumeAsk.NONE)
NEW_SESSION = ResumeOffer(ResumeAsk.NEW)


ROUTE_ID_PREFIX = "rt-"
"""How a client id starts when its client resumes where the server advertises
(§9.5): a capability in a word older servers take as an opaque id (as ssh's
``ext-info-c`` rides in the key exchange's algorithm list), so asking costs
nothing with them.  The ids older clients make are hex, which never starts so."""


@dataclass(frozen=True, slots=True)
class Hello:
    """A peer's HELLO, checked."""

    window: int
    max_frame: int
    client_id: str | None = None  # a client's (received by a server)
    challenge: str = ""  # a server's nonce, where it requires authentication
    offer: ResumeOffer = NO_OFFER

    @property
    def asks_route(self) -> bool:
        """A client's: it resumes at the address the server advertises (§9.5)."""
        return self.client_id is not None and self.client_id.startswith(ROUTE_ID_PREFIX)


def parse_hello(receiver: Role, args: Sequence[str]) -> Hello:
    """Check a HELLO's words as ``receiver`` sees them; raises ``ProtocolError``."""
    version = parse_decimal(args[0], "protocol version", 0, 0xFFFFFFFF)
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"unsupported protocol version {version} (this side speaks {PROTOCOL_VERSION})"
        )
    window = parse_decimal(args[1], "window", MIN_WINDOW, MAX_WINDOW)
    max_frame = parse_decimal(args[2], "max frame", MIN_FRAME, MAX_DATA_BODY)
    client_id, challenge = None, ""
    if len(args) >= 4:
        if receiver is Role.CLIENT:
            challenge = args[3]
            if not auth.is_nonce(challenge) or len(args) > 4:
                raise ProtocolError(f"not an authentication challenge: {challenge[:64]!r}")
        else:
            client_id = parse_client_id(args[3])
    offer = ResumeOffer.parse(args[4]) if len(args) == 5 else NO_OFFER
    return Hello(window, max_frame, client_id, challenge, offer)


class AfterHello(enum.Enum):
    """What comes after the peer's HELLO."""

    OPEN = "open"  # no authentication: the channel opens
    AWAIT_AUTH = "await AUTH"  # server: the client's AUTH comes next
    SEND_AUTH = "send AUTH"  # client: prove we know the secret, then await AUTH OK
    NEEDS_SECRET = "needs a secret"  # client: the server asks, and we have none
    UNASKED_SECRET = "unasked secret"  # client: we have one, and the server asks none


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """A server's judgement of a client's AUTH: our proof to answer with, or why not
    (for our log only: the client hears ``authentication failed``, or ``told``)."""

    proof: str = ""
    refusal: str = ""
    told: str = ""
    """What the client hears instead, where it gives nothing away (a missing name)."""


class Handshake:
    """The nonces, secrets and names of one connection's handshake."""

    def __init__(
        self,
        role: Role,
        client_id: str,
        credentials: auth.Credentials | None,
        secret_book: auth.SecretBook | None,
        random_bytes: Callable[[int], bytes],
    ) -> None:
        self.role = role
        self.client_id = client_id
        """Ours (client), or the peer's once its HELLO is in (server)."""
        self.credentials = credentials
        self.secret_book = secret_book
        self._random_bytes = random_bytes
        self.nonce = auth.new_nonce(random_bytes)
        """Ours: the client's in AUTH, the server's challenge in HELLO."""
        self.server_nonce = ""
        """Client: the server's challenge."""
        self.client_name: str | None = None
        """The name the client authenticated as (server), or ours (client)."""
        self.key = b""
        """Derived from this connection's AUTH exchange: a resume key needing no wire."""

    def renew(self) -> None:
        """Client: a new connection, a new nonce."""
        self.nonce = auth.new_nonce(self._random_bytes)
        self.server_nonce = ""

    def hello_words(self, offer: ResumeOffer) -> list[str]:
        """The words after ``HELLO v w f``: a client's id and offer, a server's challenge."""
        if self.role is Role.CLIENT:
            if not self.client_id:
                return []
            return [self.client_id] if offer.ask is ResumeAsk.NONE else [self.client_id,
                                                                          offer.word]  # fmt: skip
        return [self.nonce] if self.secret_book is not None else []

    def after_hello(self, hello: Hello) -> AfterHello:
        if self.role is Role.SERVER:
            self.client_id = hello.client_id or ""
            return AfterHello.AWAIT_AUTH if self.secret_book is not None else AfterHello.OPEN
        self.server_nonce = hello.challenge
        if hello.challenge and self.credentials is None:
            return AfterHello.NEEDS_SECRET
        if self.credentials is not None:
            return AfterHello.SEND_AUTH if hello.challenge else AfterHello.UNASKED_SECRET
        return AfterHello.OPEN

    def auth_words(self) -> tuple[str, str, str]:
        """Client: ``AUTH name nonce proof`` over both nonces."""
        credentials = self.credentials
        assert credentials is not None
        self.client_name = credentials.name
        signed = auth.proof(credentials.secret, "client", credentials.name, self.client_id,
                            self.nonce, self.server_nonce)  # fmt: skip
        return credentials.name, self.nonce, signed

    def check_auth(self, name: str, client_nonce: str, given: str) -> AuthVerdict:
        """Server: the client's AUTH.  Malformed words raise ``ProtocolError``."""
        if not auth.is_client_name(name):
            raise ProtocolError(f"not a client name: {name[:64]!r}")
        if not auth.is_nonce(client_nonce) or not auth.is_proof(given):
            raise ProtocolError("AUTH takes a 64-hex-digit nonce and proof")
        assert self.secret_book is not None
        secret = self.secret_book.secret_for(name)
        if secret is None and name == auth.SHARED_NAME:  # not a guess at a name: no name
            return AuthVerdict(
                refusal="authentication failed: no client name (the client gave no --name, "
                "and this server knows its clients by name)",
                told="authentication failed: this server knows its clients by name: give --name",
            )
        if secret is None:
            return AuthVerdict(refusal=f"authentication failed: unknown client name {name!r}")
        expected = auth.proof(secret, "client", name, self.client_id, client_nonce, self.nonce)
        if not auth.proof_matches(expected, given):
            return AuthVerdict(refusal=f"authentication failed: wrong proof from {name!r}")
        self.client_name = name
        self.key = auth.session_key(secret, name, self.client_id, client_nonce, self.nonce)
        return AuthVerdict(auth.proof(secret, "server", name, self.client_id, client_nonce,
                                      self.nonce))  # fmt: skip

    def check_auth_ok(self, given: str) -> bool:
        """Client: the server's AUTH OK proves it knows the secret too."""
        if not auth.is_proof(given):
            raise ProtocolError("AUTH OK takes a 64-hex-digit proof")
        credentials = self.credentials
        assert credentials is not None
        expected = auth.proof(credentials.secret, "server", credentials.name, self.client_id,
                              self.nonce, self.server_nonce)  # fmt: skip
        if not auth.proof_matches(expected, given):
            return False
        self.key = auth.session_key(credentials.secret, credentials.name, self.client_id,
                                    self.nonce, self.server_nonce)  # fmt: skip
        return True
