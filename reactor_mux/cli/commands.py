"""What each subcommand does once its command line is parsed: ``server`` and
``client`` (build the role from the options and run it as a service),
``keygen``, ``check-config``, and ``status``, ``reload`` and ``forward``
(one request to a running process's ``--control`` socket).

Kept apart from the parser, which only says what the options are: this is
where they turn into a running role, files written or a printed answer.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from reactor_mux.cli.parser import build_parser, checked, log_level, parse_arguments, usage_error
from reactor_mux.cli.reload import reloader
from reactor_mux.cli.security import ClientSecurity, SecurityOptionError, ServerSecurity
from reactor_mux.io.netutil import describe_error
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.logformat import JsonFormatter
from reactor_mux.protocol.auth import Credentials, SecretBook
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.limits import MAX_MAPPINGS
from reactor_mux.roles.client import Client, ClientConfig
from reactor_mux.roles.cluster import WORKER_ENV, Cluster, WorkerPlan
from reactor_mux.roles.server import Server, ServerConfig
from reactor_mux.security.credentials import ANY_OWNER
from reactor_mux.security.keygen import KeygenError, generate, generate_secret
from reactor_mux.security.penalties import parse_networks
from reactor_mux.service import configfile, control, rundir, status
from reactor_mux.service import runner as service
from reactor_mux.service.background import Background
from reactor_mux.service.configfile import ConfigError
from reactor_mux.service.logfile import ReopeningFileHandler
from reactor_mux.service.workers import run_supervisor
from reactor_mux.tunnel.settings import ChannelSettings

log = logging.getLogger("reactor_mux")


def run_role(argv: Sequence[str], args: argparse.Namespace) -> int:
    """``server`` or ``client``: check the options, start logging, and run the role as
    a service until it stops.  ``argv`` is what a reload parses again."""
    try:
        security = checked(args)
    except (ConfigError, SecurityOptionError) as exc:
        return usage_error(args.command, str(exc))
    if getattr(args, "stdio", None) is not None:  # ssh -W: the terminal shows errors only
        args.quiet = not args.verbose
        if args.connect_attempts is None:
            args.connect_attempts = 1  # a ProxyCommand that waits helps nobody (ssh's default)
    plan_text = os.environ.get(WORKER_ENV) if args.command == "server" else None
    plan = WorkerPlan.from_env(plan_text) if plan_text else None
    try:
        log_file = _setup_logging(args.command, args.verbose, args.quiet, args.log_file,
                                  args.log_format, plan.index if plan else None)  # fmt: skip
    except OSError as exc:
        return usage_error(args.command, f"cannot open --log-file {args.log_file}: "
                            f"{describe_error(exc)}")  # fmt: skip
    if plan is None and getattr(args, "workers", 1) > 1:
        node = args.node_id if args.node_id is not None else 0
        return run_supervisor(argv, args.listen, args.workers, node, args.control, args.metrics,
                              log_file, reloads=args.config is not None)  # fmt: skip
    build: Callable[[Reactor, Resolver], Server | Client]
    control_path, metrics = args.control, args.metrics
    if isinstance(security, ServerSecurity) and plan is not None:
        # A worker: its own control socket, which the supervisor asks; no --metrics.
        build = partial(_worker, config=server_config(args, security), plan=plan)
        control_path, metrics = Path(plan.control), None
    elif isinstance(security, ServerSecurity):
        build = partial(Server, config=server_config(args, security))
    else:
        background = Background() if args.background else None
        build = partial(Client, config=client_config(args, security, background))
    reload = reloader(argv, args) if args.config is not None else None
    return service.run(
        service.Service(
            args.command,
            args.drain_timeout,
            build,
            log_file,
            reload=reload,
            control=control_path,
            metrics=metrics,
            background=background if args.command == "client" else None,
        )
    )


def _worker(reactor: Reactor, resolver: Resolver, *, config: ServerConfig,
            plan: WorkerPlan) -> Server:  # fmt: skip
    return Server(reactor, resolver, config, Cluster(reactor, plan))


def _settings(
    args: argparse.Namespace,
    *,
    credentials: Credentials | None = None,
    secret_book: SecretBook | None = None,
) -> ChannelSettings:
    session = SessionConfig(
        window=args.window,
        max_window=max(args.window, args.max_window),
        window_budget=args.max_buffer // 4,  # see DEFAULT_WINDOW_BUDGET
        max_frame=args.max_frame,
        max_streams=args.max_streams,
        max_pending_syns=args.max_pending_syns,
        max_mappings=getattr(args, "max_mappings", MAX_MAPPINGS),
        credentials=credentials,
        secret_book=secret_book,
        resume=args.resume_timeout > 0,
    )
    return ChannelSettings(
        session=session,
        resume_timeout=args.resume_timeout,
        connect_timeout=args.connect_timeout,
        handshake_timeout=args.handshake_timeout,
        keepalive_interval=args.keepalive_interval,
        keepalive_timeout=args.keepalive_timeout,
        max_buffer=args.max_buffer,
    )


def server_config(args: argparse.Namespace, security: ServerSecurity) -> ServerConfig:
    """The server's settings from its parsed and checked options (the API uses it too)."""
    return ServerConfig(
        listen=args.listen,
        settings=_settings(args, secret_book=security.secret_book),
        gateway_ports=args.gateway_ports,
        max_channels=args.max_channels,
        drain_timeout=args.drain_timeout,
        policy=security.policy,
        clients=security.clients,
        tls=security.tls,
        admission=security.admission,
        websocket_path=args.ws_path,
        udp_timeout=args.udp_timeout,
        proxy_protocol_from=parse_networks(args.proxy_protocol_from),
        node_id=args.node_id,
        advertise=args.advertise,
    )


