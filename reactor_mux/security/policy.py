"""Which targets a client may reach and which ports it may open: allow-lists.

``--allow-connect PATTERN`` limits where ``-L`` streams go, ``--allow-bind
PATTERN`` where ``-R`` listeners open.  A pattern is ``HOST:PORTS``:

* HOST: ``*``; a host name, where ``*`` matches any run of characters
  (``*.internal``); an IP address; or a network in CIDR form.  IPv6 goes in
  brackets: ``[2001:db8::/32]``.
* PORTS: ``*``, one port, or a range ``1000-2000``.

A target is checked twice.  As written: a name must match a name pattern (or
``*``), an address an address or network pattern.  Then, after resolution,
every address the server would connect to is checked again, so that a name
cannot be used to reach what the list keeps out (DNS rebinding): a public
address passes if the name passed, but a private, loopback, link-local or
otherwise non-public address passes only where a pattern names its network.
So ``*:443`` reaches any public host's port 443, and an internal one only
beside ``10.0.0.0/8:443``.  No list means no restriction.

A pattern that starts with ``udp/`` is for UDP (``-L udp:``, ``-R udp:``) and only
for it: ``udp/10.0.0.53:53``.  Once a list holds any host pattern, UDP is held to
its ``udp/`` patterns as TCP is to the others (a list that names TCP ports only
allows no UDP); with no list, neither is restricted.

A pattern that starts with ``/`` names Unix sockets on the server (``-L
PORT:/PATH`` connects to one, ``-R /PATH:...`` listens on one): an absolute
path where ``*`` and ``?`` match within one path component (``/run/redis/*.sock``).
Unix sockets are refused unless a path pattern allows them, list or no list:
a server's sockets (a container runtime's, a database's) are its own business
until the operator says otherwise, as ``--gateway-ports`` decides binds beyond
loopback.  Path patterns do not restrict host targets, and host patterns do
not allow paths.  A requested path must be in its plain form (no ``.`` or
``..`` component, no ``//``), so a pattern cannot be walked out of.

This module only decides; the server asks it at ``CONNECT``/``BIND`` time and
the connector asks it for each resolved address.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from reactor_mux.protocol.limits import MAX_UNIX_PATH
from reactor_mux.protocol.syntax import format_host_port

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME_GLOB = re.compile(r"[A-Za-z0-9*_.-]{1,255}")
_PORTS = re.compile(r"(\*|[0-9]{1,5}|[0-9]{1,5}-[0-9]{1,5})")


class PatternError(ValueError):
    """A malformed allow pattern."""


@dataclass(frozen=True)
class Pattern:
    """One ``HOST:PORTS`` allow rule."""

    text: str
    any_host: bool
    name_glob: str | None
    network: IPNetwork | None
    low_port: int
    high_port: int
    udp: bool = False
    """``udp/HOST:PORTS``: it allows UDP targets and binds, and no TCP ones."""

    def allows_port(self, port: int) -> bool:
        return self.low_port <= port <= self.high_port

    def allows_any_port(self) -> bool:
        return self.low_port == 0 and self.high_port == 65535

    def matches_name(self, name: str) -> bool:
        if self.any_host:
            return True
        return self.name_glob is not None and fnmatch.fnmatchcase(name.lower(), self.name_glob)

    def covers(self, address: IPAddress) -> bool:
        """The pattern names a network (or one address) that holds ``address``."""
        return self.network is not None and address in self.network


UDP_PATTERN = "udp/"
"""The prefix of a pattern for UDP forwards."""


def parse_pattern(text: str) -> Pattern | PathPattern:
    """Parse ``HOST:PORTS`` or a socket path pattern; raises ``PatternError`` naming
    what is wrong."""
    if text.startswith("/"):
        return _parse_path_pattern(text)
    if text[:4].lower() == UDP_PATTERN:
        try:
            pattern = parse_pattern(text[len(UDP_PATTERN) :])
        except PatternError as exc:
            raise PatternError(
                str(exc).replace(repr(text[len(UDP_PATTERN) :]), repr(text), 1)
            ) from None
        if not isinstance(pattern, Pattern):
            raise PatternError(f"allow pattern {text!r}: a UDP pattern names a host, not a path")
        return replace(pattern, text=text, udp=True)
    if text[:4].lower() == "udp:":
        raise PatternError(f"allow pattern {text!r}: a UDP pattern is udp/HOST:PORTS")
    host, sep, ports = text.rpartition(":")
    if not sep or not host:
        raise PatternError(f"allow pattern {text!r} is not HOST:PORTS")
    if not _PORTS.fullmatch(ports):
        raise PatternError(f"allow pattern {text!r}: {ports!r} is not a port, a range or *")
    if ports == "*":
        low, high = 0, 65535
    elif "-" in ports:
        low, high = (int(part) for part in ports.split("-"))
    else:
        low = high = int(ports)
    if not 0 <= low <= high <= 65535:
        raise PatternError(f"allow pattern {text!r}: ports {ports} are not within 0..65535")
    if host == "*":
        return Pattern(text, True, None, None, low, high)
    bracketed = host.startswith("[") and host.endswith("]")
    literal = host[1:-1] if bracketed else host
    try:
        network = ipaddress.ip_network(literal, strict=False)
    except ValueError:
        network = None
    if network is not None:
        if network.version == 6 and not bracketed:
            raise PatternError(f"allow pattern {text!r}: put an IPv6 address in brackets")
        return Pattern(text, False, None, network, low, high)
    if bracketed or not _NAME_GLOB.fullmatch(host):
        raise PatternError(f"allow pattern {text!r}: {host!r} is not a name, address or network")
    return Pattern(text, False, host.lower(), None, low, high)


@dataclass(frozen=True)
class PathPattern:
    """One allow rule for Unix socket paths."""

    text: str
    regex: re.Pattern[str]

    def matches(self, path: str) -> bool:
        return self.regex.fullmatch(path) is not None


def _plain_path(path: str) -> bool:
    """Absolute, no empty, ``.`` or ``..`` component, no trailing ``/``; printable
    (a path is written into the log: no control character may forge a line)."""
    if not path.startswith("/") or path == "/" or not path.isprintable():
        return False
    return all(part not in ("", ".", "..") for part in path[1:].split("/"))


def _parse_path_pattern(text: str) -> PathPattern:
    if not _plain_path(text) or "\0" in text:
        raise PatternError(f"allow pattern {text!r}: a socket path pattern is an absolute "
                           "path without '.', '..' or '//' components")  # fmt: skip
    if len(os.fsencode(text)) > MAX_UNIX_PATH:
        raise PatternError(f"allow pattern {text!r}: longer than {MAX_UNIX_PATH} bytes")
    pieces = []
    for char in text:
        if char == "*":
            pieces.append("[^/]*")
        elif char == "?":
            pieces.append("[^/]")
        else:
            pieces.append(re.escape(char))
    return PathPattern(text, re.compile("".join(pieces), re.DOTALL))


def _label(host: str, port: int, udp: bool) -> str:
    """``host:port``, or ``udp/host:port``: how a refusal names what was asked."""
    return (UDP_PATTERN if udp else "") + format_host_port(host, port)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_public(address: IPAddress) -> bool:
    """Globally routable: what a name may resolve to without a network rule."""
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_global


class AllowList:
    """A list of patterns.  Without a host pattern, it allows every host target,
    unless it was given on purpose (``restrictive``: a clients-file entry says all a
    client may do, so ``allow-connect = []`` means "nowhere").  Socket paths are
    allowed only by path patterns."""

    def __init__(
        self,
        patterns: Iterable[Pattern | PathPattern] = (),
        flag: str = "--allow-connect",
        *,
        restrictive: bool | None = None,
    ) -> None:
        self.patterns: tuple[Pattern | PathPattern, ...] = tuple(patterns)
        self._hosts = tuple(p for p in self.patterns if isinstance(p, Pattern))
        self._paths = tuple(p for p in self.patterns if isinstance(p, PathPattern))
        self._flag = flag
        self.restrictive = bool(self._hosts) if restrictive is None else restrictive

    @classmethod
    def parse(
        cls, texts: Sequence[str], flag: str, *, restrictive: bool | None = None
    ) -> AllowList:
        return cls((parse_pattern(text) for text in texts), flag, restrictive=restrictive)

    def check_target(self, host: str, port: int, *, udp: bool = False) -> str | None:
        """Why connecting to ``host:port`` (as written) is refused, or None."""
        if not self.restrictive:
            return None
        address = _address(host)
        for pattern in self._hosts:
            if pattern.udp != udp or not pattern.allows_port(port):
                continue
            if address is None and pattern.matches_name(host):
                return None
            if address is not None and (
                pattern.covers(address) or (pattern.any_host and is_public(address))
            ):
                return None
        refused = f"{_label(host, port, udp)} is not allowed by the server's {self._flag}"
        return refused + self._udp_hint(udp)

    def _udp_hint(self, udp: bool) -> str:
        """A UDP refusal by a list without one ``udp/`` pattern: say that is why."""
        if udp and not any(pattern.udp for pattern in self._hosts):
            return " (it has no udp/HOST:PORTS pattern; TCP patterns allow no UDP)"
        return ""

    def check_resolved(
        self, name: str, address: str, port: int, *, udp: bool = False
    ) -> str | None:
        """Why connecting to ``address`` (what ``name`` resolved to) is refused, or None."""
        if not self.restrictive:
            return None
        ip = _address(address.split("%", 1)[0])
        if ip is None:
            return f"{name} resolved to {address!r}, which is not an address"
        name_allowed = False
        for pattern in self._hosts:
            if pattern.udp != udp or not pattern.allows_port(port):
                continue
            if pattern.covers(ip):
                return None
            name_allowed = name_allowed or pattern.matches_name(name)
        if name_allowed and is_public(ip):
            return None
        if name_allowed:
            return (f"{name} resolves to {ip}, a non-public address that no {self._flag} "
                    "network covers")  # fmt: skip
        return f"{_label(str(ip), port, udp)} is not allowed by the server's {self._flag}"

    def check_bind(self, address: str, port: int, *, udp: bool = False) -> str | None:
        """Why listening on ``address:port`` (an IP literal) is refused, or None."""
        if not self.restrictive:
            return None
        ip = _address(address)
        for pattern in self._hosts:
            if pattern.udp != udp:
                continue
            if port == 0 and not pattern.allows_any_port():
                continue  # the system picks the port: only a pattern for any port allows it
            if port != 0 and not pattern.allows_port(port):
                continue
            if pattern.any_host or (ip is not None and pattern.covers(ip)):
                return None
        refused = f"{_label(address, port, udp)} is not allowed by the server's {self._flag}"
        return refused + self._udp_hint(udp)

    def check_path(self, path: str) -> str | None:
        """Why the Unix socket at ``path`` may not be used, or None."""
        if not _plain_path(path):
            return (f"socket path {path!r} is not in plain form (printable, no '.', '..' "
                    "or '//')")  # fmt: skip
        if any(pattern.matches(path) for pattern in self._paths):
            return None
        if not self._paths:
            return (f"Unix socket {path} is not allowed: the server allows Unix sockets "
                    f"only where {self._flag} names them")  # fmt: skip
        return f"Unix socket {path} is not allowed by the server's {self._flag}"


@dataclass(frozen=True)
class Policy:
    """What one client may do on this server."""

    connect: AllowList = field(default_factory=AllowList)
    bind: AllowList = field(default_factory=lambda: AllowList(flag="--allow-bind"))

    def overridden(self, connect: AllowList | None, bind: AllowList | None) -> Policy:
        """This policy with a client's own lists in place of the global ones."""
        return Policy(connect if connect is not None else self.connect,
                      bind if bind is not None else self.bind)  # fmt: skip
