"""Command-line address syntax, as ssh spells it.

``-L [BIND:]PORT:HOST:HOSTPORT`` and ``-R [BIND:]PORT:HOST:HOSTPORT``: the
listening side binds BIND:PORT (BIND defaults to 127.0.0.1; ``*`` or an
empty BIND means every interface; PORT 0 lets the system pick) and each
connection is carried to HOST:HOSTPORT as seen from the other end.  IPv6
literals go in brackets.  ``-D [BIND:]PORT`` listens the same way and lets
each SOCKS client name its own target.  ``HOST:PORT`` is used by ``--server`` and
``--listen``.  Every error is a ``SpecError`` whose message names the
offending text, for a one-line usage error.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from reactor_mux.protocol.limits import MAX_UNIX_PATH
from reactor_mux.protocol.syntax import (
    LOCALHOST,
    format_host_port,
    is_ip_literal,
    listening_address,
    parse_decimal,
)

DEFAULT_BIND = LOCALHOST
"""127.0.0.1 and ::1, as ssh binds a forward by default."""
ALL_INTERFACES = "::"
"""Every interface, IPv4 and IPv6 (one dual-stack socket; 0.0.0.0 without IPv6)."""

_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9._-]{0,253}[A-Za-z0-9_.])?")


class SpecError(ValueError):
    """A malformed address or forwarding spec."""


class ForwardKind(enum.Enum):
    """Which side listens: ``-L`` and ``-D`` the client (local, dynamic), ``-R`` the
    server (remote)."""

    LOCAL = "L"
    REMOTE = "R"
    DYNAMIC = "D"


@dataclass(frozen=True)
class ForwardSpec:
    """One ``-L``, ``-R`` or ``-D`` mapping (a ``-D`` has no target: empty host, port 0)."""

    kind: ForwardKind
    bind_host: str
    bind_port: int
    target_host: str
    target_port: int
    text: str
    bind_path: str | None = None
    """``/PATH:...``: the listening end is this Unix socket (not host:port), here for
    ``-L``, on the server for ``-R``."""
    target_path: str | None = None
    """``...:/PATH``: streams go to this Unix socket (not host:port), on the server for
    ``-L``, here for ``-R``."""
    udp: bool = False
    """``-L udp:...``, ``-R udp:...``: datagrams, not streams."""

    @property
    def dynamic(self) -> bool:
        """``-D``, or ``-R`` with no target: each connection names its own (SOCKS)."""
        return self.target_port == 0 and self.target_path is None

    @property
    def bind(self) -> str:
        if self.bind_path is not None:
            return self.bind_path
        return format_host_port(self.bind_host, self.bind_port)

    @property
    def target(self) -> str:
        if self.target_path is not None:
            return self.target_path
        return format_host_port(self.target_host, self.target_port)

    @property
    def flag(self) -> str:
        """How the user wrote it: ``-L 8080:db:5432``."""
        return f"-{self.kind.value} {self.text}"


def _split_fields(text: str) -> list[str]:
    """Split on ':' outside square brackets, keeping the brackets."""
    fields: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise SpecError("unbalanced ']'")
        if char == ":" and depth == 0:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise SpecError("unbalanced '['")
    fields.append("".join(current))
    return fields


def _port(text: str, what: str, allow_zero: bool) -> int:
    try:
        return parse_decimal(text, what, 0 if allow_zero else 1, 65535)
    except ValueError as exc:
        raise SpecError(str(exc)) from None


def _unbracket(text: str, what: str) -> str:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1]
        if ":" not in inner or not is_ip_literal(inner):
            raise SpecError(f"{what} {text!r} is not an IPv6 address")
        return inner
    if "[" in text or "]" in text:
        raise SpecError(f"{what} {text!r} has stray brackets")
    return text


def parse_host(text: str, what: str = "host") -> str:
    host = _unbracket(text, what)
    if not host:
        raise SpecError(f"{what} is empty")
    if ":" in host:
        return host  # validated IPv6 literal
    if not (is_ip_literal(host) or _HOSTNAME.fullmatch(host)):
        raise SpecError(f"{what} {text!r} is not a valid host name or address")
    return host


def parse_bind_host(text: str) -> str:
    """A listening address: an IP literal, 'localhost', '*' or '' (all interfaces)."""
    if text in ("", "*"):
        return ALL_INTERFACES
    address = listening_address(_unbracket(text, "bind address"))
    if address is None:
        raise SpecError(f"bind address {text!r} must be an IP address, 'localhost' or '*'")
    return address


def _unix_path(text: str) -> str:
    if len(os.fsencode(text)) > MAX_UNIX_PATH or "\0" in text:
        raise SpecError(f"a Unix socket path has at most {MAX_UNIX_PATH} bytes")
    return text


def _is_path(field: str) -> bool:
    return field.startswith("/")


def _unix_forward(kind: ForwardKind, text: str, fields: list[str]) -> ForwardSpec | None:
    """OpenSSH's Unix socket forms, for ``-L`` and ``-R`` alike: the listening end is
    ``/PATH`` or ``[BIND:]PORT``, the target ``/PATH`` or ``HOST:HOSTPORT``, and at
    least one of them a path (the listening end of ``-L`` and the target of ``-R``
    are on this side, the others on the server's).  None when no field is a path."""
    if not any(_is_path(field) for field in fields):
        return None
    bind_host, bind_port, bind_path = "", 0, None
    if _is_path(fields[0]):
        bind_path, target = _unix_path(fields[0]), fields[1:]
    elif _is_path(fields[-1]) and len(fields) in (2, 3):
        listen, target = fields[:-1], fields[-1:]
        bind_host = parse_bind_host(listen[0]) if len(listen) == 2 else DEFAULT_BIND
        bind_port = _port(listen[-1], "port", allow_zero=True)
    else:
        raise SpecError("a socket path is a whole field at either end: /PATH")
    if len(target) == 1 and _is_path(target[0]):
        return ForwardSpec(kind, bind_host, bind_port, "", 0, text, bind_path=bind_path,
                           target_path=_unix_path(target[0]))  # fmt: skip
    if len(target) == 2 and not any(_is_path(field) for field in target):
        return ForwardSpec(kind, bind_host, bind_port, parse_host(target[0]),
                           _port(target[1], "host port", allow_zero=False), text,
                           bind_path=bind_path)  # fmt: skip
    raise SpecError("after /PATH comes HOST:HOSTPORT or another /PATH")


def parse_forward(kind: ForwardKind, text: str) -> ForwardSpec:
    """Parse the argument of ``-L`` or ``-R`` (``-R [BIND:]PORT`` alone is reverse
    dynamic forwarding, as in OpenSSH 7.6; a field starting with ``/`` is a Unix socket)."""
    if text[:4].lower() == UDP_PREFIX:
        return _parse_udp(kind, text)
    if text[:4].lower() == "udp/" or text.lower().endswith("/udp"):
        raise SpecError(f"bad -{kind.value} {text!r}: a UDP forward is written "
                        "udp:[BIND:]PORT:HOST:HOSTPORT")  # fmt: skip
    try:
        fields = _split_fields(text)
        unix = _unix_forward(kind, text, fields)
        if unix is not None:
            return unix
        if kind is ForwardKind.REMOTE and len(fields) <= 2:
            return _parse_listen_only(kind, text, fields)
        if len(fields) == 3:
            bind_host = DEFAULT_BIND
            port_text, host_text, hostport_text = fields
        elif len(fields) == 4:
            bind_host = parse_bind_host(fields[0])
            port_text, host_text, hostport_text = fields[1:]
        else:
            raise SpecError("wrong number of ':'-separated fields")
        return ForwardSpec(
            kind=kind,
            bind_host=bind_host,
            bind_port=_port(port_text, "port", allow_zero=True),
            target_host=parse_host(host_text),
            target_port=_port(hostport_text, "host port", allow_zero=False),
            text=text,
        )
    except SpecError as exc:
        paths = " (either end may be a Unix socket /PATH)" if "/" in text else ""
        raise SpecError(
            f"bad -{kind.value} {text!r}: {exc}; expected [BIND:]PORT:HOST:HOSTPORT"
            + (" or [BIND:]PORT" if kind is ForwardKind.REMOTE else "")
            + paths
        ) from None


UDP_PREFIX = "udp:"
"""``-L udp:[BIND:]PORT:HOST:HOSTPORT``: a UDP forward (as chisel and gost write it)."""


def _parse_udp(kind: ForwardKind, text: str) -> ForwardSpec:
    """``udp:[BIND:]PORT:HOST:HOSTPORT`` for ``-L`` or ``-R``: host and port at both ends
    (no Unix socket, no SOCKS)."""
    rest = text[len(UDP_PREFIX) :]
    try:
        if rest.startswith("/") or ":/" in rest:
            raise SpecError("a UDP forward takes no Unix socket")
        fields = _split_fields(rest)
        if len(fields) == 3:
            bind_host, (port_text, host_text, hostport_text) = DEFAULT_BIND, fields
        elif len(fields) == 4:
            bind_host = parse_bind_host(fields[0])
            port_text, host_text, hostport_text = fields[1:]
        else:
            raise SpecError("wrong number of ':'-separated fields")
        return ForwardSpec(kind, bind_host, _port(port_text, "port", allow_zero=True),
                           parse_host(host_text),
                           _port(hostport_text, "host port", allow_zero=False), text,
                           udp=True)  # fmt: skip
    except SpecError as exc:
        raise SpecError(f"bad -{kind.value} {text!r}: {exc}; expected "
                        "udp:[BIND:]PORT:HOST:HOSTPORT") from None  # fmt: skip


def parse_dynamic(text: str) -> ForwardSpec:
    """Parse the argument of ``-D``: ``[BIND:]PORT``."""
    try:
        return _parse_listen_only(ForwardKind.DYNAMIC, text, _split_fields(text))
    except SpecError as exc:
        raise SpecError(f"bad -D {text!r}: {exc}; expected [BIND:]PORT") from None


def _parse_listen_only(kind: ForwardKind, text: str, fields: list[str]) -> ForwardSpec:
    if len(fields) == 1:
        bind_host, port_text = DEFAULT_BIND, fields[0]
    elif len(fields) == 2:
        bind_host, port_text = parse_bind_host(fields[0]), fields[1]
    else:
        raise SpecError("wrong number of ':'-separated fields")
    return ForwardSpec(kind, bind_host, _port(port_text, "port", allow_zero=True), "", 0, text)


DEFAULT_CHANNEL_PORT = 7000
"""The channel's port where ``--server`` or ``--listen`` names none (frp's too)."""


def parse_endpoint(
    text: str, *, listening: bool, default_port: int | None = None
) -> tuple[str, int]:
    """Parse ``HOST:PORT`` for ``--listen`` (listening=True) or ``--server``; with a
    ``default_port``, ``HOST`` alone means that port."""
    try:
        fields = _split_fields(text)
        if len(fields) == 1 and default_port is not None:
            fields.append(str(default_port))
        if len(fields) != 2:
            expected = "HOST:PORT" if default_port is None else "HOST[:PORT]"
            raise SpecError(f"expected {expected} (an IPv6 address in brackets: [::1])")
        host_text, port_text = fields
        if listening:
            return parse_bind_host(host_text), _port(port_text, "port", allow_zero=True)
        return parse_host(host_text), _port(port_text, "port", allow_zero=False)
    except SpecError as exc:
        raise SpecError(f"bad address {text!r}: {exc}") from None


WEBSOCKET_SCHEMES = {"ws": 80, "wss": 443}
"""``--server ws://...`` and ``wss://...``, with the ports a browser would use."""


@dataclass(frozen=True)
class WebSocketUrl:
    """``--server ws[s]://HOST[:PORT][/PATH]``: the channel as a WebSocket at PATH."""

    host: str
    port: int
    path: str
    secure: bool
    """``wss``: TLS under the WebSocket (verified as ``--tls`` verifies)."""

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def host_header(self) -> str:
        """What the HTTP ``Host`` header says: the port only where it is not the
        scheme's own."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = WEBSOCKET_SCHEMES["wss" if self.secure else "ws"]
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        scheme = "wss" if self.secure else "ws"
        return f"{scheme}://{format_host_port(self.host, self.port)}{self.path}"


_PATH_CHARS = re.compile(r"/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*")


def parse_websocket_path(text: str) -> str:
    """``--ws-path``, or a URL's path: absolute, of the characters a URL path may hold."""
    if not _PATH_CHARS.fullmatch(text):
        raise SpecError(f"WebSocket path {text!r} must start with / and hold only a URL "
                        "path's characters")  # fmt: skip
    return text


def parse_server(text: str) -> tuple[str, int] | WebSocketUrl:
    """``--server``: ``HOST[:PORT]``, or ``ws://`` / ``wss://`` ``HOST[:PORT][/PATH]``."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return parse_endpoint(text, listening=False, default_port=DEFAULT_CHANNEL_PORT)
    if scheme.lower() not in WEBSOCKET_SCHEMES:
        raise SpecError(f"bad address {text!r}: the scheme is ws:// or wss:// (or none)")
    secure = scheme.lower() == "wss"
    authority, slash, path = rest.partition("/")
    try:
        path = parse_websocket_path(slash + path) if slash else "/"
    except SpecError as exc:
        raise SpecError(f"bad address {text!r}: {exc}") from None
    host, port = parse_endpoint(authority, listening=False,
                                default_port=WEBSOCKET_SCHEMES[scheme.lower()])  # fmt: skip
    return WebSocketUrl(host, port, path, secure)
