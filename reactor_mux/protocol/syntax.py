"""Textual atoms shared by the wire protocol and the command line.

The same few rules used to be written out wherever text was read: a decimal
within bounds, ``host:port`` with IPv6 in brackets, what ``localhost`` means
for a listening address.  They live here once, raising plain ``ValueError``
with a message fit for the user; each caller turns that into its own error
(``ProtocolError`` for the peer, ``SpecError`` for an argument).
"""

from __future__ import annotations

import ipaddress
import re

LOCALHOST = "localhost"
LOCALHOST_ADDRESS = "127.0.0.1"
"""A listening address given as ``localhost`` binds this (ssh does the same)."""

_DIGITS = re.compile(r"[0-9]{1,10}")
_CANONICAL = re.compile(r"0|[1-9][0-9]{0,9}")


def parse_decimal(text: str, what: str, low: int, high: int, *, canonical: bool = False) -> int:
    """An unsigned decimal in ``[low, high]``; ``canonical`` also refuses leading
    zeros (the wire spells each number one way only)."""
    pattern = _CANONICAL if canonical else _DIGITS
    if not pattern.fullmatch(text):
        raise ValueError(f"{what} is not a decimal number: {text[:32]!r}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{what} {value} is outside {low}..{high}")
    return value


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets, as ssh and the protocol write it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(address: str) -> bool:
    """True for a loopback IP literal (127.0.0.0/8, ::1) and for ``localhost``."""
    if address == LOCALHOST:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def listening_address(host: str) -> str | None:
    """What to bind for ``host``, or None if it cannot be bound: listening addresses
    are IP literals, or ``localhost`` (127.0.0.1 and ::1, ``netutil.listen_sockets``)."""
    if host == LOCALHOST:
        return LOCALHOST
    return host if is_ip_literal(host) else None
