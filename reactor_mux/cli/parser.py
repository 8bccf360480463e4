"""The command line's grammar: ``build_parser`` (every subcommand and option,
with its help), ``parse_arguments`` (the command line laid over its
``--config`` file) and ``checked``, the checks argparse cannot make.

One parser serves the command line, the config file's keys (configfile.py
reads them off the role's parser), check-config and a reload, so they cannot
disagree about what an option is.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

from reactor_mux import __version__, codec
from reactor_mux.cli.converters import (
    SizeType,
    count_type,
    flagged,
    format_size,
    seconds,
    seconds_or_off,
    spec_type,
)
from reactor_mux.cli.security import (
    ClientSecurity,
    RunningServer,
    ServerSecurity,
    add_client_options,
    add_server_options,
    client_security,
    network_list,
    server_security,
)
from reactor_mux.io.proxy import ProxyError, ProxyUrl, parse_proxy, proxy_from_environment
from reactor_mux.protocol.limits import (
    DEFAULT_MAX_PENDING_SYNS,
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_WINDOW,
    DEFAULT_WINDOW,
    MAX_DATA_BODY,
    MAX_MAPPINGS,
    MAX_WINDOW,
    MIN_FRAME,
    MIN_WINDOW,
)
from reactor_mux.protocol.routehint import MAX_NODE
from reactor_mux.roles.backoff import DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN
from reactor_mux.roles.server import DEFAULT_MAX_CHANNELS
from reactor_mux.roles.specs import (
    DEFAULT_CHANNEL_PORT,
    ForwardKind,
    SpecError,
    WebSocketUrl,
    parse_dynamic,
    parse_endpoint,
    parse_forward,
    parse_server,
    parse_websocket_path,
)
from reactor_mux.security.keygen import DEFAULT_DAYS
from reactor_mux.service import configfile
from reactor_mux.service.configfile import ConfigError
from reactor_mux.service.workers import MAX_WORKERS, auto_workers
from reactor_mux.tools.demo import DEFAULT_SIZE_MIB
from reactor_mux.tunnel.settings import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_MAX_BUFFER,
    DEFAULT_RESUME_TIMEOUT,
    KEEPALIVE_TIMEOUT_FACTOR,
    MIN_MAX_BUFFER,
)
from reactor_mux.tunnel.udp import DEFAULT_UDP_TIMEOUT


def _usage_line(prog: str, message: str) -> str:
    """The one-line form of every usage error."""
    return f"{prog}: error: {message} (see {prog} --help)\n"


class UsageError(ValueError):
    """A command line that cannot be used, raised instead of printed (the Python API)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (or, with ``raise_errors``, a UsageError)."""

    roles: dict[str, argparse.ArgumentParser]
    """The server's and the client's parsers: what a config file's keys mean."""
    raise_errors = False

    def error(self, message: str) -> NoReturn:
        if self.raise_errors:
            raise UsageError(message)
        self.exit(2, _usage_line(self.prog, message))


def usage_error(command: str, message: str) -> int:
    """A usage error found after parsing (options that contradict each other)."""
    sys.stderr.write(_usage_line(f"reactor-mux {command}", message))
    return 2


