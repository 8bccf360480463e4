"""What a process counts over its life, for ``/metrics`` and ``status``.

Nothing here runs per byte or per frame: streams count their own bytes (two
integer adds per read or write, which they always did), and the meter takes
them over when a stream ends.  A scrape adds the bytes of the streams still
open, so the totals are exact at any moment and never go backwards.

Reasons are sorted into a few fixed classes, so that a label never takes
more than a handful of values whatever the peers send.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from reactor_mux.protocol.failures import FailureClass
from reactor_mux.tunnel.udp import DatagramCounts

STREAM_ERRORS = ("reset_by_peer", "local_error", "refused_by_peer", "channel_closed")
"""How a stream can end other than by both sides closing it."""

REFUSALS = ("forbidden", "limit", "shutting_down", "cannot_listen", "connect_failed", "other")
"""Why this side turned a mapping or a stream down."""


_REFUSAL_LABEL = {
    FailureClass.FORBIDDEN: "forbidden",
    FailureClass.LIMIT: "limit",
    FailureClass.SHUTDOWN: "shutting_down",
    FailureClass.UNAVAILABLE: "cannot_listen",
    FailureClass.REFUSED: "connect_failed",
    FailureClass.UNREACHABLE: "connect_failed",
    FailureClass.NETWORK: "connect_failed",
    FailureClass.UNRESOLVED: "connect_failed",
    FailureClass.TIMEOUT: "connect_failed",
    FailureClass.FAILED: "other",
}
"""The metric label of each class of refusal (the labels predate the classes)."""


@dataclass
class Meter:
    """The process's counters (monotonic: Prometheus counters)."""

    channels_opened: int = 0
    """Channels that completed the handshake."""
    resumes: int = 0
    """Sessions resumed on a new connection after the old one broke."""
    reconnects: int = 0
    """Client: connection attempts after the first."""
    streams_opened: Counter[str] = field(default_factory=Counter)
    """Per mapping label."""
    bytes_sent: Counter[str] = field(default_factory=Counter)
    """Per mapping label: bytes read from local sockets and sent into the channel,
    by streams that have ended (the open ones add theirs at a scrape)."""
    bytes_received: Counter[str] = field(default_factory=Counter)
    """Per mapping label: bytes from the channel written to local sockets (ended streams)."""
    stream_errors: Counter[str] = field(default_factory=Counter)
    refused: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Per (what: mapping or stream, REFUSALS class)."""
    connections_refused: Counter[str] = field(default_factory=Counter)
    """Server: connections turned away at accept, per ``admission.Refusal`` label."""
    startups_evicted: int = 0
    """Server: unauthenticated connections closed to make room for another source."""
    penalties: Counter[str] = field(default_factory=Counter)
    """Server: offences penalised, per ``penalties.Offence`` keyword."""
    datagrams: DatagramCounts = field(default_factory=DatagramCounts)
    """Every UDP forward's datagrams: sent into the channel, received, dropped."""

    def stream_ended(self, mapping: str, sent: int, received: int, error: str | None) -> None:
        self.bytes_sent[mapping] += sent
        self.bytes_received[mapping] += received
        if error is not None:
            self.stream_errors[error] += 1

    def refusal(self, what: str, kind: FailureClass) -> None:
        self.refused[what, _REFUSAL_LABEL[kind]] += 1
