"""reactor-mux: many TCP connections over one TCP channel, like ``ssh -N -L/-R``.

``reactor_mux.Client`` and ``reactor_mux.Server`` (and the rest of ``reactor_mux.api``)
are loaded on first use, so ``import reactor_mux`` stays cheap for the command line.
"""

import importlib
from typing import Any

__version__ = "0.1.0"

_API_NAMES = frozenset((
    "AsyncClient", "AsyncServer", "AuthenticationFailed", "Client", "ConfigurationError",
    "Forward", "ForwardFailed", "Server", "ServerUnreachable", "ServerUnusable",
    "TunnelError", "TunnelStopped",
))  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _API_NAMES:
        return getattr(importlib.import_module("reactor_mux.api"), name)
    raise AttributeError(f"module 'reactor_mux' has no attribute {name!r}")
