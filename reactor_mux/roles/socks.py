"""The SOCKS server side of ``-D``, without sockets: bytes in, replies out.

ssh's ``-D`` speaks SOCKS5 (RFC 1928, CONNECT only, the no-authentication
method), SOCKS4 and SOCKS4a; so does this.  ``SocksHandshake.receive`` takes
whatever bytes have arrived and says what to send back and, once the request
is complete, which target it names.  The target is resolved by the server
(SOCKS5 domain names and SOCKS4a host names travel as names), which is what
``curl --socks5-hostname`` expects.  Bytes after the request (a client that
sends before the reply, "optimistic data") are kept in ``early_data``.

The reply to the request comes later, when the server has answered the SYN:
``success_reply`` or ``failure_reply`` with the code for the failure class
the server named (docs/protocol.md §5.1).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from reactor_mux.protocol.commands import parse_host_port
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.failures import FailureClass
from reactor_mux.protocol.syntax import format_host_port

MAX_HANDSHAKE_BYTES = 1024
"""A greeting plus a request is at most 257 + 262 bytes (SOCKS5) or 9 + 255 + 256 +
1 (SOCKS4a): anything longer that still has not completed is malformed."""

SOCKS5 = 5
SOCKS4 = 4
NO_AUTHENTICATION = 0x00
NO_ACCEPTABLE_METHOD = 0xFF
CMD_CONNECT = 0x01
ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04


class Socks5Reply(enum.IntEnum):
    """RFC 1928 §6 reply codes."""

    SUCCEEDED = 0
    GENERAL_FAILURE = 1
    NOT_ALLOWED = 2
    NETWORK_UNREACHABLE = 3
    HOST_UNREACHABLE = 4
    CONNECTION_REFUSED = 5
    TTL_EXPIRED = 6
    COMMAND_NOT_SUPPORTED = 7
    ADDRESS_TYPE_NOT_SUPPORTED = 8


SOCKS4_GRANTED = 90
SOCKS4_REJECTED = 91

_SOCKS5_CODE = {
    FailureClass.REFUSED: Socks5Reply.CONNECTION_REFUSED,
    FailureClass.UNREACHABLE: Socks5Reply.HOST_UNREACHABLE,
    FailureClass.UNRESOLVED: Socks5Reply.HOST_UNREACHABLE,
    FailureClass.NETWORK: Socks5Reply.NETWORK_UNREACHABLE,
    FailureClass.TIMEOUT: Socks5Reply.TTL_EXPIRED,
    FailureClass.FORBIDDEN: Socks5Reply.NOT_ALLOWED,
    FailureClass.LIMIT: Socks5Reply.GENERAL_FAILURE,
    FailureClass.UNAVAILABLE: Socks5Reply.GENERAL_FAILURE,
    FailureClass.SHUTDOWN: Socks5Reply.GENERAL_FAILURE,
    FailureClass.FAILED: Socks5Reply.GENERAL_FAILURE,
}


class SocksError(Exception):
    """A malformed or unsupported request; ``reply`` (maybe empty) goes to the client
    before the connection is closed."""

    def __init__(self, reason: str, reply: bytes = b"") -> None:
        super().__init__(reason)
        self.reply = reply


@dataclass(frozen=True)
class SocksRequest:
    version: int
    host: str
    port: int


def socks5_reply(code: int) -> bytes:
    """A reply with an unspecified bound address (0.0.0.0:0): the real one is on the server."""
    return bytes((SOCKS5, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0))


def socks4_reply(code: int) -> bytes:
    return bytes((0, code, 0, 0, 0, 0, 0, 0))


def success_reply(version: int) -> bytes:
    if version == SOCKS5:
        return socks5_reply(Socks5Reply.SUCCEEDED)
    return socks4_reply(SOCKS4_GRANTED)


def failure_reply(version: int, failure: FailureClass) -> bytes:
    if version == SOCKS5:
        return socks5_reply(_SOCKS5_CODE[failure])
    return socks4_reply(SOCKS4_REJECTED)


class SocksHandshake:
    """One client's SOCKS negotiation, fed the bytes as they arrive."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._greeted = False
        self._reply = b""
        self.request: SocksRequest | None = None
        self.early_data = b""

    def receive(self, data: bytes) -> bytes:
        """Take newly arrived bytes; return what to send back now (maybe nothing).

        Sets ``request`` once the request is complete; raises ``SocksError`` on
        a malformed or unsupported one."""
        if self.request is not None:
            raise SocksError("data before the reply")
        self._buffer += data
        version = self._buffer[0]
        if version == SOCKS4 and not self._greeted:
            self._socks4()
            self._check_length()
            return b""
        if version != SOCKS5 and not self._greeted:
            raise SocksError(f"not a SOCKS request (first byte 0x{version:02x})")
        self._reply = b""
        try:
            self._socks5()
        except SocksError as exc:
            # The method selection of this same read goes out first.
            raise SocksError(str(exc), self._reply + exc.reply) from None
        self._check_length()
        return self._reply

    def _check_length(self) -> None:
        """Bytes after a complete request are the stream's (``early_data``); only an
        unfinished request is held to the limit."""
        if self.request is None and len(self._buffer) > MAX_HANDSHAKE_BYTES:
            raise SocksError(f"handshake longer than {MAX_HANDSHAKE_BYTES} bytes")

    def _finish(self, request: SocksRequest, used: int) -> None:
        self.request = request
        self.early_data = bytes(self._buffer[used:])
        self._buffer.clear()

    def _socks5(self) -> None:
        buffer = self._buffer
        if not self._greeted:
            if len(buffer) < 2 or len(buffer) < 2 + buffer[1]:
                return
            methods = buffer[2 : 2 + buffer[1]]
            del buffer[: 2 + len(methods)]
            if NO_AUTHENTICATION not in methods:
                raise SocksError(
                    "SOCKS5 client offers no method without authentication",
                    bytes((SOCKS5, NO_ACCEPTABLE_METHOD)),
                )
            self._greeted = True
            self._reply = bytes((SOCKS5, NO_AUTHENTICATION))
        if len(buffer) < 5:
            return
        version, command, _reserved, address_type = buffer[:4]
        if version != SOCKS5:
            raise SocksError(f"SOCKS5 request with version {version}",
                             socks5_reply(Socks5Reply.GENERAL_FAILURE))  # fmt: skip
        if address_type == ATYP_IPV4:
            size, start = 4, 4
        elif address_type == ATYP_IPV6:
            size, start = 16, 4
        elif address_type == ATYP_DOMAIN:
            size, start = buffer[4], 5
        else:
            raise SocksError(f"SOCKS5 address type {address_type} is not supported",
                             socks5_reply(Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED))  # fmt: skip
        end = start + size + 2
        if len(buffer) < end:
            return
        if command != CMD_CONNECT:
            raise SocksError(f"SOCKS5 command {command} is not supported (only CONNECT)",
                             socks5_reply(Socks5Reply.COMMAND_NOT_SUPPORTED))  # fmt: skip
        raw = bytes(buffer[start : start + size])
        failure = socks5_reply(Socks5Reply.GENERAL_FAILURE)
        if address_type == ATYP_DOMAIN:
            host = _domain(raw, failure)
        else:
            host = str(ipaddress.ip_address(raw))
        port = int.from_bytes(buffer[end - 2 : end], "big")
        self._check_port(port, socks5_reply(Socks5Reply.GENERAL_FAILURE))
        self._finish(SocksRequest(SOCKS5, host, port), end)

    def _socks4(self) -> None:
        buffer = self._buffer
        if len(buffer) < 9:
            return
        rejected = socks4_reply(SOCKS4_REJECTED)
        command = buffer[1]
        user_end = buffer.find(0, 8)
        if user_end < 0:
            if len(buffer) > 8 + 256:
                raise SocksError("SOCKS4 user id longer than 255 bytes", rejected)
            return
        address = bytes(buffer[4:8])
        used = user_end + 1
        if address[:3] == b"\0\0\0" and address[3] != 0:  # SOCKS4a: a name follows
            name_end = buffer.find(0, used)
            if name_end < 0:
                if len(buffer) > used + 256:
                    raise SocksError("SOCKS4a host name longer than 255 bytes", rejected)
                return
            host = _domain(bytes(buffer[used:name_end]), rejected)
            used = name_end + 1
        else:
            host = str(ipaddress.IPv4Address(address))
        if command != CMD_CONNECT:
            raise SocksError(f"SOCKS4 command {command} is not supported (only CONNECT)", rejected)
        port = int.from_bytes(buffer[2:4], "big")
        self._check_port(port, rejected)
        self._finish(SocksRequest(SOCKS4, host, port), used)

    @staticmethod
    def _check_port(port: int, reply: bytes) -> None:
        if port == 0:
            raise SocksError("request for port 0", reply)


def _carriable(host: str, reply: bytes) -> str:
    """``host`` if a SYN can name it (docs/protocol.md section 2: letters, digits,
    '.', '_', '-', or an IP literal without a zone); a SocksError otherwise, so a
    name the channel cannot carry costs its own request, never the channel."""
    try:
        parse_host_port(format_host_port(host, 1), allow_port_zero=False)
    except ProtocolError:
        raise SocksError(f"host name {host[:64]!r} is not a valid name", reply) from None
    return host


def _domain(raw: bytes, reply: bytes) -> str:
    """A host name from the request, if the channel can carry it."""
    try:
        return _carriable(raw.decode("ascii"), reply)
    except UnicodeDecodeError:
        raise SocksError(f"host name {raw[:64]!r} is not a valid name", reply) from None
