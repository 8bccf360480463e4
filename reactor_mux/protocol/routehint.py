"""Where a resuming connection belongs, read from its first bytes, unconsumed.

A server that runs several workers (``--workers``), or several hosts that share
clients (``--node-id``), writes the holder into every session id it hands out:
the first ``ROUTE_HEX`` hex digits are the node (four) and the worker (two),
the rest stays random.  A connection that resumes names its session before
anything is read from it, in one of two places:

* in plaintext, its ``HELLO`` (the first frame): ``resume:ID``;
* in TLS, where the ``HELLO`` is encrypted, its ClientHello offers the ALPN
  value ``ROUTE_ALPN_PREFIX`` + the route (``reactor-mux-route/000102``).  The
  server never selects it (it offers no ALPN), so the handshake is unchanged
  and the hint costs one extension.

``route_of`` reads either from peeked bytes; the worker that accepted the
connection hands it to the holder.  No sockets here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from reactor_mux.protocol.auth import SESSION_ID_HEX

ROUTE_HEX = 6
"""Hex digits of a session id that name its holder: node (4), worker (2)."""
ROUTE_ALPN_PREFIX = b"reactor-mux-route/"
MAX_WORKERS = 256
MAX_NODE = 0xFFFF
PEEK_SIZE = 2048
"""Bytes peeked at: a client's HELLO, or a ClientHello as OpenSSL writes one."""
_HELLO_PREFIX = b"HELLO "
_RESUME_WORD = "resume:"


@dataclass(frozen=True, slots=True)
class Route:
    node: int
    worker: int

    @property
    def hex(self) -> str:
        return f"{self.node:04x}{self.worker:02x}"

    @classmethod
    def parse(cls, text: str) -> Route | None:
        """The route a session id (or its first ROUTE_HEX digits) names, or None."""
        head = text[:ROUTE_HEX]
        if len(head) != ROUTE_HEX or not all(c in "0123456789abcdef" for c in head):
            return None
        return cls(int(head[:4], 16), int(head[4:], 16))


class NeedMore:
    """The bytes so far end before what names the route (or its absence)."""


NEED_MORE = NeedMore()


def route_of(data: bytes) -> Route | NeedMore | None:
    """The route the connection's opening names; None if it names none (a new
    session, a WebSocket upgrade, anything else); NEED_MORE if it may, later."""
    if data[:1] == b"\x16":
        return _tls_route(data)
    if data[:1] == b"\x00":
        return _hello_route(data)
    return None if data else NEED_MORE


def _hello_route(data: bytes) -> Route | NeedMore | None:
    if len(data) < 9:
        return NEED_MORE
    length, stream_id, kind = struct.unpack_from("!IIB", data, 0)
    if stream_id != 0 or kind != 1 or length > PEEK_SIZE - 9:
        return None
    body = data[9 : 9 + length]
    if len(body) < length:
        return NEED_MORE
    if not body.startswith(_HELLO_PREFIX):
        return None
    for word in body.decode("ascii", "replace").split(" ")[4:]:
        if word.startswith(_RESUME_WORD):
            session_id = word[len(_RESUME_WORD) :]
            return Route.parse(session_id) if len(session_id) == SESSION_ID_HEX else None
    return None


def _tls_route(data: bytes) -> Route | NeedMore | None:
    """The ALPN hint in a ClientHello's first record (where OpenSSL puts it whole)."""
    if len(data) < 5:
        return NEED_MORE
    record_length = struct.unpack_from("!H", data, 3)[0]
    if len(data) < 5 + record_length:
        return NEED_MORE if 5 + record_length <= PEEK_SIZE else None
    hello = data[5 : 5 + record_length]
    try:
        return _alpn_route(hello)
    except (struct.error, IndexError):
        return None  # not a ClientHello we can read: served where it landed


def _alpn_route(hello: bytes) -> Route | None:
    if hello[0] != 1:  # handshake type client_hello
        return None
    at = 4 + 2 + 32  # handshake header, client_version, random
    at += 1 + hello[at]  # session id
    at += 2 + struct.unpack_from("!H", hello, at)[0]  # cipher suites
    at += 1 + hello[at]  # compression methods
    end = at + 2 + struct.unpack_from("!H", hello, at)[0]
    at += 2
    while at + 4 <= end:
        kind, size = struct.unpack_from("!HH", hello, at)
        at += 4
        if kind == 16:  # application_layer_protocol_negotiation
            return _route_in_alpn(hello[at + 2 : at + size])
        at += size
    return None


def _route_in_alpn(names: bytes) -> Route | None:
    at = 0
    while at < len(names):
        size = names[at]
        name = names[at + 1 : at + 1 + size]
        if name.startswith(ROUTE_ALPN_PREFIX):
            return Route.parse(name[len(ROUTE_ALPN_PREFIX) :].decode("ascii", "replace"))
        at += 1 + size
    return None


def alpn_hint(session_id: str) -> str:
    """The ALPN value a client offers when it resumes ``session_id`` over TLS."""
    return ROUTE_ALPN_PREFIX.decode() + session_id[:ROUTE_HEX]
