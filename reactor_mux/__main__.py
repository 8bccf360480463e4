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

import sys  # noqa: E402 - after the line above, on purpose


def main() -> int:
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
