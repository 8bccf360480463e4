"""The Python API's exceptions: what went wrong, as a class to catch, and the one
line the log would have said as the message."""

from __future__ import annotations


class TunnelError(Exception):
    """Every error the API raises."""


class ConfigurationError(TunnelError):
    """The settings cannot be used (as the command line would refuse them, status 2)."""


class AuthenticationFailed(TunnelError):
    """The server refused this client's secret or name, or the client refused the
    server (its certificate or pin, its proof of the secret), or revoked it."""


class ServerUnusable(TunnelError):
    """The server is not a reactor-mux server, speaks TLS where the client does not (or
    the reverse), or refused the handshake."""


class ServerUnreachable(TunnelError):
    """No channel came up: the connection attempts ran out, or ``start_timeout`` passed."""


class ForwardFailed(TunnelError):
    """A forward could not be set up: its local port could not be bound, or the server
    refused it (``--allow-connect``, ``--allow-bind``, a port in use)."""


class TunnelStopped(TunnelError):
    """The tunnel is not running (stopped, or it gave up on its server)."""
