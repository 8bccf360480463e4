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
"""One worker's count in the shared page."""
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
        self._page = mmap.mmap(plan.shared, SLOT.size * plan.count)
        self._inbox = socket.socket(fileno=os.dup(plan.inboxes[plan.index]))
        self._inbox.setblocking(False)
        self._senders = [socket.socket(fileno=os.dup(fd)) for fd in plan.senders]
        for sender in self._senders:
            sender.setblocking(False)
        self._watch = IOWatch(reactor, self._inbox, self._on_inbox, self)
        self.on_connection: ConnectionHandler | None = None
        self.on_message: MessageHandler | None = None
        self.handed_over = 0
        """Connections this worker passed to their session's holder."""

    def start(self, on_connection: ConnectionHandler, on_message: MessageHandler) -> None:
        self.on_connection = on_connection
        self.on_message = on_message
        self._watch.want(READ)

    def listening_sockets(self, position: int) -> list[socket.socket]:
        """The shared listening sockets of the ``position``-th ``--listen`` address."""
        found = []
        for fd in self.plan.listen[position]:
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            found.append(sock)
        return found

    # ------------------------------------------------------------- counters

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.lockf(self.plan.shared, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(self.plan.shared, fcntl.LOCK_UN)

    def _slots(self) -> list[int]:
        return [SLOT.unpack_from(self._page, i * SLOT.size)[0] for i in range(self.count)]

    def take_channel(self, mine: int, limit: int) -> int | None:
        """Count one more authenticated channel here if the whole server has fewer
        than ``limit`` (``mine`` are this worker's, without it); else None, with
        the whole server's count for the refusal."""
        with self._locked():
            slots = self._slots()
            total = sum(slots) - slots[self.index] + mine
            if total >= limit:
                return total
            SLOT.pack_into(self._page, self.index * SLOT.size, mine + 1)
        return None

    def publish_channels(self, mine: int) -> None:
        """This worker holds ``mine`` authenticated channels now."""
        with self._locked():
            SLOT.pack_into(self._page, self.index * SLOT.size, mine)

    # ---------------------------------------------------------------- inbox

    def hand_over(self, worker: int, sock: socket.socket, note: dict[str, Any]) -> bool:
        """Pass ``sock`` to ``worker``; False if its inbox is full (serve it here)."""
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
                data, fds, _flags, _address = socket.recv_fds(self._inbox, INBOX_MESSAGE, 4)
            except (BlockingIOError, InterruptedError):
                return
            try:
                message = json.loads(data)
            except ValueError:
                message = None
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
