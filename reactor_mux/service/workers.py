"""``server --workers N``: one supervisor, N single-threaded server workers.

The supervisor binds every ``--listen`` address once and starts N workers
(``python -m reactor_mux`` again, with the same arguments and a ``WorkerPlan``
in the environment), which inherit the listening sockets and accept from them:
one accept queue per address, shared, so a worker takes a connection when its
loop is free (few, long, heavy channels spread by load, not by a hash), and a
worker that dies leaves its queue to the others (docs/operations.md, "Scaling
out", has the measurements beside SO_REUSEPORT).  What holds server-wide is in
roles/cluster.py.

The supervisor carries no traffic.  It restarts a worker that dies (with
backoff; the others are untouched), passes signals on (SIGTERM drains every
worker, SIGHUP reloads them, SIGUSR1 reopens their logs), answers the control
socket for the whole server (``status`` lists every worker, ``reload`` reaches
them all, from each worker's own control socket), and serves ``--metrics`` as
one scrape of every worker's, with a ``worker`` label.  SIGUSR2 upgrades with no
downtime: a new supervisor is started from the program on disk with the
listening sockets inherited, and once its workers answer, the old workers
drain; the queues never close, so no connection attempt is refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reactor_mux import __version__
from reactor_mux.errors import StartupError
from reactor_mux.io.netutil import describe_error, listen_sockets, sockname
from reactor_mux.io.reactor import Reactor, Timer
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.roles.backoff import Backoff
from reactor_mux.roles.cluster import (
    INBOX_BUFFER,
    WORKER_ENV,
    WorkerPlan,
    page_size,
    worker_gone,
)
from reactor_mux.service import control
from reactor_mux.service.logfile import ReopeningFileHandler
from reactor_mux.service.rundir import default_control_path, prepared_directory
from reactor_mux.service.runner import reopen_log

if TYPE_CHECKING:
    from reactor_mux.service.metrics import MetricsServer

log = logging.getLogger("reactor_mux")

INHERITED_ENV = "REACTOR_MUX_LISTEN_FDS"
"""Set by an upgrade: the listening sockets the new supervisor inherits, per
``--listen`` address (JSON lists of descriptors)."""
RESTART_MIN = 0.5
RESTART_MAX = 30.0
"""A dying worker is restarted after RESTART_MIN seconds, doubling up to RESTART_MAX
while it keeps dying young; one that lived STABLE_AFTER seconds starts the count again."""
STABLE_AFTER = 30.0
ASK_TIMEOUT = 5.0
"""Seconds the supervisor waits for a worker's control answer."""
UPGRADE_READY_TIMEOUT = 30.0
"""Seconds a new supervisor's workers have to answer before an upgrade is abandoned."""
UPGRADE_POLL = 0.2
MAX_WORKERS = 64
PR_SET_PDEATHSIG = 1


def auto_workers() -> int:
    """``--workers auto``: one per core this process may run on."""
    try:
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    except (AttributeError, OSError):
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    backoff: Backoff = field(default_factory=lambda: Backoff(RESTART_MIN, RESTART_MAX))
    timer: Timer | None = None


