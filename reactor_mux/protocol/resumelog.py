"""What a resumable session keeps so a cut loses nothing (docs/protocol.md §9):
every logged command it sent until the peer confirms it, the rings of closed
streams whose last bytes or FIN are unconfirmed (tombstones), and the barriers
that confirm both.

A barrier is a ``PING`` with ``BARRIER_TOKEN`` set.  The peer answers in order,
so its ``PONG`` proves it received everything sent before the ``PING``: the
commands logged before it, each stream's bytes up to where they stood, and the
FINs of the tombstones then closed.  One barrier is out at a time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from reactor_mux import codec
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.limits import MAX_RESUME_LOG, RESUME_LOG_BARRIER
from reactor_mux.protocol.stream import Stream

BARRIER_TOKEN = 0x80000000
"""PING tokens with this bit set are barriers (section 9.2): their PONG confirms
everything sent before them.  Keepalive tokens count up from 1 and never reach it."""

BARRIER_EVERY = 1024
"""A busy resumable channel sends a barrier after this many sends (output_views
calls), so retained bytes and the log are confirmed while traffic flows."""
UNCOUNTED_SENDS = 0xFFFFFFFF
"""The data plane's pace when nothing is kept: its sends matter to no barrier."""


@dataclass(slots=True)
class Barrier:
    """A barrier on its way: what its PONG will confirm."""

    token: int
    log_end: int
    """The logged commands before it (a count since the session began)."""
    sent: list[tuple[Stream, int]]
    """Each stream with a ring, and its bytes sent by then."""
    tombstones: list[int]
    """Closed streams whose last bytes and FIN had gone by then."""


