"""reactor-mux: many TCP connections over one TCP channel, like ``ssh -N -L/-R``.

``reactor_mux.Client`` and ``reactor_mux.Server`` (and the rest of ``reactor_mux.api``)
are loaded on first use.  This module imports nothing itself: ``python -m
reactor_mux`` runs it before the line of __main__.py that takes Ctrl-C over, so
every module loaded here would widen the moment where Ctrl-C prints a traceback.
"""

__version__ = "0.1.0"

TYPE_CHECKING = False  # typing's own would import typing (see above); type checkers know it
if TYPE_CHECKING:
    from reactor_mux.api import (
        AsyncClient,
        AsyncServer,
        AuthenticationFailed,
        Client,
        ConfigurationError,
        Forward,
        ForwardFailed,
        Server,
        ServerUnreachable,
        ServerUnusable,
        TunnelError,
        TunnelStopped,
    )

__all__ = [
    "AsyncClient", "AsyncServer", "AuthenticationFailed", "Client", "ConfigurationError",
    "Forward", "ForwardFailed", "Server", "ServerUnreachable", "ServerUnusable",
    "TunnelError", "TunnelStopped", "__version__",
]  # fmt: skip
_API_NAMES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> object:
    if name in _API_NAMES:
        import importlib

        return getattr(importlib.import_module("reactor_mux.api"), name)
    raise AttributeError(f"module 'reactor_mux' has no attribute {name!r}")