class Supervisor:
    """Binds, starts and watches the workers; the control socket and metrics of the
    whole server."""

    name = "supervisor"

    def __init__(self, reactor: Reactor, argv: Sequence[str], listen: list[tuple[str, int]],
                 count: int, node: int) -> None:  # fmt: skip
        self.reactor = reactor
        self.argv = list(argv)
        self.listen = listen
        self.count = count
        self.node = node
        self.stopping = False
        self.running = False
        """The workers were started (endpoints that fail to open again are not fatal)."""
        self.exit_status = 0
        self.started_at = reactor.time()
        self.sockets: list[list[socket.socket]] = []
        self.workers = [_Worker(index) for index in range(count)]
        self._run_id = f"{os.getpid()}"
        self._plumbing: list[int] = []
        self._shared = -1
        self._inboxes: list[int] = []
        self._plans: list[WorkerPlan] = []
        self.given_control: Path | None = None
        """``--control``: an upgrade's successor takes it over."""
        self.control_socket: control.ControlSocket | None = None
        self.metrics_address: tuple[str, int] | None = None
        self.metrics_server: MetricsServer | None = None
        self._successor: subprocess.Popen[bytes] | None = None
        self._upgrade_deadline = 0.0

    # ------------------------------------------------------------ starting

    def bind(self) -> None:
        """Every ``--listen`` address, or the sockets an upgrade handed down."""
        inherited = os.environ.pop(INHERITED_ENV, None)
        if inherited is not None:
            for fds in json.loads(inherited):
                self.sockets.append([socket.socket(fileno=fd) for fd in fds])
            return
        for host, port in self.listen:
            try:
                self.sockets.append(listen_sockets(host, port))
            except OSError as exc:
                where = format_host_port(host, port)
                raise StartupError(f"cannot listen on {where}: {describe_error(exc)}") from None

    def start(self) -> None:
        shared = os.memfd_create("reactor-mux-counters", os.MFD_CLOEXEC)
        os.ftruncate(shared, page_size(self.count))
        self._shared = shared
        inboxes, senders = [], []
        for _ in range(self.count):
            inbox, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for end in (inbox, sender):
                end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, INBOX_BUFFER)
                end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, INBOX_BUFFER)
            inboxes.append(inbox.detach())
            senders.append(sender.detach())
        self._plumbing = [shared, *inboxes, *senders]
        self._inboxes = inboxes
        directory = prepared_directory()
        listen = [[sock.fileno() for sock in group] for group in self.sockets]
        for worker in self.workers:
            path = directory / f"server-{self._run_id}-w{worker.index}.worker"
            self._plans.append(WorkerPlan(worker.index, self.count, self.node, listen, inboxes,
                                          senders, shared, str(path)))  # fmt: skip
        for group in self.sockets:
            address = " and ".join(format_host_port(*sockname(sock)) for sock in group)
            log.info("listening on %s", address, extra=log_event("listening", address=address))
        for worker in self.workers:
            self._spawn(worker)
        self.running = True

    def _spawn(self, worker: _Worker) -> None:
        worker.timer = None
        if self.stopping:
            return
        plan = self._plans[worker.index]
        env = {**os.environ, WORKER_ENV: plan.to_env()}
        try:
            # Its own process group: a terminal's ^C reaches the supervisor, which passes it
            # on once (a worker that got two would stop at once instead of draining).
            worker.proc = subprocess.Popen([sys.executable, "-m", "reactor_mux", *self.argv],
                                           env=env, pass_fds=plan.descriptors,
                                           preexec_fn=_in_the_worker,
                                           stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as exc:
            log.error("cannot start worker %d: %s", worker.index, describe_error(exc),
                      extra=log_event("worker_failed", reason=describe_error(exc)))  # fmt: skip
            self._restart_later(worker)
            return
        worker.started = self.reactor.time()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid,
                 extra=log_event("worker_started", address=str(worker.index)))  # fmt: skip

    # ------------------------------------------------------------ children

    def reap(self) -> None:
        """SIGCHLD: restart the workers that died; stop once all have, if stopping."""
        for worker in self.workers:
            proc = worker.proc
            if proc is None or proc.poll() is None:
                continue
            worker.proc = None
            status = proc.returncode
            dropped = worker_gone(self._shared, self.count, worker.index,
                                  self._inboxes[worker.index])  # fmt: skip
            if dropped:
                log.warning("worker %d died with %d handed connection(s) waiting: closed",
                            worker.index, dropped)  # fmt: skip
            if self.stopping:
                log.info("worker %d stopped", worker.index)
                if status not in (0, None):
                    self.exit_status = status if status > 0 else 1
                continue
            how = f"status {status}" if status >= 0 else f"signal {-status}"
            log.warning("worker %d (pid %d) exited with %s: restarting it", worker.index,
                        proc.pid, how, extra=log_event("worker_exited", reason=how))  # fmt: skip
            if self.reactor.time() - worker.started >= STABLE_AFTER:
                worker.backoff.reset()
            self._restart_later(worker)
        if self.stopping and all(worker.proc is None for worker in self.workers):
            self.reactor.stop()

    def _restart_later(self, worker: _Worker) -> None:
        worker.restarts += 1
        delay = worker.backoff.next_delay()
        worker.timer = self.reactor.call_later(delay, lambda: self._spawn(worker), self)

    def signal_workers(self, signum: int) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.send_signal(signum)

    def stop(self, signum: int) -> None:
        """SIGTERM/SIGINT: pass it on (the first drains, a second stops at once)."""
        self.stopping = True
        for group in self.sockets:  # the workers' copies close as they drain
            for sock in group:
                sock.close()
        for worker in self.workers:
            if worker.timer is not None:
                worker.timer.cancel()
                worker.timer = None
        self.signal_workers(signum)
        self.reap()

    def close_after_bug(self) -> None:
        log.error("supervisor: internal error; stopping the workers")
        self.stop(signal.SIGTERM)

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()
        for group in self.sockets:
            for sock in group:
                sock.close()
        for fd in self._plumbing:
            with contextlib.suppress(OSError):
                os.close(fd)

    # ------------------------------------------------------------ asking workers

    def ask(self, message: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each live worker's answer to a control request (an error answer for one
        that does not answer in time)."""
        for worker, plan in zip(self.workers, self._plans, strict=True):
            if worker.proc is None:
                yield worker.index, {"ok": False, "error": "restarting"}
                continue
            try:
                yield worker.index, control.request(Path(plan.control), message, ASK_TIMEOUT)
            except control.ControlError as exc:
                yield worker.index, {"ok": False, "error": str(exc)}

    def status(self) -> dict[str, Any]:
        """The whole server: every worker's channels, tagged with the worker."""
        report: dict[str, Any] = {
            "role": "server", "version": __version__, "pid": os.getpid(),
            "uptime": round(self.reactor.time() - self.started_at, 3),
            "listening": [], "forwards": [], "channels": [], "workers": [],
            "admission": {"unauthenticated": 0, "sources_turned_away": 0},
        }  # fmt: skip
        for index, answer in self.ask({"command": "status"}):
            worker = self.workers[index]
            entry: dict[str, Any] = {"worker": index, "restarts": worker.restarts,
                                     "pid": worker.proc.pid if worker.proc else None}  # fmt: skip
            result = answer.get("result")
            if not answer.get("ok") or not isinstance(result, dict):
                entry["error"] = answer.get("error")
                report["workers"].append(entry)
                continue
            if not report["listening"]:
                report["listening"] = result.get("listening", [])
            for channel in result.get("channels", []):
                channel["worker"] = index
                report["channels"].append(channel)
            for key in ("unauthenticated", "sources_turned_away"):
                report["admission"][key] += result.get("admission", {}).get(key, 0)
            entry["channels"] = len(result.get("channels", []))
            entry["unauthenticated"] = result.get("admission", {}).get("unauthenticated", 0)
            report["workers"].append(entry)
        return report

    def reload(self) -> tuple[control.Reloaded, str]:
        """Every worker re-reads the config file; what each said, together."""
        outcomes, applied = [], 0
        for index, answer in self.ask({"command": "reload"}):
            if answer.get("ok"):
                applied += 1
                outcomes.append(f"worker {index}: {answer.get('result')}")
            else:
                outcomes.append(f"worker {index}: {answer.get('error')}")
        if applied == len(self.workers):
            return control.Reloaded.APPLIED, "; ".join(outcomes)
        return (control.Reloaded.PARTLY if applied else control.Reloaded.REFUSED,
                "; ".join(outcomes))  # fmt: skip

    def metrics(self) -> list[tuple[int, str]]:
        """Each worker's exposition text (``/metrics`` adds the ``worker`` label)."""
        texts = []
        for index, answer in self.ask({"command": "metrics"}):
            if answer.get("ok") and isinstance(answer.get("result"), str):
                texts.append((index, answer["result"]))
        return texts

    def carry_out(self, message: dict[str, Any]) -> Any:
        """The supervisor's control socket."""
        command = message.get("command")
        if command == "status":
            return self.status()
        if command == "reload":
            reloaded, outcome = self.reload()
            if reloaded is not control.Reloaded.APPLIED:
                raise control.ControlError(outcome, partial=reloaded is control.Reloaded.PARTLY)
            return outcome
        if command == "forward":
            raise control.ControlError("forward add|cancel is for a client")
        raise control.ControlError(f"unknown command {command!r} (status, reload)")

    # ------------------------------------------------------------ upgrade

    def upgrade(self) -> None:
        """SIGUSR2: start a new supervisor (the program on disk now) on the same
        listening sockets; once all its workers answer, this one's drain."""
        if self.stopping or self._successor is not None:
            return
        fds = [[sock.fileno() for sock in group] for group in self.sockets]
        flat = [fd for group in fds for fd in group]
        for fd in flat:
            os.set_inheritable(fd, True)
        # What the successor binds by address: --control and --metrics are its from
        # now on, and this one's again if the upgrade is abandoned.
        self.close_endpoints(handing_over=True)
        env = {**os.environ, INHERITED_ENV: json.dumps(fds)}
        try:
            proc = subprocess.Popen([sys.executable, "-m", "reactor_mux", *self.argv], env=env,
                                    pass_fds=flat, stdin=subprocess.DEVNULL)  # fmt: skip
        except OSError as exc:
            log.error("SIGUSR2: cannot start the new server: %s", describe_error(exc),
                      extra=log_event("upgrade_failed", reason=describe_error(exc)))  # fmt: skip
            self.open_endpoints()
            return
        log.info("SIGUSR2: upgrading: the new server is pid %d; these workers drain once "
                 "it serves", proc.pid,
                 extra=log_event("upgrading", address=str(proc.pid)))  # fmt: skip
        self._successor = proc
        self._upgrade_deadline = self.reactor.time() + UPGRADE_READY_TIMEOUT
        self.reactor.call_later(UPGRADE_POLL, self._check_successor, self)

    def _check_successor(self) -> None:
        proc = self._successor
        assert proc is not None
        if proc.poll() is not None:
            log.error("upgrade abandoned: the new server exited with status %s; this one "
                      "carries on", proc.returncode,
                      extra=log_event("upgrade_failed", reason=str(proc.returncode)))  # fmt: skip
            self._abandon_upgrade()
            return
        path = self.given_control or control_path(None).with_name(f"server-{proc.pid}.sock")
        if _serving(path):
            log.info("upgrade: the new server serves; draining this one",
                     extra=log_event("upgraded", address=str(proc.pid)))  # fmt: skip
            self.stop(signal.SIGTERM)
            return
        if self.reactor.time() > self._upgrade_deadline:
            log.error("upgrade abandoned: the new server did not serve within %g s",
                      UPGRADE_READY_TIMEOUT,
                      extra=log_event("upgrade_failed", reason="not serving"))  # fmt: skip
            proc.kill()  # its workers follow (they get SIGTERM when their parent dies)
            proc.wait()
            self._abandon_upgrade()
            return
        self.reactor.call_later(UPGRADE_POLL, self._check_successor, self)

    def _abandon_upgrade(self) -> None:
        self._successor = None
        self.open_endpoints()

    # ------------------------------------------------------------ endpoints

    def open_endpoints(self) -> None:
        """The control socket and ``--metrics``; at start (a failure is fatal), and
        again after an abandoned upgrade (a failure is logged)."""
        try:
            if self.control_socket is None:
                self.control_socket = control.ControlSocket(
                    self.reactor, control_path(self.given_control), None, None,
                    chosen=self.given_control is not None, carry_out=self.carry_out)  # fmt: skip
            if self.metrics_address is not None and self.metrics_server is None:
                from reactor_mux.service.metrics import MetricsServer, WorkersCollector

                collector = WorkersCollector(self.metrics)
                try:
                    self.metrics_server = MetricsServer(self.reactor, *self.metrics_address,
                                                        None, collector)  # fmt: skip
                except OSError as exc:
                    where = format_host_port(*self.metrics_address)
                    raise StartupError(f"cannot serve --metrics on {where}: "
                                       f"{describe_error(exc)}") from None  # fmt: skip
        except (OSError, StartupError) as exc:
            if not self.running:
                raise
            reason = describe_error(exc) if isinstance(exc, OSError) else str(exc)
            log.error("cannot serve the control socket or --metrics again: %s", reason,
                      extra=log_event("control_unavailable", reason=reason))  # fmt: skip

    def close_endpoints(self, *, handing_over: bool = False) -> None:
        """Close the control socket and ``--metrics``; ``handing_over``: only what an
        upgrade's successor binds by address (the default control socket is per pid)."""
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        if self.control_socket is not None and (self.given_control or not handing_over):
            self.control_socket.close()
            self.control_socket = None


