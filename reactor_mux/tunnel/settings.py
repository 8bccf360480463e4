"""Per-channel settings and their named limits, shared by both roles.

Every bounded resource of a channel is a field here or in the protocol's
``SessionConfig`` (which this wraps), with its default; the command line
exposes each as a flag with that default, docs/limits.md turns them into the
worst-case memory formula, and tests drive each one to its limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reactor_mux.protocol.config import SessionConfig

DEFAULT_CONNECT_TIMEOUT = 10.0
"""Seconds to connect to a target (or to the server) before giving up."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
"""Seconds for a new channel to complete the HELLO exchange."""

DEFAULT_KEEPALIVE_INTERVAL = 15.0
"""Seconds of silence from the peer before we send PING."""

KEEPALIVE_TIMEOUT_FACTOR = 3
"""Without --keepalive-timeout, a peer silent for this many intervals is dead."""

DEFAULT_MAX_BUFFER = 16 * 1024 * 1024
"""Bytes a channel may hold for its streams in each direction before it stops
reading more (the local sockets for outbound data, the channel for inbound)."""

MIN_MAX_BUFFER = 64 * 1024
"""The smallest --max-buffer: below a few windows the cap would pause constantly."""

DEFAULT_RESUME_TIMEOUT = 30.0
"""Seconds both sides keep a broken channel's streams for the client to resume
(the command line's default; 0 resets them at once, as before resume existed)."""

DEFAULT_DRAIN_TIMEOUT = 10.0
"""Seconds a SIGTERM/SIGINT waits for open streams to finish."""


@dataclass(frozen=True)
class ChannelSettings:
    """What a channel is configured with: its session's settings plus the
    timeouts and the buffer cap that the I/O side enforces."""

    session: SessionConfig = field(default_factory=SessionConfig)
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    keepalive_interval: float = DEFAULT_KEEPALIVE_INTERVAL
    keepalive_timeout: float | None = None
    max_buffer: int = DEFAULT_MAX_BUFFER
    resume_timeout: float = 0.0
    """Seconds to keep a broken channel's streams for a resume (0: none).  A
    positive value needs ``session.resume``, which makes the session keep what
    a resume replays."""

    def __post_init__(self) -> None:
        if self.resume_timeout < 0 or (self.resume_timeout > 0) != self.session.resume:
            raise ValueError("resume_timeout > 0 exactly when session.resume is set")

    @property
    def dead_after(self) -> float:
        """Seconds of silence after which the peer is declared dead."""
        if self.keepalive_timeout is not None:
            return self.keepalive_timeout
        return KEEPALIVE_TIMEOUT_FACTOR * self.keepalive_interval
