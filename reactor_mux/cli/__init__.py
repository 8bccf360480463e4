"""The ``reactor-mux`` command line: the roles (``server``, ``client``), ``demo``,
``keygen``, ``check-config``, and the control commands (``status``, ``reload``,
``forward``).

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

from reactor_mux.cli.commands import check_config, control_command, keygen, run_role
from reactor_mux.cli.converters import SizeType, count_type, format_size, seconds
from reactor_mux.cli.parser import (
    build_parser,
    checked,
    join_forward_values,
    parse_arguments,
    usage_error,
)
from reactor_mux.service.configfile import ConfigError
from reactor_mux.tools.demo import run_demo

__all__ = [
    "SizeType",
    "build_parser",
    "checked",
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
    argv = join_forward_values(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_arguments(argv)
    except ConfigError as exc:
        command = next((word for word in argv if word in ("server", "client")), "")
        return usage_error(command, str(exc))
    if args.command == "demo":
        return run_demo(args.size)
    if args.command == "keygen":
        return keygen(args)
    if args.command == "check-config":
        return check_config(args.path)
    if args.command in ("status", "reload", "forward"):
        return control_command(args)
    return run_role(argv, args)
