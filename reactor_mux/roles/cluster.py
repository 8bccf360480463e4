"""A server worker's ties to its siblings (``server --workers N``).

The supervisor (service/workers.py) binds the listening sockets once and starts
N workers, each a whole single-threaded server that accepts from those shared
sockets.  What must hold across them goes through what the supervisor made
before starting any, and handed down as descriptors (``WorkerPlan``):

* **a shared counter page** (a memfd, mapped by every worker): each worker's
  authenticated channels and unauthenticated startups, and its startups per source
  block, so ``--max-channels``, ``--max-startups`` and
  ``--per-source-max-startups`` count the whole server; a check and its update
  happen under a POSIX record lock, which the kernel releases if its holder dies;
  the same counts tell a worker busier than a sibling to leave the shared accept
  queue to it for a moment (``busier_than_siblings``);
* **an inbox per worker** (one end of a datagram socket pair; the supervisor
  keeps both ends, so a restarted worker finds its inbox and what waits in it):
  a connection that resumes a session another worker holds is handed there
  with its socket (SCM_RIGHTS, ``socket.send_fds``) before a byte of it is
  read, and a penalty one worker gives a source is told to the others.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import mmap
import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from reactor_mux.io.reactor import READ, IOWatch, Reactor
from reactor_mux.protocol.routehint import Route

log = logging.getLogger("reactor_mux")

WORKER_ENV = "REACTOR_MUX_WORKER"
"""The environment variable that makes a ``reactor-mux server`` process a worker:
its ``WorkerPlan`` as JSON."""
SLOT = struct.Struct("=q")
"""One number in the shared page."""
SLOTS_PER_WORKER = 3
"""Per worker: its authenticated channels, whether it is up and accepting (1) or not
(0), and its startups (connections not yet authenticated)."""
CHANNELS, ALIVE, STARTUPS = 0, 1, 2
BLOCK_ENTRY = struct.Struct("=QQ")
"""One entry of a worker's table of startups per source block: the block's key
(``block_key``; 0 is a free entry) and its count (0 is also free)."""
BLOCK_ENTRIES = 4096
"""Entries of each worker's block table: source blocks with a startup in progress
that the other workers see.  A block that finds no entry free among its
``BLOCK_PROBES`` is counted in its own worker only (with the default FULL of 100
startups, a table at most 2.5% full: practically never)."""
BLOCK_PROBES = 8
"""Entries a block may take, from the one its key names (linear probing)."""


def slot_offset(worker: int, which: int) -> int:
    return (worker * SLOTS_PER_WORKER + which) * SLOT.size


def table_offset(count: int, worker: int) -> int:
    """Where ``worker``'s block table starts, after every worker's slots."""
    return SLOT.size * SLOTS_PER_WORKER * count + BLOCK_ENTRY.size * BLOCK_ENTRIES * worker


def page_size(count: int) -> int:
    return table_offset(count, count)


def block_key(block: str) -> int:
    """A source block's key in the tables: the same in every worker (``hash()`` is
    salted per process), never 0."""
    return int.from_bytes(hashlib.blake2b(block.encode(), digest_size=8).digest(), "big") or 1


def probes(key: int) -> range:
    """The entries a block's key may take (wrapping around the table)."""
    first = key % BLOCK_ENTRIES
    return range(first, first + BLOCK_PROBES)


@contextlib.contextmanager
def locked(fd: int) -> Iterator[None]:
    """The shared page's lock: a POSIX record lock, which the kernel releases if its
    holder dies (a worker killed inside never blocks the others)."""
    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


def worker_gone(shared: int, count: int, worker: int, inbox: int) -> int:
    """The supervisor, when a worker died: its channels and startups no longer count,
    siblings hand it nothing more until it is up again, and what waits in its inbox
    (connections handed to it while it died) is closed; how many were."""
    page = mmap.mmap(shared, page_size(count))
    try:
        with locked(shared):
            forget_worker(page, count, worker)
    finally:
        page.close()
    dropped = 0
    with socket.socket(fileno=os.dup(inbox)) as reader:
        reader.setblocking(False)
        while True:
            try:
                _data, fds, _flags, _address = socket.recv_fds(reader, INBOX_MESSAGE, 4)
            except (BlockingIOError, InterruptedError):
                return dropped
            for fd in fds:
                os.close(fd)
                dropped += 1