def channel_endpoint(*, listening: bool) -> Callable[[str], tuple[str, int]]:
    """``--server`` and ``--listen``: ``HOST[:PORT]``, DEFAULT_CHANNEL_PORT by default."""
    return partial(parse_endpoint, listening=listening, default_port=DEFAULT_CHANNEL_PORT)


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options both roles share: the channel's settings and limits."""
    add = parser.add_argument
    add(
        "-o",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a config file's key (ssh's -o): -o keepalive-interval=15, -o persist=yes; "
        "over --config and a host's settings, under the options given themselves",
    )
    add(
        "--udp-timeout",
        type=_udp_timeout,
        default=DEFAULT_UDP_TIMEOUT,
        metavar="SECONDS",
        help="a UDP forward forgets a source (an association) that sent or got nothing "
        f"for this long, at both ends (default {DEFAULT_UDP_TIMEOUT:g})",
    )
    add(
        "--window",
        type=SizeType("window", MIN_WINDOW, MAX_WINDOW),
        default=DEFAULT_WINDOW,
        metavar="SIZE",
        help=f"per-stream flow-control window (default {format_size(DEFAULT_WINDOW)})",
    )
    add(
        "--max-window",
        type=SizeType("max window", MIN_WINDOW, MAX_WINDOW),
        default=DEFAULT_MAX_WINDOW,
        metavar="SIZE",
        help="how far a stream's window grows while its sender is blocked and the "
        "local socket keeps up; at or below --window: never grow "
        f"(default {format_size(DEFAULT_MAX_WINDOW)})",
    )
    add(
        "--max-frame",
        type=SizeType("max frame", MIN_FRAME, MAX_DATA_BODY),
        default=MAX_DATA_BODY,
        metavar="SIZE",
        help="largest data frame body accepted from the peer "
        f"(default {format_size(MAX_DATA_BODY)})",
    )
    add(
        "--connect-timeout",
        type=seconds,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help="give up connecting to a target after this long "
        f"(default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    add(
        "--handshake-timeout",
        type=seconds,
        default=DEFAULT_HANDSHAKE_TIMEOUT,
        metavar="SECONDS",
        help="close a channel whose HELLO exchange takes longer "
        f"(default {DEFAULT_HANDSHAKE_TIMEOUT:g})",
    )
    add(
        "--keepalive-interval",
        type=seconds,
        default=DEFAULT_KEEPALIVE_INTERVAL,
        metavar="SECONDS",
        help="send PING after this much silence from the peer "
        f"(default {DEFAULT_KEEPALIVE_INTERVAL:g})",
    )
    add(
        "--keepalive-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"declare a silent peer dead after this long "
        f"(default {KEEPALIVE_TIMEOUT_FACTOR} x --keepalive-interval)",
    )
    add(
        "--resume-timeout",
        type=seconds_or_off,
        default=DEFAULT_RESUME_TIMEOUT,
        metavar="SECONDS",
        help="when the channel breaks, keep its streams this long for the client to "
        "reconnect and resume them; 0 resets them at once "
        f"(default {DEFAULT_RESUME_TIMEOUT:g}; both sides must allow it)",
    )
    add(
        "--max-streams",
        type=count_type("max streams", 1, 1 << 20),
        default=DEFAULT_MAX_STREAMS,
        metavar="N",
        help=f"open streams per channel (default {DEFAULT_MAX_STREAMS})",
    )
    add(
        "--max-pending-syns",
        type=count_type("max pending SYNs", 1, 1 << 20),
        default=DEFAULT_MAX_PENDING_SYNS,
        metavar="N",
        help=f"peer-opened streams still connecting, per channel "
        f"(default {DEFAULT_MAX_PENDING_SYNS})",
    )
    add(
        "--max-buffer",
        type=SizeType("max buffer", MIN_MAX_BUFFER, 1 << 40),
        default=DEFAULT_MAX_BUFFER,
        metavar="SIZE",
        help="bytes a channel holds for its streams in each direction before it "
        f"pauses reading (default {format_size(DEFAULT_MAX_BUFFER)})",
    )
    add(
        "--drain-timeout",
        type=seconds,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, wait this long for open streams "
        f"(default {DEFAULT_DRAIN_TIMEOUT:g})",
    )
    add(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="append the log to PATH instead of stderr; SIGUSR1 reopens it (logrotate)",
    )
    add(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (the default) or json: one object a line with stable keys, for "
        "log collectors (docs/operations.md)",
    )
    add(
        "--control",
        type=Path,
        metavar="PATH",
        help="answer reactor-mux status, reload and forward on this Unix socket (mode 0600)",
    )
    add(
        "--metrics",
        metavar="HOST:PORT",
        type=spec_type(lambda t: parse_endpoint(t, listening=True)),
        help="serve Prometheus metrics at http://HOST:PORT/metrics",
    )
    add(
        "--config",
        type=Path,
        metavar="PATH",
        help="read options from this TOML file, one key per long option "
        "(command-line options override it; SIGHUP re-reads it)",
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log every stream")
    noise.add_argument("-q", "--quiet", action="store_true", help="log errors only")  # fmt: skip


def long_options(command: str) -> set[str]:
    """The long options ``command`` (``client``, ``server``, ...) takes: ``--persist``."""
    [commands] = [action for action in build_parser()._actions
                  if isinstance(action, argparse._SubParsersAction)]  # fmt: skip
    return {option for action in commands.choices[command]._actions
            for option in action.option_strings if option.startswith("--")}  # fmt: skip


def build_parser() -> _Parser:
    parser = _Parser(
        prog="reactor-mux",
        description="Carry many TCP connections over one TCP channel (ssh -L/-R without ssh).",
    )
    parser.add_argument(
        "--version", action="version", version=f"reactor-mux {__version__} (codec: {codec.BACKEND})"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    server = commands.add_parser(
        "server",
        help="accept channels (the demultiplexer)",
        description="Accept channels from reactor-mux clients.",
    )
    server.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        type=spec_type(channel_endpoint(listening=True)),
        help=f"address to accept channels on (repeatable; required here or in --config; "
        f"port {DEFAULT_CHANNEL_PORT} if none is given)",
    )
    server.add_argument(
        "--gateway-ports",
        action="store_true",
        help="let clients bind -R ports on non-loopback addresses",
    )
    server.add_argument(
        "--ws-path",
        metavar="/PATH",
        type=spec_type(parse_websocket_path),
        help="also accept channels as WebSocket upgrades at this path, on the same ports "
        "(behind an HTTP reverse proxy; other HTTP requests get 404)",
    )
    server.add_argument(
        "--workers",
        type=_workers,
        default=1,
        metavar="N|auto",
        help="serve with N single-threaded worker processes sharing the listening sockets "
        "('auto': one per core; default 1, a single process); sizing in docs/operations.md",
    )
    server.add_argument(
        "--node-id",
        type=count_type("node id", 0, MAX_NODE),
        metavar="N",
        help="this host's number among several behind one load balancer (unique, such as a "
        "StatefulSet ordinal): a client that resumes at another host is told to try again",
    )
    server.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        type=spec_type(partial(parse_endpoint, listening=False)),
        help="where clients reach this host directly: a client resumes there first after "
        "its channel breaks, then through the balancer (needs --node-id)",
    )
    server.add_argument(
        "--proxy-protocol-from",
        action="append",
        default=[],
        metavar="CIDR",
        type=network_list,
        help="connections from these addresses (a load balancer's) must start with a PROXY "
        "protocol header (v1 or v2), and the client address it names counts as theirs "
        "(repeatable, or comma-separated); no one else may send one",
    )
    server.add_argument(
        "--max-channels",
        type=count_type("max channels", 1, 1 << 20),
        default=DEFAULT_MAX_CHANNELS,
        metavar="N",
        help=f"clients served at once (default {DEFAULT_MAX_CHANNELS})",
    )
    server.add_argument(
        "--max-mappings",
        type=count_type("max mappings", 1, 1 << 16),
        default=MAX_MAPPINGS,
        metavar="N",
        help=f"-L and -R mappings per client (default {MAX_MAPPINGS})",
    )
    _add_common(server)
    add_server_options(server)

    client = commands.add_parser(
        "client",
        help="hold a channel and forward ports (the multiplexer)",
        description="Connect to a reactor-mux server and forward ports, with ssh's -L/-R syntax.",
    )
    client.add_argument(
        "destination",
        nargs="?",
        metavar="NAME",
        help=f"a host in {configfile.HOSTS_FILE} (in $XDG_CONFIG_HOME/reactor-mux/, "
        "~/.config by default: one table of client keys per host, as ssh's Host), or "
        "the server as HOST[:PORT]",
    )
    client.add_argument("-N", dest="no_command", action="store_true",
                        help="accepted for ssh's habit; there is no remote command")  # fmt: skip
    client.add_argument("-T", dest="no_tty", action="store_true",
                        help="accepted for ssh's habit; there is no terminal")  # fmt: skip
    client.add_argument(
        "-W",
        dest="stdio",
        metavar="HOST:PORT",
        type=spec_type(partial(parse_endpoint, listening=False)),
        help="forward standard input and output to HOST:PORT through the server (ssh's -W, "
        "for ProxyCommand); no -L/-R/-D then, errors only in the log unless -v, one "
        "connection attempt unless --connect-attempts, and the exit status 255 if the "
        "connection fails",
    )
    client.add_argument(
        "-f",
        dest="background",
        action="store_true",
        help="go to the background once every forward is up; exit non-zero instead if one "
        "fails (ssh's -f with ExitOnForwardFailure) or the server refuses this client",
    )
    client.add_argument(
        "--server",
        metavar="HOST[:PORT]",
        type=spec_type(parse_server),
        help="the server's channel address (required here, as the first argument, or in "
        f"--config; port {DEFAULT_CHANNEL_PORT} if none is given), or a WebSocket URL: "
        "ws://HOST[:PORT]/PATH, wss://... (TLS, verified as --tls verifies)",
    )
    client.add_argument(
        "-L",
        dest="local",
        action="append",
        default=[],
        metavar="[BIND:]PORT:HOST:HOSTPORT",
        type=spec_type(lambda t: parse_forward(ForwardKind.LOCAL, t)),
        help="listen here on BIND:PORT (or on the Unix socket /PATH: -L /PATH:HOST:HOSTPORT), "
        "connect from the server to HOST:HOSTPORT (either end may be a Unix socket /PATH); "
        "udp:[BIND:]PORT:HOST:HOSTPORT forwards UDP datagrams",
    )
    client.add_argument(
        "-R",
        dest="remote",
        action="append",
        default=[],
        metavar="[BIND:]PORT[:HOST:HOSTPORT]",
        type=spec_type(lambda t: parse_forward(ForwardKind.REMOTE, t)),
        help="listen on the server on BIND:PORT, connect from here to HOST:HOSTPORT (or to "
        "the Unix socket /PATH: -R [BIND:]PORT:/PATH); without HOST:HOSTPORT, serve SOCKS "
        "here for those connections; udp:[BIND:]PORT:HOST:HOSTPORT forwards UDP datagrams",
    )
    client.add_argument(
        "-D",
        dest="dynamic",
        action="append",
        default=[],
        metavar="[BIND:]PORT",
        type=spec_type(parse_dynamic),
        help="a SOCKS4/4a/5 server here on BIND:PORT; the server connects to each "
        "target a SOCKS client names (and resolves its name)",
    )
    client.add_argument(
        "--exit-on-forward-failure",
        action="store_true",
        help="exit with status 1 if any -L, -R or -D cannot be set up (ssh's "
        "ExitOnForwardFailure); otherwise a refused -R is retried with the reconnect backoff",
    )
    client.add_argument(
        "--proxy",
        type=_proxy,
        metavar="URL",
        help="reach the server through a proxy: http://[USER:PASSWORD@]HOST:PORT (HTTP "
        "CONNECT) or socks5://[USER:PASSWORD@]HOST:PORT (the proxy resolves the server's "
        "name); 'env' takes https_proxy (http_proxy for ws://), all_proxy and no_proxy from "
        "the environment.  The credentials are never logged; in the environment or a config "
        "file they stay out of the process list",
    )
    client.add_argument(
        "--persist",
        action="store_true",
        help="keep retrying, with the reconnect backoff, a server that refuses this client "
        "as configured (authentication, certificate or pin, TLS against plaintext, not a "
        "reactor-mux server); without it the client exits with status 255 at once, as ssh "
        "does.  Services set it.  Network failures are retried either way",
    )
    client.add_argument(
        "--connect-attempts",
        type=count_type("connect attempts", 1, 1_000_000),
        metavar="N",
        help="give up (status 255) after N connection attempts in a row without a channel "
        "coming up (ssh's ConnectionAttempts; default: no limit)",
    )
    client.add_argument(
        "--reconnect-min",
        type=seconds,
        default=DEFAULT_RECONNECT_MIN,
        metavar="SECONDS",
        help=f"first reconnect delay (default {DEFAULT_RECONNECT_MIN:g})",
    )
    client.add_argument(
        "--reconnect-max",
        type=seconds,
        default=DEFAULT_RECONNECT_MAX,
        metavar="SECONDS",
        help=f"longest reconnect delay (default {DEFAULT_RECONNECT_MAX:g})",
    )
    _add_common(client)
    add_client_options(client)

    keygen = commands.add_parser(
        "keygen",
        help="write a self-signed TLS certificate and key, or a random secret",
        description="Write a self-signed certificate and key for a server (and print the "
        "fingerprint its clients pin), and/or a random shared secret.",
    )
    keygen.add_argument("--cert", type=Path, metavar="PATH", help="certificate to write (PEM)")
    keygen.add_argument("--key", type=Path, metavar="PATH", help="key to write (PEM, mode 0600)")
    keygen.add_argument("--name", action="append", default=[], metavar="HOST",
                        help="a host name or address it is for (repeatable)")  # fmt: skip
    keygen.add_argument("--days", type=count_type("days", 1, 36500), default=DEFAULT_DAYS,
                        metavar="N", help=f"validity (default {DEFAULT_DAYS})")  # fmt: skip
    keygen.add_argument("--secret", type=Path, metavar="PATH",
                        help="also write a random 32-byte secret (mode 0600)")  # fmt: skip
    keygen.add_argument("--force", action="store_true", help="replace existing files")

    _add_control_commands(commands)
    check = commands.add_parser(
        "check-config",
        help="validate a config file and print the effective settings",
        description="Validate a server's or client's config file (and the files it names), "
        "then print every setting it would run with, as a config file.  Exits 1 if the "
        "file cannot be used.",
    )
    check.add_argument("path", type=Path, metavar="PATH", help="the config file")
    parser.roles = {"server": server, "client": client}

    demo = commands.add_parser(
        "demo",
        help="run a target, server and client on loopback and push data through -L and -R",
        description="Self-contained demonstration on 127.0.0.1.",
    )
    demo.add_argument("--size", type=count_type("size", 1, 4096), default=DEFAULT_SIZE_MIB,
                      metavar="MIB", help="MiB to push each way per mapping "
                      f"(default {DEFAULT_SIZE_MIB})")  # fmt: skip
    return parser


