"""The ``reactor-mux`` command line: ``server``, ``client`` and ``demo``.

Argument errors are reported as one line on stderr with exit status 2;
startup failures (a port in use) as one line with status 1; SIGINT and
SIGTERM stop the process cleanly with status 0.  No path prints a
traceback for bad input.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn, TypeVar

from reactor_mux import __version__, codec
from reactor_mux.backoff import DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN
from reactor_mux.client import Client, ClientConfig, StartupError
from reactor_mux.connector import DEFAULT_CONNECT_TIMEOUT
from reactor_mux.netutil import describe_error
from reactor_mux.protocol.limits import DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW
from reactor_mux.reactor import Reactor
from reactor_mux.resolver import Resolver
from reactor_mux.server import Server, ServerConfig
from reactor_mux.specs import SpecError, parse_endpoint, parse_forward

log = logging.getLogger("reactor_mux")
T = TypeVar("T")

_SIZE = re.compile(r"([0-9]+)([kKmM]?)(i?[bB])?")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 262144, 256K or 1M")
    value = int(match.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    if not MIN_WINDOW <= value <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(
            f"window {value} is outside {MIN_WINDOW}..{MAX_WINDOW} bytes"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} must be within (0, 86400] seconds")
    return value


def _spec_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """Turn a SpecError into argparse's one-line usage error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except SpecError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--window",
        type=_size,
        default=DEFAULT_WINDOW,
        metavar="SIZE",
        help="per-stream flow-control window (default 256K)",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=DEFAULT_CONNECT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up connecting to a target after this long "
        f"(default {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-v", "--verbose", action="store_true", help="log every stream")
    noise.add_argument("-q", "--quiet", action="store_true", help="log errors only")


def build_parser() -> argparse.ArgumentParser:
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
        required=True,
        metavar="HOST:PORT",
        type=_spec_type(lambda t: parse_endpoint(t, listening=True)),
        help="address to accept channels on (repeatable)",
    )
    server.add_argument(
        "--gateway-ports",
        action="store_true",
        help="let clients bind -R ports on non-loopback addresses",
    )
    _add_common(server)

    client = commands.add_parser(
        "client",
        help="hold a channel and forward ports (the multiplexer)",
        description="Connect to a reactor-mux server and forward ports, with ssh's -L/-R syntax.",
    )
    client.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT",
        type=_spec_type(lambda t: parse_endpoint(t, listening=False)),
        help="the server's channel address",
    )
    client.add_argument(
        "-L",
        dest="local",
        action="append",
        default=[],
        metavar="[BIND:]PORT:HOST:HOSTPORT",
        type=_spec_type(lambda t: parse_forward("L", t)),
        help="listen here on BIND:PORT, connect from the server to HOST:HOSTPORT",
    )
    client.add_argument(
        "-R",
        dest="remote",
        action="append",
        default=[],
        metavar="[BIND:]PORT:HOST:HOSTPORT",
        type=_spec_type(lambda t: parse_forward("R", t)),
        help="listen on the server on BIND:PORT, connect from here to HOST:HOSTPORT",
    )
    client.add_argument(
        "--reconnect-min",
        type=_seconds,
        default=DEFAULT_RECONNECT_MIN,
        metavar="SECONDS",
        help="first reconnect delay (default 0.5)",
    )
    client.add_argument(
        "--reconnect-max",
        type=_seconds,
        default=DEFAULT_RECONNECT_MAX,
        metavar="SECONDS",
        help="longest reconnect delay (default 30)",
    )
    _add_common(client)

    demo = commands.add_parser(
        "demo",
        help="run a target, server and client on loopback and push data through -L and -R",
        description="Self-contained demonstration on 127.0.0.1.",
    )
    demo.add_argument(
        "--size",
        type=int,
        default=64,
        metavar="MIB",
        help="MiB to push each way per mapping (default 64)",
    )
    return parser


def _setup_logging(role: str, verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s reactor-mux {role}: %(levelname)s %(message)s")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _run(role: str, build: Callable[[Reactor, Resolver], Server | Client]) -> int:
    """Run a server or client until SIGINT/SIGTERM."""
    reactor = Reactor()
    resolver = Resolver(reactor)

    def stop(signame: str) -> None:
        log.info("%s: shutting down", signame)
        reactor.stop()

    # Before start(): a signal that arrives once ports are open must stop us cleanly.
    reactor.add_signal_handler(signal.SIGINT, lambda: stop("SIGINT"))
    reactor.add_signal_handler(signal.SIGTERM, lambda: stop("SIGTERM"))
    app = build(reactor, resolver)
    try:
        app.start()
    except (OSError, StartupError) as exc:
        reason = describe_error(exc) if isinstance(exc, OSError) else str(exc)
        log.error("cannot start %s: %s", role, reason)
        app.close()
        resolver.close()
        reactor.close()
        return 1
    try:
        reactor.run()
    finally:
        app.close()
        resolver.close()
        reactor.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the reactor took over the signal
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from reactor_mux.demo import run_demo

        return run_demo(args.size)

    _setup_logging(args.command, args.verbose, args.quiet)
    if args.command == "server":
        config = ServerConfig(
            listen=args.listen,
            window=args.window,
            connect_timeout=args.connect_timeout,
            gateway_ports=args.gateway_ports,
        )
        return _run("server", lambda reactor, resolver: Server(reactor, resolver, config))

    forwards = args.local + args.remote
    if not forwards:
        print(
            "reactor-mux client: error: nothing to forward: give at least one -L or -R "
            "(see reactor-mux client --help)",
            file=sys.stderr,
        )
        return 2
    if args.reconnect_min > args.reconnect_max:
        print(
            "reactor-mux client: error: --reconnect-min is larger than --reconnect-max",
            file=sys.stderr,
        )
        return 2
    client_config = ClientConfig(
        server=args.server,
        forwards=forwards,
        window=args.window,
        connect_timeout=args.connect_timeout,
        reconnect_min=args.reconnect_min,
        reconnect_max=args.reconnect_max,
    )
    return _run("client", lambda reactor, resolver: Client(reactor, resolver, client_config))