def forget_worker(page: mmap.mmap, count: int, worker: int) -> None:
    """Zero ``worker``'s counts (it is gone, or starts again): under the lock."""
    for which in range(SLOTS_PER_WORKER):
        SLOT.pack_into(page, slot_offset(worker, which), 0)
    start = table_offset(count, worker)
    page[start : start + BLOCK_ENTRY.size * BLOCK_ENTRIES] = bytes(BLOCK_ENTRY.size * BLOCK_ENTRIES)


INBOX_MESSAGE = 4096
"""The largest message between workers (JSON)."""
INBOX_BATCH = 64
"""Messages read per wake-up, so a flood of handed-over connections cannot starve
the rest of the loop."""
INBOX_BUFFER = 1 << 20
"""Bytes an inbox may hold: a worker that stalls makes its siblings serve what
they would have handed it (a resume then retries), never block."""

ConnectionHandler = Callable[[socket.socket, dict[str, Any]], None]
MessageHandler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class WorkerPlan:
    """What the supervisor hands a worker: its place and the descriptors it shares."""

    index: int
    count: int
    node: int
    listen: list[list[int]]
    """Per ``--listen`` address, the descriptors of its listening sockets."""
    inboxes: list[int]
    """Per worker, its inbox's receiving end; ``senders`` are the other ends."""
    senders: list[int]
    shared: int
    """The counter page (memfd)."""
    control: str
    """This worker's own control socket, which the supervisor asks."""

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> WorkerPlan:
        return cls(**json.loads(text))

    @property
    def descriptors(self) -> list[int]:
        """Every descriptor the worker must inherit."""
        return [fd for fds in self.listen for fd in fds] + [*self.inboxes, *self.senders,
                                                             self.shared]  # fmt: skip