def _add_control_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """``status``, ``reload`` and ``forward``: requests to a running process's --control."""
    status = commands.add_parser(
        "status",
        help="show the channels, forwards and streams of a running process",
        description="Every channel, mapping and open stream of a running server or client, "
        "with peers, ages, bytes each way, window in flight and buffered bytes.",
    )
    status.add_argument("--json", action="store_true", help="print the JSON the process sent")
    reload = commands.add_parser(
        "reload",
        help="make a running process re-read its --config (as SIGHUP does)",
        description="Re-read the config file of a running server or client, as SIGHUP does, "
        "and say what happened.  Exits 1 if the file could not be used.",
    )
    forward = commands.add_parser(
        "forward",
        help="add or cancel a forward on a running client (ssh -O forward / -O cancel)",
        description="Add a forward to a running client, or cancel one: "
        "reactor-mux forward add -L 8080:db:5432 --control PATH.",
    )
    forward.add_argument("action", choices=("add", "cancel"))
    which = forward.add_mutually_exclusive_group(required=True)
    for flag, what in (("-L", "[BIND:]PORT:HOST:HOSTPORT"), ("-R", "[BIND:]PORT[:HOST:HOSTPORT]"),
                       ("-D", "[BIND:]PORT")):  # fmt: skip
        which.add_argument(flag, dest="forward", metavar=what, type=partial(flagged, flag),
                           help=f"the {flag} forward, as on the client's command line")  # fmt: skip
    for command in (status, reload, forward):
        command.add_argument("--control", type=Path, metavar="PATH",
                             help="the running server's or client's --control socket (by "
                             "default: every process of yours that was started without "
                             "one; status lists them all, reload and forward need there to "
                             "be just one)")  # fmt: skip


