"""The resume exchange's tables and the replay (docs/protocol.md §9.4).

Each side sends a table: per stream, the data bytes it received and whether
the FIN came (``RECEIVED``), then the count of the peer's logged commands it
received and the highest stream id it saw opened (``RESUME END``).  From the
peer's table a side learns, per stream, where to send from again, and which
of its logged commands to send again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reactor_mux import codec
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.resumelog import ResumeLog
from reactor_mux.protocol.stream import Stream
from reactor_mux.protocol.streamstate import StreamState


@dataclass(frozen=True, slots=True)
class Row:
    """One stream in the peer's table."""

    received: int
    fin: bool


UNSEEN = Row(0, False)
"""A stream whose SYN never reached the peer: it gets the SYN again, then every byte."""


def table_rows(streams: Iterable[Stream]) -> list[tuple[int, int, int]]:
    """Our table: (stream id, bytes received, FIN received) for each stream we keep."""
    return [(stream.id, stream.received, int(stream.fin_received)) for stream in streams]


class PeerTable:
    """The rows the peer sent so far in this resume exchange."""

    def __init__(self) -> None:
        self.rows: dict[int, Row] = {}

    def add(self, stream_id: int, received: int, fin: bool, *, kept: bool) -> None:
        """A RECEIVED row; ``kept``: we still keep that stream (else we closed it
        and nothing of it goes again, so the table stays bounded by our streams)."""
        if stream_id in self.rows:
            raise ProtocolError(f"RECEIVED twice for stream {stream_id}")
        if kept:
            self.rows[stream_id] = Row(received, fin)

    def clear(self) -> None:
        self.rows.clear()


def replay_stream(stream: Stream, row: Row | None, output: codec.OutboundQueueAPI,
                  log: ResumeLog) -> int:  # fmt: skip
    """Reconcile one stream with the peer's row (None: the peer closed it); returns
    the bytes queued again."""
    tombstone = stream.state is StreamState.CLOSED
    if row is None:
        # The peer had everything (a tombstone), or it reset or refused the stream
        # and its replay says so.  Nothing to send again.
        if tombstone:
            log.close_tombstone(stream.id, output)
        elif stream.slot >= 0:
            kept = output.retained(stream.slot)
            output.acknowledge(stream.slot, kept)
            stream.released += kept
        return 0
    if stream.slot < 0:
        if row.received:
            raise ProtocolError(f"cannot resume: the peer has {row.received} bytes of stream "
                                f"{stream.id}, which sent none")  # fmt: skip
        return 0
    sent = stream.written - output.buffered(stream.slot)
    received = row.received
    if not stream.released <= received <= sent:
        raise ProtocolError(f"cannot resume stream {stream.id}: the peer has {received} "
                            f"bytes, this side sent {sent} and kept those after "
                            f"{stream.released}")  # fmt: skip
    output.acknowledge(stream.slot, received - stream.released)
    stream.released = received
    output.rewind(stream.slot, sent - received)
    fin_sent = stream.state is StreamState.HALF_CLOSED_LOCAL or tombstone
    if fin_sent and not row.fin and not stream.fin_pending:
        output.finish(stream.slot)
        log.fins_again.add(stream.id)
    if tombstone and row.fin and sent == received:
        log.close_tombstone(stream.id, output)
    return sent - received
