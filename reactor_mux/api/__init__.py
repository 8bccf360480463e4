"""reactor-mux from Python: a client or a server in a thread of its own, started with
the command line's settings (docs/api.md)."""

from reactor_mux.api.errors import (
    AuthenticationFailed,
    ConfigurationError,
    ForwardFailed,
    ServerUnreachable,
    ServerUnusable,
    TunnelError,
    TunnelStopped,
)
from reactor_mux.api.tunnel import AsyncClient, AsyncServer, Client, Forward, Server

__all__ = [
    "AsyncClient",
    "AsyncServer",
    "AuthenticationFailed",
    "Client",
    "ConfigurationError",
    "Forward",
    "ForwardFailed",
    "Server",
    "ServerUnreachable",
    "ServerUnusable",
    "TunnelError",
    "TunnelStopped",
]