def join_forward_values(argv: Sequence[str]) -> list[str]:
    """``-L -1:h:2`` would read as an option named ``-1:h:2``; passed as ``-L-1:h:2``
    it reaches the spec parser, which says what is wrong with it."""
    joined: list[str] = []
    values = iter(argv)
    for word in values:
        if word in _FORWARD_FLAGS:
            value = next(values, None)
            if value is not None and value.startswith("-") and value[1:2].isdigit():
                joined.append(word + value)
                continue
            joined.append(word)
            if value is not None:
                joined.append(value)
            continue
        joined.append(word)
    return joined


_FORWARD_FLAGS = ("-L", "-R", "-D")
_FORWARD_DESTS = ("local", "remote", "dynamic")


def parse_arguments(argv: Sequence[str], *, raise_errors: bool = False) -> argparse.Namespace:
    """The command line laid over its settings from elsewhere, lowest first: the
    ``--config`` file, the client's host (``reactor-mux client NAME``) and ``-o``
    options; each option given replaces what the layers below say.  Raises
    ConfigError for a file or ``-o`` that cannot be used; the namespace's
    ``config_clients`` are the config file's clients."""
    parser = build_parser()
    if raise_errors:
        for one in (parser, *parser.roles.values()):
            one.raise_errors = True  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    args.config_clients = None
    role = parser.roles.get(args.command)
    if role is None:
        return args
    if args.command == "client":
        return _split_websocket(_layered(parser, role, args, argv))
    return _layered(parser, role, args, argv)


