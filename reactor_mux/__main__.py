"""Entry point of ``reactor-mux`` and ``python -m reactor_mux``.

Kept apart from the cli package so that a codec that cannot be loaded as
requested (``REACTOR_MUX_CODEC=c`` without a compiled build, or an unknown
policy) is reported as one line with exit status 2 rather than an import
traceback.
"""

from __future__ import annotations

import signal

# Until the reactor takes Ctrl-C over, it ends the process quietly (the default
# action) instead of raising KeyboardInterrupt wherever start-up happens to be.
signal.signal(signal.SIGINT, signal.SIG_DFL)

import os  # noqa: E402 - after the line above, on purpose
import sys  # noqa: E402


def _sanitise_standard_descriptors() -> None:
    """Started with standard input, output or error closed (``<&-``), the first file
    this process opens would take that number, and ``-W`` or a print would use it as
    if it were standard input or output: /dev/null takes each missing one (as ssh does)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def main() -> int:
    _sanitise_standard_descriptors()
    try:
        from reactor_mux.cli import main as cli_main
    except KeyboardInterrupt:  # Ctrl-C while the modules load
        return 130
    except ImportError as exc:
        if "REACTOR_MUX_CODEC" not in str(exc):
            raise
        print(f"reactor-mux: error: {exc}", file=sys.stderr)
        return 2
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
