"""A server worker's ties to its siblings (``server --workers N``).

The supervisor (service/workers.py) binds the listening sockets once and starts
N workers, each a whole single-threaded server that accepts from those shared
sockets.  What must hold across them goes through what the supervisor made
before starting any, and handed down as descriptors (``WorkerPlan``):

* **a shared counter page** (a memfd, mapped by every worker): each worker's
  authenticated channels, so ``--max-channels`` counts the whole server; a check
  and its update happen under a POSIX record lock, which the kernel releases if
  its holder dies;
* **an inbox per worker** (one end of a datagram socket pair; the supervisor
  keeps both ends, so a restarted worker finds its inbox and what waits in it):
  a connection that resumes a session another worker holds is handed there
  with its socket (SCM_RIGHTS, ``socket.send_fds``) before a byte of it is
  read, and a penalty one worker gives a source is told to the others.
"""

from __future__ import annotations

import contextlib
import fcntl
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
SLOTS_PER_WORKER = 2
"""Per worker: its authenticated channels, and whether it is up (1) or not (0)."""
CHANNELS, ALIVE = 0, 1


def slot_offset(worker: int, which: int) -> int:
    return (worker * SLOTS_PER_WORKER + which) * SLOT.size


def page_size(count: int) -> int:
    return SLOT.size * SLOTS_PER_WORKER * count


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
    """The supervisor, when a worker died: its channels no longer count, siblings hand
    it nothing more until it is up again, and what waits in its inbox (connections
    handed to it while it died) is closed; how many were."""
    page = mmap.mmap(shared, page_size(count))
    try:
        with locked(shared):
            SLOT.pack_into(page, slot_offset(worker, CHANNELS), 0)
            SLOT.pack_into(page, slot_offset(worker, ALIVE), 0)
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
        with self._locked():
            SLOT.pack_into(self._page, slot_offset(self.index, CHANNELS), 0)
            SLOT.pack_into(self._page, slot_offset(self.index, ALIVE), 1)

    def listening_sockets(self, position: int) -> list[socket.socket]:
        """The shared listening sockets of the ``position``-th ``--listen`` address."""
        found = []
        for fd in self.plan.listen[position]:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
            found.append(sock)
        return found

    # ------------------------------------------------------------- counters

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return locked(self.plan.shared)

    def _slot(self, worker: int, which: int) -> int:
        return int(SLOT.unpack_from(self._page, slot_offset(worker, which))[0])

    def _slots(self) -> list[int]:
        return [self._slot(worker, CHANNELS) for worker in range(self.count)]

    def take_channel(self, mine: int, limit: int) -> int | None:
        """Count one more authenticated channel here if the whole server has fewer
        than ``limit`` (``mine`` are this worker's, without it); else None, with
        the whole server's count for the refusal."""
        with self._locked():
            slots = self._slots()
            total = sum(slots) - slots[self.index] + mine
            if total >= limit:
                return total
            SLOT.pack_into(self._page, slot_offset(self.index, CHANNELS), mine + 1)
        return None

    def publish_channels(self, mine: int) -> None:
        """This worker holds ``mine`` authenticated channels now."""
        with self._locked():
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