def _layered(
    parser: argparse.ArgumentParser,
    role: argparse.ArgumentParser,
    args: argparse.Namespace,
    argv: Sequence[str] | None,
) -> argparse.Namespace:
    """``args`` over the layers below the command line: --config, a host's table, -o."""
    layers: list[dict[str, Any]] = []
    if args.config is not None:
        config = configfile.load(args.config, role, server=args.command == "server")
        layers.append(config.values)
        args.config_clients = config.clients
    if getattr(args, "destination", None) is not None:
        layers.append(_destination(args, role))
    if args.overrides:
        layers.append(configfile.load_overrides(args.overrides, role))
    if not layers:
        return args
    for layer in layers:
        role.set_defaults(**{dest: v for dest, v in layer.items() if not isinstance(v, list)})
    merged = parser.parse_args(argv)
    # -L, -R and -D replace those of the layers below as one list; -W clears them
    # (ssh's ClearAllForwardings), so a host's table serves as a ProxyCommand too.
    forwards_given = any(getattr(args, dest, None) for dest in _FORWARD_DESTS)
    merged.forwards_from_command_line = forwards_given
    forwards_given = forwards_given or getattr(args, "stdio", None) is not None
    for layer in reversed(layers):
        forwards_here = any(dest in layer for dest in _FORWARD_DESTS)
        for dest, value in layer.items():
            if dest in _FORWARD_DESTS and forwards_given:
                continue
            if isinstance(value, list) and not getattr(merged, dest):
                setattr(merged, dest, value)
        forwards_given = forwards_given or forwards_here
    if merged.verbose and merged.quiet:  # one in a layer, the other on the command line
        merged.verbose, merged.quiet = args.verbose, args.quiet
    if args.config is not None:
        merged.config = args.config.absolute()
    merged.config_clients = args.config_clients
    return merged