class Cluster:
    """The worker's side: its index, the shared counters, its inbox."""

    def __init__(self, reactor: Reactor, plan: WorkerPlan) -> None:
        self.plan = plan
        self.index = plan.index
        self.count = plan.count
        self.route = Route(plan.node, plan.index)
        self.name = f"worker {plan.index} inbox"
        self._page = mmap.mmap(plan.shared, page_size(plan.count))
        self._lock_depth = 0
        """Nested holds of the page's lock (a POSIX record lock is not counted: the
        first release would end every hold)."""
        self._table = table_offset(plan.count, plan.index)
        # The inherited descriptors themselves, never copies: what this worker closes
        # (its listeners, when it drains) must be closed in it.
        self._inbox = socket.socket(fileno=plan.inboxes[plan.index])
        self._inbox.setblocking(False)
        self._senders = [socket.socket(fileno=fd) for fd in plan.senders]
        for sender in self._senders:
            sender.setblocking(False)
        self._watch = IOWatch(reactor, self._inbox, self._on_inbox, self)
        self.on_connection: ConnectionHandler | None = None
        self.on_message: MessageHandler | None = None
        self.handed_over = 0
        """Connections this worker passed to their session's holder."""

    def start(self, on_connection: ConnectionHandler, on_message: MessageHandler) -> None:
        """Take handed connections and messages; count as up, with no channel."""
        self.on_connection = on_connection
        self.on_message = on_message
        self._watch.want(READ)
        with self.exclusive():
            forget_worker(self._page, self.count, self.index)
            SLOT.pack_into(self._page, slot_offset(self.index, ALIVE), 1)

    def stop_accepting(self) -> None:
        """Draining: siblings hand this worker nothing more, and do not leave the
        accept queue to it."""
        with self.exclusive():
            SLOT.pack_into(self._page, slot_offset(self.index, ALIVE), 0)

    def listening_sockets(self, position: int) -> list[socket.socket]:
        """The shared listening sockets of the ``position``-th ``--listen`` address."""
        found = []
        for fd in self.plan.listen[position]:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            found.append(sock)
        return found

    # ------------------------------------------------------------- counters

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the page's lock (nested holds are fine): checks and updates of the
        counts in between are atomic across the workers."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with locked(self.plan.shared):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    def _slot(self, worker: int, which: int) -> int:
        return int(SLOT.unpack_from(self._page, slot_offset(worker, which))[0])

    def _slots(self) -> list[int]:
        return [self._slot(worker, CHANNELS) for worker in range(self.count)]

    def take_channel(self, mine: int, limit: int) -> int | None:
        """Count one more authenticated channel here if the whole server has fewer
        than ``limit`` (``mine`` are this worker's, without it); else None, with
        the whole server's count for the refusal."""
        with self.exclusive():
            slots = self._slots()
            total = sum(slots) - slots[self.index] + mine
            if total >= limit:
                return total
            SLOT.pack_into(self._page, slot_offset(self.index, CHANNELS), mine + 1)
        return None

    def elsewhere(self, block: str) -> tuple[int, int]:
        """The other workers' startups: all of them, and those from ``block`` (the
        caller holds ``exclusive()`` to act on the answer)."""
        key = block_key(block)
        total = from_block = 0
        for worker in range(self.count):
            if worker == self.index:
                continue
            total += self._slot(worker, STARTUPS)
            start = table_offset(self.count, worker)
            for entry in probes(key):
                found, held = BLOCK_ENTRY.unpack_from(
                    self._page, start + BLOCK_ENTRY.size * (entry % BLOCK_ENTRIES)
                )
                if found == key:
                    from_block += held
        return total, from_block

    def publish_startups(self, block: str, from_block: int, total: int) -> None:
        """This worker has ``total`` startups now, ``from_block`` of them from ``block``."""
        key = block_key(block)
        with self.exclusive():
            SLOT.pack_into(self._page, slot_offset(self.index, STARTUPS), total)
            free = None
            for entry in probes(key):
                offset = self._table + BLOCK_ENTRY.size * (entry % BLOCK_ENTRIES)
                found, held = BLOCK_ENTRY.unpack_from(self._page, offset)
                if found == key:
                    BLOCK_ENTRY.pack_into(self._page, offset, key if from_block else 0, from_block)
                    return
                if free is None and not held:
                    free = offset
            if free is not None and from_block:
                BLOCK_ENTRY.pack_into(self._page, free, key, from_block)

    def busier_than_siblings(self) -> bool:
        """This worker holds more channels and startups than a sibling that accepts:
        that one should take the next connection (read without the lock: a hint)."""
        mine = self._slot(self.index, CHANNELS) + self._slot(self.index, STARTUPS)
        return any(self._slot(worker, ALIVE) and mine > self._slot(worker, CHANNELS)
                   + self._slot(worker, STARTUPS)
                   for worker in range(self.count) if worker != self.index)  # fmt: skip

    def publish_channels(self, mine: int) -> None:
        """This worker holds ``mine`` authenticated channels now."""
        with self.exclusive():
            SLOT.pack_into(self._page, slot_offset(self.index, CHANNELS), mine)

    # ---------------------------------------------------------------- inbox

    def hand_over(self, worker: int, sock: socket.socket, note: dict[str, Any]) -> bool:
        """Pass ``sock`` to ``worker``; False if it is down (restarting: its sessions
        are gone) or its inbox is full: serve it here."""
        if not self._slot(worker, ALIVE):
            return False
        data = json.dumps(note).encode()
        try:
            socket.send_fds(self._senders[worker], [data], [sock.fileno()])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            log.warning("cannot hand a connection to worker %d: %s", worker, exc)
            return False
        sock.close()
        self.handed_over += 1
        return True

    def tell_others(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every other worker (dropped for one whose inbox is full)."""
        data = json.dumps(message).encode()
        for worker, sender in enumerate(self._senders):
            if worker != self.index:
                with contextlib.suppress(OSError):
                    sender.send(data)

    def _on_inbox(self, _mask: int) -> None:
        for _ in range(INBOX_BATCH):
            try:
                data, fds, flags, _address = socket.recv_fds(self._inbox, INBOX_MESSAGE, 4)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = json.loads(data) if not flags & socket.MSG_TRUNC else None
            except ValueError:
                message = None
            if message is None:
                log.warning("%s: dropped a message that is not one (%d bytes)", self.name,
                            len(data))  # fmt: skip
            if not isinstance(message, dict):
                for fd in fds:
                    os.close(fd)
                continue
            if fds:
                for extra in fds[1:]:
                    os.close(extra)
                sock = socket.socket(fileno=fds[0])
                assert self.on_connection is not None
                self.on_connection(sock, message)
            elif self.on_message is not None:
                self.on_message(message)

    def close_after_bug(self) -> None:
        log.error("%s: internal error; handed connections are no longer taken", self.name)
        self._watch.close()

    def close(self) -> None:
        self._watch.close()
        self._inbox.close()
        for sender in self._senders:
            sender.close()
        self._page.close()
