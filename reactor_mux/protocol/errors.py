"""The two error classes of the protocol core.

``ProtocolError`` means the *peer* broke the protocol; the session turns it
into a channel failure in exactly one place (``Session.receive_into``).
``LocalProtocolError`` means *our* caller misused the core: a bug, never
caused by network input.
"""

from reactor_mux.protocol.errorcodes import ErrorCode


class ProtocolError(Exception):
    """The remote side sent something the protocol does not allow."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.PROTOCOL) -> None:
        super().__init__(message)
        self.code = code
        """``TLS`` when the peer speaks TLS where a HELLO belongs; else ``PROTOCOL``."""


class LocalProtocolError(Exception):
    """The local application asked the core for something illegal (a bug)."""