def client_config(
    args: argparse.Namespace, security: ClientSecurity, background: Background | None
) -> ClientConfig:
    return ClientConfig(
        server=args.server,
        websocket=args.websocket,
        proxy=args.proxy,
        udp_timeout=args.udp_timeout,
        forwards=args.local + args.remote + args.dynamic,
        settings=_settings(args, credentials=security.credentials),
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
        drain_timeout=args.drain_timeout,
        tls=security.tls,
        exit_on_forward_failure="--exit-on-forward-failure"
        if args.exit_on_forward_failure
        else "-f"
        if background is not None
        else None,
        persist=args.persist,
        connect_attempts=args.connect_attempts,
        on_forwards_up=background.ready if background is not None else None,
        stdio_target=args.stdio,
    )


def _setup_logging(
    role: str,
    verbose: bool,
    quiet: bool,
    log_file: Path | None = None,
    log_format: str = "text",
    worker: int | None = None,
) -> ReopeningFileHandler | None:
    """Log to stderr, or to ``log_file`` (returned, for SIGUSR1 to reopen); a server
    worker's lines say which worker wrote them."""
    level = log_level(verbose, quiet)
    file_handler = ReopeningFileHandler(log_file) if log_file is not None else None
    handler: logging.Handler = file_handler or logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(role, worker))
    else:
        label = role if worker is None else f"{role}[{worker}]"
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s reactor-mux {label}: %(levelname)s %(message)s")
        )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False
    return file_handler


def control_command(args: argparse.Namespace) -> int:
    """Send ``status``, ``reload`` or ``forward`` to a running process; print its answer.
    Without ``--control``: status reports every process of the user's runtime directory,
    reload and forward go to the only one there is (rundir.py)."""
    message: dict[str, object] = {"command": args.command}
    if args.command == "forward":
        spec = args.forward
        message.update(action=args.action, forward=[f"-{spec.kind.value}", spec.text])
    path = args.control
    if path is None:
        running = _running_processes()
        if args.command == "status":
            return _status_of_all(running, args.json)
        path, problem = _the_one(running, "client" if args.command == "forward" else None)
        if path is None:
            print(f"reactor-mux {args.command}: error: {problem}", file=sys.stderr)
            return 1
    try:
        answer = control.request(path, message)
    except control.ControlError as exc:
        print(f"reactor-mux {args.command}: error: {exc}", file=sys.stderr)
        return 1
    if not answer["ok"]:
        what = "partly applied" if answer.get("partial") else "error"
        print(f"reactor-mux {args.command}: {what}: {answer.get('error')}", file=sys.stderr)
        return 1
    result: Any = answer.get("result")
    if args.command == "status":
        sys.stdout.write(json.dumps(result, indent=2) + "\n" if args.json
                         else status.render_text(result))  # fmt: skip
    else:
        print(result)
    return 0


