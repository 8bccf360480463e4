"""The PROXY protocol header (versions 1 and 2) an L4 load balancer puts first.

A balancer such as HAProxy (``send-proxy``, ``send-proxy-v2``) opens its own
connection to the server, so the server sees the balancer's address, not the
client's; the header it writes before the client's first byte names the
client.  Only connections from addresses trusted with ``--proxy-protocol-from``
are read for one (anyone else could name any source), and those must send one.

Parsing is strict and bounded: a version-1 line is at most ``MAX_V1_LINE``
bytes, a version-2 header's address and TLV block at most ``MAX_V2_BODY``;
unknown versions, commands and families are refused.  A ``LOCAL`` command
(version 2) is the balancer speaking for itself (a health check).  An
``UNKNOWN`` protocol (version 1) or ``UNSPEC`` family (version 2) names no
source: such a connection (a client of a balancer's Unix socket, say) counts as
from the balancer's own address, as any other.  No sockets here: the server
peeks, and asks how much to consume.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The twelve bytes that start a version-2 header."""
V1_PREFIX = b"PROXY "
MAX_V1_LINE = 107
"""The longest version-1 line the specification allows, CRLF included."""
V2_FIXED = 16
"""Signature, version and command, family, length."""
MAX_V2_BODY = 1024
"""Address block and TLVs of a version-2 header: HAProxy's own run to a few
hundred bytes (its SSL and unique-id TLVs); more is refused, not buffered."""
MAX_HEADER = V2_FIXED + MAX_V2_BODY
"""What the server may have to peek at to find the end of a header."""

_V2_COMMANDS = {0x20: "LOCAL", 0x21: "PROXY"}
_V2_FAMILIES = {0x00: 0, 0x11: 12, 0x21: 36}
"""Family and transport byte: UNSPEC, TCP over IPv4, TCP over IPv6, with the
address block each needs.  UDP and Unix sockets cannot be a channel's source."""


class ProxyHeaderError(ValueError):
    """The bytes are not a valid PROXY protocol header (the message says why)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int
    """Bytes the header takes: consume exactly these, the channel follows."""
    version: int
    source: tuple[str, int] | None
    """The client's address and port; None where the header names none (LOCAL,
    UNKNOWN, UNSPEC)."""
    local: bool = False
    """Version 2's LOCAL: the balancer's own connection (a health check)."""


def parse(data: bytes) -> ProxyHeader | None:
    """The header at the start of ``data``, or None if more bytes are needed;
    raises ProxyHeaderError if ``data`` cannot start a valid one."""
    if data.startswith(V2_SIGNATURE[: len(data)]) and data[:1] == b"\r":
        return _parse_v2(data)
    if V1_PREFIX.startswith(data[: len(V1_PREFIX)]):
        return _parse_v1(data)
    raise ProxyHeaderError("expected a PROXY protocol header (from a --proxy-protocol-from "
                           f"address), got bytes {data[:8].hex(' ')}")  # fmt: skip


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version_command, family, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyHeaderError(f"PROXY protocol version {version_command >> 4} is not supported")
    command = _V2_COMMANDS.get(version_command)
    if command is None:
        raise ProxyHeaderError(f"unknown PROXY protocol command {version_command & 0x0F}")
    if length > MAX_V2_BODY:
        raise ProxyHeaderError(f"PROXY protocol header of {length} bytes (at most {MAX_V2_BODY})")
    needed = _V2_FAMILIES.get(family)
    if needed is None:
        raise ProxyHeaderError(f"PROXY protocol family 0x{family:02x} is not TCP over IP")
    if length < needed:
        raise ProxyHeaderError(f"PROXY protocol address block of {length} bytes is too short")
    if len(data) < V2_FIXED + length:
        return None
    if command == "LOCAL" or family == 0x00:
        return ProxyHeader(V2_FIXED + length, 2, None, local=command == "LOCAL")
    body = data[V2_FIXED : V2_FIXED + needed]
    if family == 0x11:
        host = str(ipaddress.IPv4Address(body[0:4]))
        (port,) = struct.unpack_from("!H", body, 8)
    else:
        host = str(ipaddress.IPv6Address(body[0:16]))
        (port,) = struct.unpack_from("!H", body, 32)
    return ProxyHeader(V2_FIXED + length, 2, (unmapped(host), port))


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, MAX_V1_LINE)
    if end < 0:
        if len(data) >= MAX_V1_LINE or b"\n" in data:
            raise ProxyHeaderError(f"PROXY protocol line longer than {MAX_V1_LINE} bytes "
                                   "or without CRLF")  # fmt: skip
        return None
    line = data[:end]
    try:
        words = line.decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY protocol line is not ASCII") from None
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(end + 2, 1, None)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError("PROXY protocol line is not 'PROXY TCP4|TCP6 SRC DST SPORT "
                               "DPORT' or 'PROXY UNKNOWN'")  # fmt: skip
    family = ipaddress.IPv4Address if words[1] == "TCP4" else ipaddress.IPv6Address
    try:
        source = family(words[2])
        family(words[3])
    except ValueError:
        raise ProxyHeaderError(f"PROXY protocol addresses are not {words[1]}") from None
    source_port = _port(words[4])
    _port(words[5])
    return ProxyHeader(end + 2, 1, (unmapped(str(source)), source_port))


def _port(text: str) -> int:
    if (
        not text.isdigit()
        or not text.isascii()
        or len(text) > 5
        or (text[0] == "0" and text != "0")
    ):
        raise ProxyHeaderError(f"PROXY protocol port {text[:8]!r} is not 0..65535")
    port = int(text)
    if port > 65535:
        raise ProxyHeaderError(f"PROXY protocol port {port} is not 0..65535")
    return port


def unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 source as the IPv4 address it is (so the per-source blocks
    and allow rules see one address, as accept() would report on a dual-stack socket)."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return host
