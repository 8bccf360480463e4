"""The ``reactor-mux`` command line: ``server``, ``client`` and ``demo``.

Argument errors are reported as one line on stderr with exit status 2;
startup failures (a port in use) as one line with status 1.  The first
SIGINT or SIGTERM drains (stop accepting, let open streams finish for up to
``--drain-timeout``) and exits 0; a second one stops at once.  No path prints
a traceback for bad input.

``main`` hands the parsed command line to its subcommand.  The rest is split
by job: the option types (``converters``), the parser and the checks after it
(``parser``), the security options (``security``), the subcommands
(``commands``) and what a reload applies (``reload``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from reactor_mux.cli.commands import _check_config, _control_command, _keygen, _run_role
from reactor_mux.cli.converters import SizeType, count_type, format_size, seconds
from reactor_mux.cli.parser import (
    _checked,
    _join_forward_values,
    _usage_error,
    build_parser,
    parse_arguments,
)
from reactor_mux.configfile import ConfigError
from reactor_mux.demo import run_demo

__all__ = [
    "SizeType",
    "_checked",
    "build_parser",
    "count_type",
    "format_size",
    "main",
    "parse_arguments",
    "seconds",
]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the reactor took over the signal
        return 130
    except BrokenPipeError:  # `reactor-mux status ... | head -1`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 141  # 128 + SIGPIPE: what a shell reports for a writer the pipe ended


def _main(argv: Sequence[str] | None) -> int:
    argv = _join_forward_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_arguments(argv)
    except ConfigError as exc:
        command = next((word for word in argv if word in ("server", "client")), "")
        return _usage_error(command, str(exc))
    if args.command == "demo":
        return run_demo(args.size)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "check-config":
        return _check_config(args.path)
    if args.command in ("status", "reload", "forward"):
        return _control_command(args)
    return _run_role(argv, args)
