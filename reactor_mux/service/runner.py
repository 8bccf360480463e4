"""Running a role as a long-lived process: signals, reload, log reopening.

SIGINT and SIGTERM drain (stop accepting, let open streams finish for up to
``--drain-timeout``), and a second one stops at once.  SIGHUP re-reads the
``--config`` file when there is one (a service's reload), and otherwise
drains, as a hangup of the terminal should.  SIGUSR1 reopens ``--log-file``
for logrotate.  Signals are handled by the reactor between events, never
inside one.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from reactor_mux.errors import StartupError
from reactor_mux.io.netutil import describe_error
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.roles.cluster import WORKER_ENV
from reactor_mux.service.background import Background
from reactor_mux.service.control import ControlSocket, Reload
from reactor_mux.service.logfile import ReopeningFileHandler
from reactor_mux.service.rundir import default_control_path
from reactor_mux.service.status import App

if TYPE_CHECKING:
    from reactor_mux.service.metrics import MetricsServer

log = logging.getLogger("reactor_mux")


@dataclass(frozen=True)
class Service:
    role: str
    drain_timeout: float
    build: Callable[[Reactor, Resolver], App]
    log_file: ReopeningFileHandler | None = None
    reload: Reload | None = None
    """How SIGHUP reloads; None: SIGHUP drains (no --config to re-read)."""
    control: Path | None = None
    """``--control``: the Unix socket for status, reload and forward."""
    metrics: tuple[str, int] | None = None
    """``--metrics``: where to serve /metrics."""
    background: Background | None = None
    """``client -f``: fork first, and tell the parent once the app is ready."""


def run(service: Service) -> int:
    """Run until SIGINT/SIGTERM (drain) or a second one (stop); the exit status."""
    if service.background is not None:
        parent_status = service.background.detach()
        if parent_status is not None:
            return parent_status
    # Signals wait while the handlers go in: one that arrives meanwhile is handled,
    # not lost to a half-installed set (or to SIGTERM's default action).
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, (*handled, signal.SIGUSR1, signal.SIGUSR2))
    try:
        return _run_with_signals(service, handled, blocked)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _run_with_signals(
    service: Service,
    handled: tuple[signal.Signals, ...],
    blocked: set[int | signal.Signals],
) -> int:
    reactor = Reactor()
    resolver = Resolver(reactor)
    app = service.build(reactor, resolver)
    signals = 0
    drain_timeout = service.drain_timeout

    def on_signal(signame: str) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info(
                "%s: draining for up to %gs (send it again to stop at once)",
                signame,
                drain_timeout,
                extra=log_event("draining", reason=signame),
            )
            app.drain(drain_timeout, reactor.stop)
        else:
            log.info("%s: stopping now", signame, extra=log_event("stopping", reason=signame))
            reactor.stop()

    def on_hangup(reload: Reload) -> None:
        if signals == 0:
            reload(app)
        else:  # a reload while draining would reopen ports
            log.info("SIGHUP: shutting down, so the config is not re-read")

    # Before start(): a signal that arrives once ports are open must stop us cleanly.
    for signum in handled:
        if signum == signal.SIGHUP and signal.getsignal(signum) is signal.SIG_IGN:
            continue  # started under nohup: a hangup is not for us
        if signum == signal.SIGHUP and service.reload is not None:
            reactor.add_signal_handler(signum, partial(on_hangup, service.reload))
            continue
        reactor.add_signal_handler(signum, partial(on_signal, signum.name))
    reactor.add_signal_handler(signal.SIGUSR1, partial(reopen_log, service.log_file))
    reactor.add_signal_handler(signal.SIGUSR2, _no_upgrade)
    signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    extras: list[ControlSocket | MetricsServer] = []
    try:
        try:
            if service.control is not None:
                extras.append(ControlSocket(reactor, service.control, app, service.reload))
            else:
                extras += _default_control(reactor, service, app)
            if service.metrics is not None:
                extras.append(_metrics(reactor, service.metrics, app))
            app.start()
        except (OSError, StartupError) as exc:
            reason = describe_error(exc) if isinstance(exc, OSError) else str(exc)
            log.error("cannot start %s: %s", service.role, reason,
                      extra=log_event("start_failed", reason=reason))  # fmt: skip
            return 1
        reactor.run()
    finally:
        for extra in extras:
            extra.close()
        app.close()
        resolver.close()
        reactor.close()
    log.info("stopped", extra=log_event("stopped"))
    return app.exit_status


def _default_control(reactor: Reactor, service: Service, app: App) -> list[ControlSocket]:
    """Without ``--control``, a socket in the user's runtime directory (rundir.py), so
    that ``reactor-mux status`` finds this process; a convenience, so a directory that
    cannot be used is a warning, not a failure to start."""
    try:
        path = default_control_path(service.role)
        return [ControlSocket(reactor, path, app, service.reload, chosen=False)]
    except StartupError as exc:
        log.warning("no control socket (give --control PATH for one): %s", exc,
                    extra=log_event("control_unavailable", reason=str(exc)))  # fmt: skip
        return []


def _metrics(reactor: Reactor, address: tuple[str, int], app: App) -> MetricsServer:
    # Imported here: prometheus_client is loaded only by processes that serve metrics.
    from reactor_mux.service.metrics import MetricsServer

    try:
        return MetricsServer(reactor, *address, app)
    except OSError as exc:
        where = format_host_port(*address)
        raise StartupError(f"cannot serve --metrics on {where}: {describe_error(exc)}") from None


def _no_upgrade() -> None:
    """SIGUSR2 upgrades a server's supervisor (``--workers``); here (a single process,
    a worker, a client) it must not end the process, as its default action would."""
    if os.environ.get(WORKER_ENV) is None:
        log.info("SIGUSR2: ignored (upgrades without downtime need server --workers)")


def reopen_log(log_file: ReopeningFileHandler | None) -> None:
    if log_file is None:
        log.info("SIGUSR1: no --log-file to reopen")
        return
    try:
        log_file.reopen()
    except OSError as exc:  # the old file stays in use
        log.error("SIGUSR1: cannot reopen %s: %s", log_file.path, describe_error(exc),
                  extra=log_event("log_reopen_failed", reason=describe_error(exc)))  # fmt: skip
        return
    log.info("SIGUSR1: reopened %s", log_file.path, extra=log_event("log_reopened"))
