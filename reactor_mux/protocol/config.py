"""A session's settings, declared once.

Everything a ``Session`` is configured with lives in ``SessionConfig``, whose
defaults are the named constants of ``limits.py``.  The channel's settings
wrap one of these, and the command line's defaults and help text read the
same constants, so a default is stated in exactly one place.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from reactor_mux.protocol.auth import Credentials, SecretBook
from reactor_mux.protocol.limits import (
    DATA_FRAME_SIZE,
    DEFAULT_MAX_PENDING_SYNS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_WINDOW,
    DEFAULT_WINDOW,
    DEFAULT_WINDOW_BUDGET,
    MAX_DATA_BODY,
    MAX_MAPPINGS,
    MAX_WINDOW,
    MIN_FRAME,
    MIN_WINDOW,
)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The settings of one channel's protocol state, for either role."""

    window: int = DEFAULT_WINDOW
    """Per-stream flow-control window we announce (the peer's send limit)."""
    max_window: int = DEFAULT_MAX_WINDOW
    """How far we grow a stream's window for a sender that reports itself blocked
    (equal to ``window``: never grow)."""
    window_budget: int = DEFAULT_WINDOW_BUDGET
    """Window growth we grant, summed over the channel's streams."""
    max_frame: int = MAX_DATA_BODY
    """Largest data frame body we accept, announced in HELLO."""
    max_streams: int = DEFAULT_MAX_STREAMS
    """Open streams on the channel; a SYN beyond it is refused."""
    max_pending_syns: int = DEFAULT_MAX_PENDING_SYNS
    """Peer-opened streams still connecting; a SYN beyond it is refused."""
    max_mappings: int = MAX_MAPPINGS
    """CONNECT and BIND requests a server accepts per channel."""
    data_frame_size: int = DATA_FRAME_SIZE
    """Largest data frame body we send (smaller if the peer accepts less)."""
    credentials: Credentials | None = None
    """Client: authenticate with these (and require the server to prove it knows them)."""
    secret_book: SecretBook | None = None
    """Server: require every client to authenticate; the secret for each client name."""
    resume: bool = False
    """Keep streams through a broken connection: log our commands and retain sent
    bytes until the peer confirms them, and offer (client) or grant (server) a
    session that a new connection may resume (docs/protocol.md section 9)."""
    advertise: str = ""
    """Server: ``HOST:PORT`` told to clients that ask (``--advertise``); empty: none."""
    session_route: str = ""
    """Server: the hex digits every session id it hands out starts with (its node
    and worker, ``routehint``), so a resume finds its holder; empty: all random."""
    random_bytes: Callable[[int], bytes] = field(default=secrets.token_bytes, compare=False)
    """Where nonces come from (tests make them predictable)."""

    def __post_init__(self) -> None:
        if not MIN_WINDOW <= self.window <= MAX_WINDOW:
            raise ValueError(f"window must be within {MIN_WINDOW}..{MAX_WINDOW}")
        if not self.window <= self.max_window <= MAX_WINDOW:
            raise ValueError(f"max_window must be within window..{MAX_WINDOW}")
        if self.window_budget < 0:
            raise ValueError("window_budget must not be negative")
        if not MIN_FRAME <= self.max_frame <= MAX_DATA_BODY:
            raise ValueError(f"max_frame must be within {MIN_FRAME}..{MAX_DATA_BODY}")
        if not 1 <= self.data_frame_size <= MAX_DATA_BODY:
            raise ValueError(f"data_frame_size must be within 1..{MAX_DATA_BODY}")
        for name in ("max_streams", "max_pending_syns", "max_mappings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