class ResumeLog:
    """The resume log of one session, its tombstones and its barriers."""

    def __init__(self, keeping: bool) -> None:
        self.keeping = keeping
        """This session keeps a log (it is or may become resumable)."""
        self.lost: str | None = None
        """Why the session stopped keeping one, once it has."""
        self._commands: deque[bytes] = deque()  # logged commands not yet confirmed
        self.base = 0  # how many logged commands came before _commands[0]
        self.bytes = 0
        self.received = 0
        """Logged commands received from the peer (its table's count of ours)."""
        self.tombstones: dict[int, Stream] = {}
        self.fins_again: set[int] = set()
        """Tombstones whose FIN a resume queued again, not yet out."""
        self.barrier: Barrier | None = None
        self.wanted = False
        """A barrier is due as soon as one at a time allows."""
        self._seq = 0
        self.sends = 0  # output_views calls since the last barrier
        self._sends_at_tick = 0

    @property
    def end(self) -> int:
        """Logged commands sent since the session began."""
        return self.base + len(self._commands)

    def record(self, frame: bytes) -> None:
        """Keep a sent command until a barrier confirms it."""
        self._commands.append(frame)
        self.bytes += len(frame)

    @property
    def due(self) -> bool:
        """Enough is unconfirmed that a barrier should go now."""
        return len(self._commands) >= RESUME_LOG_BARRIER

    @property
    def overflow(self) -> str | None:
        """Why to give resuming up, if the peer leaves too much unconfirmed."""
        if self.bytes > MAX_RESUME_LOG:
            return f"the peer left over {MAX_RESUME_LOG} bytes of commands unconfirmed"
        return None

    def since(self, count: int) -> Iterator[bytes]:
        """The logged commands after the peer's first ``count``, to send again."""
        if not self.base <= count <= self.end:
            raise ProtocolError(f"cannot resume: the peer has {count} of our commands, and "
                                f"this side keeps numbers {self.base}..{self.end}")  # fmt: skip
        return islice(self._commands, count - self.base, None)

    def give_up(self, why: str | None, streams: Iterable[Stream],
                output: codec.OutboundQueueAPI) -> None:  # fmt: skip
        """Keep nothing more: free the log, every ring's retained bytes, and the
        tombstones that have nothing left to send."""
        self.keeping = False
        self.lost = why
        self._commands.clear()
        self.bytes = 0
        self.barrier = None
        self.wanted = False
        for stream in streams:
            if stream.slot >= 0:
                kept = output.retained(stream.slot)
                output.acknowledge(stream.slot, kept)
                stream.released += kept
        for stream_id in list(self.tombstones):
            if stream_id not in self.fins_again:  # else it closes after its bytes and FIN
                self.close_tombstone(stream_id, output)
        output.set_retain(False)

    def clear(self) -> None:
        """The session ended: keep nothing (the output queue dropped the rings)."""
        self.keeping = False
        self._commands.clear()
        self.bytes = 0
        self.tombstones.clear()
        self.fins_again.clear()
        self.barrier = None

    def connection_lost(self) -> None:
        """A barrier out on the broken connection will never be answered."""
        self.barrier = None
        self.wanted = False

    # -- barriers

    def quiet(self) -> bool:
        """Called on every tick: True once sends happened and then stopped since
        the last tick (a quiet channel confirms what it sent)."""
        sends = self.sends
        quiet = sends == self._sends_at_tick
        self._sends_at_tick = sends
        return bool(sends) and quiet

    def count_send(self, count: int = 1) -> bool:
        """``count`` more sends; True when a barrier should go with them."""
        self.sends += count
        return self.wanted or self.sends >= BARRIER_EVERY

    def sends_before_barrier(self) -> int:
        """Sends that may go before one must be counted (the data plane reports its
        own sends at this pace): 1 while a barrier is wanted, and as many as fit in
        a report when nothing is kept (no barrier will go)."""
        if not self.keeping:
            return UNCOUNTED_SENDS
        if self.wanted:
            return 1
        return max(1, BARRIER_EVERY - self.sends)

    def open_barrier(self, streams: Iterable[Stream], output: codec.OutboundQueueAPI) -> int:
        """Start a barrier; returns the PING token to send."""
        self.sends = self._sends_at_tick = 0
        self.wanted = False
        self._seq = (self._seq + 1) % BARRIER_TOKEN
        token = BARRIER_TOKEN | self._seq
        sent = [(stream, stream.written - output.buffered(stream.slot))
                for stream in streams if stream.slot >= 0]  # fmt: skip
        # A tombstone whose FIN a resume queued again still has bytes to send: a
        # barrier covers it only once that FIN is out.
        fins_again = self.fins_again
        tombstones = [sid for sid in self.tombstones if sid not in fins_again]
        self.barrier = Barrier(token, self.end, sent, tombstones)
        return token

    def answered(self, token: int, output: codec.OutboundQueueAPI) -> bool:
        """A barrier PONG: if it answers ours, the peer has everything sent before
        it: free the log, the rings' retained bytes and the tombstones."""
        barrier = self.barrier
        if barrier is None or barrier.token != token:
            return False
        self.barrier = None
        for _ in range(barrier.log_end - self.base):
            self.bytes -= len(self._commands.popleft())
        self.base = barrier.log_end
        for stream, total in barrier.sent:
            if stream.slot >= 0 and total > stream.released:
                output.acknowledge(stream.slot, total - stream.released)
                stream.released = total
        for stream_id in barrier.tombstones:
            if stream_id in self.tombstones:
                self.close_tombstone(stream_id, output)
        return True

    # -- tombstones

    def bury(self, stream: Stream) -> None:
        """A stream closed cleanly: keep its ring until a barrier confirms its end."""
        self.tombstones[stream.id] = stream

    def close_tombstone(self, stream_id: int, output: codec.OutboundQueueAPI) -> None:
        tombstone = self.tombstones.pop(stream_id)
        output.close(tombstone.slot)
        tombstone.slot = -1

    def fin_resent(self, stream_id: int, output: codec.OutboundQueueAPI) -> bool:
        """A FIN a resume queued again went out; True if a barrier should confirm it."""
        self.fins_again.discard(stream_id)
        if stream_id not in self.tombstones:
            return False
        if self.keeping:
            return True
        self.close_tombstone(stream_id, output)  # resuming was given up: nothing keeps it
        return False