def _in_the_worker() -> None:
    """In the worker, before it runs: a process group of its own, so a terminal's ^C
    reaches only the supervisor, which passes it on once (a worker that got two would
    stop at once instead of draining); and SIGTERM (drain) if the supervisor dies."""
    os.setpgid(0, 0)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _serving(path: Path) -> bool:
    """The supervisor at control socket ``path`` has every worker answering."""
    try:
        answer = control.request(path, {"command": "status"}, ASK_TIMEOUT)
    except control.ControlError:
        return False
    result = answer.get("result")
    workers = result.get("workers", []) if isinstance(result, dict) else []
    return bool(workers) and all("error" not in worker for worker in workers)


def control_path(given: Path | None) -> Path:
    """The supervisor's control socket (a worker's is its own, in the plan)."""
    return given if given is not None else default_control_path("server")


def run_supervisor(argv: Sequence[str], listen: list[tuple[str, int]], count: int, node: int,
                   given_control: Path | None, metrics: tuple[str, int] | None,
                   log_file: ReopeningFileHandler | None = None, *,
                   reloads: bool = True) -> int:  # fmt: skip
    """Run the workers until SIGINT/SIGTERM (they drain) and all have stopped.
    ``reloads``: SIGHUP reloads (a --config to re-read); else it drains, as SIGTERM."""
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
               signal.SIGCHLD)  # fmt: skip
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    reactor = Reactor()
    supervisor = Supervisor(reactor, argv, listen, count, node)
    supervisor.given_control, supervisor.metrics_address = given_control, metrics
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            reactor.add_signal_handler(signum, partial(supervisor.stop, signum))
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # not under nohup
            hangup = (partial(supervisor.signal_workers, signal.SIGHUP) if reloads
                      else partial(supervisor.stop, signal.SIGTERM))  # fmt: skip
            reactor.add_signal_handler(signal.SIGHUP, hangup)

        def reopen_logs() -> None:  # the workers reopen theirs
            reopen_log(log_file)
            supervisor.signal_workers(signal.SIGUSR1)

        reactor.add_signal_handler(signal.SIGUSR1, reopen_logs)
        reactor.add_signal_handler(signal.SIGUSR2, supervisor.upgrade)
        reactor.add_signal_handler(signal.SIGCHLD, supervisor.reap)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        try:
            supervisor.bind()
            supervisor.open_endpoints()
            supervisor.start()
        except (OSError, StartupError) as exc:
            reason = describe_error(exc) if isinstance(exc, OSError) else str(exc)
            log.error("cannot start server: %s", reason,
                      extra=log_event("start_failed", reason=reason))  # fmt: skip
            return 1
        reactor.run()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        supervisor.close_endpoints()
        supervisor.close()
        reactor.close()
    log.info("stopped", extra=log_event("stopped"))
    return supervisor.exit_status