def _split_websocket(args: argparse.Namespace) -> argparse.Namespace:
    """``--server ws[s]://HOST[:PORT]/PATH``: the server's address as any other, and
    the WebSocket apart (``websocket``); ``wss`` is ``--tls``.  ``--proxy env``:
    the proxy the environment names for that server, or none."""
    args.websocket = None
    if isinstance(args.server, WebSocketUrl):
        args.websocket, args.server = args.server, args.server.address
        args.tls = args.tls or args.websocket.secure
    if args.proxy == PROXY_FROM_ENVIRONMENT and args.server is not None:
        plain_ws = args.websocket is not None and not args.websocket.secure
        try:
            args.proxy = proxy_from_environment(dict(os.environ), args.server[0], plain_ws)
        except ProxyError as exc:
            raise ConfigError(f"--proxy env: {exc}") from None
    return args


def _udp_timeout(text: str) -> float:
    """At least a second: the sweep that forgets associations runs at half of it."""
    value = seconds(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the UDP timeout is at least 1 second")
    return value


PROXY_FROM_ENVIRONMENT = "env"
"""``--proxy env``: take the proxy from https_proxy, http_proxy, all_proxy, no_proxy."""


def _workers(text: str) -> int:
    """``--workers``: a count, or ``auto`` (one per core)."""
    if text == "auto":
        return auto_workers()
    return count_type("workers", 1, MAX_WORKERS)(text)


def _proxy(text: str) -> ProxyUrl | str:
    if text == PROXY_FROM_ENVIRONMENT:
        return text
    try:
        return parse_proxy(text)
    except ProxyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _destination(args: argparse.Namespace, role: argparse.ArgumentParser) -> dict[str, Any]:
    """The client's first argument: a host of the hosts file (its table's settings), or
    the server itself as ``HOST[:PORT]`` (as ssh takes a host it has no entry for)."""
    name = args.destination
    path = configfile.hosts_file()
    host = configfile.load_host(path, role, name)
    if host is not None:
        if "server" not in host:  # the table only adds settings: the name is the server
            host["server"] = _server_named(name, f"{path}: [{name}] has no server key, and")
        return host
    if args.server is not None:
        raise ConfigError(f"{name!r} is not a host in {path}, and --server names the server")
    close = difflib.get_close_matches(name, configfile.host_names(path), n=1)
    hint = f"{name!r} is not a host in {path} (did you mean {close[0]!r}?)" if close else None
    return {"server": _server_named(name, f"{name!r} is not a host in {path}, and it"),
            "destination_hint": hint}  # fmt: skip


def _server_named(text: str, context: str) -> tuple[str, int] | WebSocketUrl:
    try:
        return parse_server(text)
    except SpecError as exc:
        raise ConfigError(f"{context} is not a server address: {exc}") from None


def checked(
    args: argparse.Namespace, running: RunningServer | None = None
) -> ServerSecurity | ClientSecurity:
    """Options that contradict each other, and the security files: what a role needs
    before it may start (or a reload may apply, to the server ``running``)."""
    problem = _contradiction(args)
    if problem is not None:
        raise ConfigError(problem)
    if args.command == "server":
        return server_security(args, running)
    return client_security(args)


def _contradiction(args: argparse.Namespace) -> str | None:
    """A usage error argparse cannot see (options that contradict each other)."""
    interval = args.keepalive_interval
    if args.keepalive_timeout is not None and args.keepalive_timeout <= interval:
        return "--keepalive-timeout must be longer than --keepalive-interval"
    if args.command == "server" and not args.listen:
        return "give --listen (or listen in --config)"
    if args.command == "server" and args.advertise is not None and args.node_id is None:
        return ("--advertise needs --node-id (this host's number among those that share "
                "clients)")  # fmt: skip
    if args.command == "client":
        if args.server is None:
            return "give --server (or server in --config)"
        forwards = args.local or args.remote or args.dynamic
        if args.stdio is not None and (forwards or args.background):
            return "-W takes the whole client: no -L, -R, -D or -f beside it"
        if not forwards and args.stdio is None:
            typo = getattr(args, "destination_hint", None)  # a host name one letter off
            return typo or "nothing to forward: give at least one -L, -R or -D (or -W)"
        if args.reconnect_min > args.reconnect_max:
            return "--reconnect-min is larger than --reconnect-max"
    return None


def log_level(verbose: bool, quiet: bool) -> int:
    """The log level ``-v`` and ``-q`` select."""
    return logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