def _running_processes() -> list[tuple[Path, dict[str, Any]]]:
    """Each control socket of the runtime directory that answers, with its status; a
    socket nobody answers on (its process was killed) is removed."""
    running = []
    for path in rundir.control_sockets():
        try:
            answer = control.request(path, {"command": "status"}, timeout=5.0)
        except control.ControlError:
            if rundir.abandoned(path):  # its process was killed: nothing will answer
                with contextlib.suppress(OSError):
                    path.unlink()
            continue
        if answer.get("ok"):
            running.append((path, answer["result"]))
    return running


def _status_of_all(running: list[tuple[Path, dict[str, Any]]], as_json: bool) -> int:
    if not running:
        print(
            f"no running reactor-mux process of yours in {rundir.runtime_directory()} (one "
            "started with --control PATH is asked with --control PATH)",
            file=sys.stderr,
        )
        return 1
    if as_json:
        reports = [{"control": str(path), **report} for path, report in running]
        sys.stdout.write(json.dumps(reports, indent=2) + "\n")
    else:
        sys.stdout.write("\n".join(f"{status.render_text(report)}control: {path}\n"
                                   for path, report in running))  # fmt: skip
    return 0


def _the_one(
    running: list[tuple[Path, dict[str, Any]]], role: str | None
) -> tuple[Path | None, str]:
    """The control socket of the only running process (of ``role``), or why there is none."""
    chosen = [path for path, report in running if role is None or report["role"] == role]
    if len(chosen) == 1:
        return chosen[0], ""
    what = f"reactor-mux {role}" if role else "reactor-mux process"
    if not chosen:
        return None, f"no running {what} of yours in {rundir.runtime_directory()}: give --control"
    listed = ", ".join(str(path) for path in chosen)
    return None, f"{len(chosen)} running: choose one with --control ({listed})"


def check_config(path: Path) -> int:
    if os.getuid() == 0:  # root checks files that belong to the service's user
        ANY_OWNER.accepted = True
    try:
        role = configfile.infer_role(path)
        args = parse_arguments([role, "--config", str(path)])
        checked(args)
    except (ConfigError, SecurityOptionError) as exc:
        print(f"reactor-mux check-config: error: {exc}", file=sys.stderr)
        return 1
    print(f"# {args.config}: a valid {role} config file.  Effective settings:")
    for line in configfile.render(build_parser().roles[role], args):
        print(line)
    return 0


def keygen(args: argparse.Namespace) -> int:
    if (args.cert is None) != (args.key is None):
        return usage_error("keygen", "--cert and --key go together")
    if args.cert is None and args.secret is None:
        return usage_error("keygen", "nothing to write: give --cert and --key, or --secret")
    try:
        if args.cert is not None:
            fingerprint = generate(args.cert, args.key, args.name, args.days, force=args.force)
            print(f"wrote {args.cert} and {args.key} (mode 0600)")
            print(f"server:  --tls-cert {args.cert} --tls-key {args.key}")
            print(f"clients: --tls --tls-fingerprint {fingerprint}")
        if args.secret is not None:
            generate_secret(args.secret, force=args.force)
            print(f"wrote a random secret to {args.secret} (mode 0600): "
                  f"give both sides --secret-file {args.secret}")  # fmt: skip
    except KeygenError as exc:
        print(f"reactor-mux keygen: error: {exc}", file=sys.stderr)
        return 1
    return 0
