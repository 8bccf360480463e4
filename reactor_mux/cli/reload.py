"""A reload (SIGHUP, or ``reactor-mux reload``): parse the command line and the
config file again, check them as a start would, apply to the running role what
can change live, and say which changed options wait for a restart.

Kept apart from the subcommands because it runs long after start-up, inside
the service, against a role that is already serving.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from reactor_mux.cli.parser import build_parser, checked, log_level, parse_arguments
from reactor_mux.cli.security import RunningServer, SecurityOptionError, ServerSecurity
from reactor_mux.logformat import event
from reactor_mux.roles.client import Client
from reactor_mux.roles.server import Permissions, Server
from reactor_mux.service import configfile, control
from reactor_mux.service.configfile import ConfigError

log = logging.getLogger("reactor_mux")


_APPLIED_BY_RELOAD = {
    "server": {"gateway_ports", "max_channels", "allow_connect", "allow_bind", "clients_file",
               "secret_file", "insecure", "verbose", "quiet", "max_startups",
               "per_source_max_startups", "per_source_penalties", "penalty_exempt"},
    "client": {"local", "remote", "dynamic", "verbose", "quiet"},
}  # fmt: skip
"""What a reload changes in a running process; every other option waits for a restart."""


def reloader(argv: Sequence[str], started: argparse.Namespace) -> control.Reload:
    """SIGHUP's (and ``reactor-mux reload``'s) work: read the config file again and
    apply what can change live.  A file that cannot be used changes nothing."""

    applied = [started]  # the options in force: what each reload changes is told

    def reload(app: Server | Client) -> tuple[control.Reloaded, str]:
        log.info("reloading %s", started.config, extra=event("reloading"))
        try:
            args = parse_arguments(argv)
            security = checked(args, _running(app))
        except (ConfigError, SecurityOptionError) as exc:
            message = f"reload failed, the running configuration stays: {exc}"
            log.error("%s", message, extra=event("reload_failed", reason=str(exc)))
            return control.Reloaded.REFUSED, message
        log.setLevel(log_level(args.verbose, args.quiet))
        done: list[str] = []
        problems: list[str] = []
        if isinstance(app, Server):
            assert isinstance(security, ServerSecurity)
            done += [f"changed {key}" for key in _changed_live(applied[0], args)]
            done += app.reconfigure(Permissions(security.policy, security.clients,
                                                security.secret_book, args.gateway_ports,
                                                args.max_channels, security.admission))  # fmt: skip
            if not done:
                done.append("nothing changed")
        elif args.forwards_from_command_line:
            done.append("forwards unchanged: -L/-R/-D on the command line replace the file's")
        else:
            changes = app.reconfigure(args.local + args.remote + args.dynamic)
            done += [f"added {flag}" for flag in changes.added]
            done += [f"removed {flag}" for flag in changes.removed]
            problems = changes.failed
        for problem in problems:
            log.error("reload: %s", problem, extra=event("reload_problem", reason=problem))
        waiting = _restart_needed(started, args)
        if waiting:
            log.warning("reload: %s changed; a restart applies that", ", ".join(waiting),
                        extra=event("restart_needed", reason=", ".join(waiting)))  # fmt: skip
        applied[0] = args
        message = f"reloaded {started.config}" + "".join(f"; {item}" for item in done)
        message += f"; failed: {'; '.join(problems)}" if problems else ""
        message += f"; waiting for a restart: {', '.join(waiting)}" if waiting else ""
        log.info("%s", message, extra=event("reloaded"))
        return (control.Reloaded.PARTLY if problems else control.Reloaded.APPLIED), message

    return reload


def _running(app: Server | Client) -> RunningServer | None:
    """What of a running server a reload cannot change (None for a client)."""
    if not isinstance(app, Server):
        return None
    tls = app.config.tls
    return RunningServer(app.bound_addresses, tls is not None and tls.requires_client_certificate)


def _changed_live(before: argparse.Namespace, now: argparse.Namespace) -> list[str]:
    """The options a reload applies whose value it changed (their config keys)."""
    applied = _APPLIED_BY_RELOAD[before.command]
    keys = configfile.option_keys(build_parser().roles[before.command])
    return [key for key, action in keys.items()
            if action.dest in applied
            and getattr(before, action.dest) != getattr(now, action.dest)]  # fmt: skip


def _restart_needed(started: argparse.Namespace, now: argparse.Namespace) -> list[str]:
    applied = _APPLIED_BY_RELOAD[started.command]
    keys = configfile.option_keys(build_parser().roles[started.command])
    return [key for key, action in keys.items()
            if action.dest not in applied
            and getattr(started, action.dest) != getattr(now, action.dest)]  # fmt: skip
