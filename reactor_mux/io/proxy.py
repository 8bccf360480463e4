"""Reaching the server through an HTTP or SOCKS5 proxy (``--proxy``).

Many networks let a connection out only through a proxy: an HTTP proxy that
tunnels with ``CONNECT host:port`` (RFC 9110 §9.3.6), or a SOCKS5 one (RFC
1928, with RFC 1929's user and password).  The client connects to the proxy,
asks it for the server by name (the proxy resolves it, as curl's
``socks5h://`` does), and once the proxy says yes the socket is the server's
as if connected directly: TLS, WebSocket and the channel start on it
unchanged.

``Dialogue`` is the sans-I/O part (bytes in, bytes out, an outcome);
``ProxyHandshake`` runs one on a socket under the reactor.  Credentials never
leave this module except in the bytes sent to the proxy: ``ProxyUrl`` prints
without them.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import struct
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote

from reactor_mux.io.netutil import describe_error
from reactor_mux.io.reactor import READ, WRITE, IOWatch, Owner, Reactor, Timer
from reactor_mux.protocol.syntax import format_host_port

MAX_ANSWER = 16 * 1024
"""The longest HTTP proxy answer head read (a SOCKS5 answer is at most 262 bytes)."""

PROXY_SCHEMES = {"http": 8080, "socks5": 1080, "socks5h": 1080}
"""``--proxy`` schemes and their usual ports (socks5 resolves at the proxy either way)."""


class ProxyError(ValueError):
    """A ``--proxy`` URL that cannot be used."""


@dataclass(frozen=True)
class ProxyUrl:
    """``--proxy SCHEME://[USER:PASSWORD@]HOST[:PORT]``.  Printed, it names no
    credentials: logs, status and metrics show ``str(proxy)`` only."""

    scheme: str
    host: str
    port: int
    user: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @property
    def socks(self) -> bool:
        return self.scheme != "http"

    def __str__(self) -> str:
        return f"{self.scheme}://{format_host_port(self.host, self.port)}"


def parse_proxy(text: str) -> ProxyUrl:
    """``[SCHEME://][USER:PASSWORD@]HOST[:PORT]``; without a scheme, ``http`` (as curl
    reads one)."""
    if "://" not in text:
        text = f"http://{text}"
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in PROXY_SCHEMES:
        raise ProxyError(f"proxy {_hidden(text)!r}: write http://HOST:PORT or socks5://"
                         "HOST:PORT (credentials as USER:PASSWORD@ before HOST)")  # fmt: skip
    rest = rest.rstrip("/")
    credentials, at, authority = rest.rpartition("@")
    user, _, password = credentials.partition(":")
    if at and not user:
        raise ProxyError(f"proxy {_hidden(text)!r}: credentials without a user name")
    host, port = _authority(authority, PROXY_SCHEMES[scheme], text)
    return ProxyUrl(scheme, host, port, unquote(user), unquote(password))


def _authority(text: str, default: int, whole: str) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    if not host or "/" in host:
        raise ProxyError(f"proxy {_hidden(whole)!r}: no host")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ProxyError(f"proxy {_hidden(whole)!r}: port {port_text!r} is not 1..65535")
    return host, int(port_text)


def _hidden(text: str) -> str:
    """``text`` with any credentials replaced, for an error message."""
    scheme, sep, rest = text.rpartition("://")
    _credentials, at, authority = rest.rpartition("@")
    return f"{scheme}{sep}***@{authority}" if at else text


def proxy_from_environment(
    environ: dict[str, str], target_host: str, websocket_plain: bool
) -> ProxyUrl | None:
    """``--proxy env``: the proxy curl would use for the server.  ``ws://`` reads
    ``http_proxy``, every other channel (TLS inside, or bytes no web proxy should
    see in the clear) ``https_proxy``, then ``all_proxy``; lower case first, as
    curl reads them; none where ``no_proxy`` names the host."""
    if _excluded(_env(environ, "no_proxy"), target_host):
        return None
    first = "http_proxy" if websocket_plain else "https_proxy"
    for name in (first, "all_proxy"):
        value = _env(environ, name)
        if value:
            return parse_proxy(value if "://" in value else f"http://{value}")
    return None


def _env(environ: dict[str, str], name: str) -> str:
    return environ.get(name) or environ.get(name.upper()) or ""


def _excluded(no_proxy: str, host: str) -> bool:
    host = host.lower().strip("[]")
    for entry in (part.strip().lower() for part in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            pass
    return False


class Verdict(enum.Enum):
    """How a proxy's refusal should be taken."""

    REFUSED = "refused"
    """It will keep saying no to this request (credentials, policy): no retry helps."""
    UNAVAILABLE = "unavailable"
    """It could not reach the server now, or failed itself: retry."""


@dataclass(frozen=True)
class ProxyFailure:
    verdict: Verdict
    text: str


class Dialogue:
    """One proxy negotiation, sans I/O: ``start()`` gives the first bytes to send;
    ``receive(data)`` the next ones, until ``done`` (the tunnel is open) or
    ``failure``.  Bytes that arrive after the proxy's answer are the server's:
    ``early`` holds them."""

    def __init__(self, proxy: ProxyUrl, host: str, port: int) -> None:
        self.proxy = proxy
        self.host = host
        self.port = port
        self.done = False
        self.failure: ProxyFailure | None = None
        self.early = b""
        self._buffer = b""
        self._step = "greeting"

    def wanted(self) -> int:
        """How many bytes to read next, so that none of the server's is taken: a
        SOCKS5 answer's exact size; for HTTP, the most to peek at (``reader``)."""
        if not self.proxy.socks:
            return MAX_ANSWER
        if self._step in ("greeting", "auth"):
            return 2 - len(self._buffer)
        if len(self._buffer) < 5:
            return 5 - len(self._buffer)
        size = {1: 4, 4: 16, 3: 1 + self._buffer[4]}.get(self._buffer[3], 0)
        return max(1, 4 + size + 2 - len(self._buffer))

    def start(self) -> bytes:
        if not self.proxy.socks:
            target = format_host_port(self.host, self.port)
            head = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
            if self.proxy.user:
                pair = f"{self.proxy.user}:{self.proxy.password}".encode()
                head.append(f"Proxy-Authorization: Basic {b64encode(pair).decode()}")
            self._step = "answer"
            return ("\r\n".join(head) + "\r\n\r\n").encode()
        methods = b"\x00\x02" if self.proxy.user else b"\x00"
        return b"\x05" + bytes((len(methods),)) + methods

    def receive(self, data: bytes) -> bytes:
        self._buffer += data
        if self.proxy.socks:
            return self._socks()
        return self._http()

    def _fail(self, verdict: Verdict, text: str) -> bytes:
        self.failure = ProxyFailure(verdict, f"proxy {self.proxy}: {text}")
        return b""

    def _http(self) -> bytes:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_ANSWER:
                return self._fail(Verdict.UNAVAILABLE, "its answer has no end")
            return b""
        head, self.early = self._buffer[:end], self._buffer[end + 4 :]
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            return self._fail(Verdict.REFUSED, f"not an HTTP proxy (it said {status_line[:60]!r})")
        status = int(parts[1])
        if 200 <= status < 300:
            self.done = True
            return b""
        said = status_line[:80]
        if status in (401, 407):  # 407 by the standard; tinyproxy, for one, says 401
            needs = "wrong credentials" if self.proxy.user else "it needs credentials"
            return self._fail(Verdict.REFUSED, f"{needs} ({said})")
        if status >= 500 or status in (408, 429):  # it could not reach the server, yet
            return self._fail(Verdict.UNAVAILABLE, f"cannot reach {self._target()} ({said})")
        return self._fail(Verdict.REFUSED, f"refused CONNECT {self._target()} ({said})")

    def _target(self) -> str:
        return format_host_port(self.host, self.port)

    def _socks(self) -> bytes:
        buffer = self._buffer
        if self._step == "greeting":
            if len(buffer) < 2:
                return b""
            self._buffer = buffer[2:]
            if buffer[0] != 5:
                return self._fail(Verdict.REFUSED, "not a SOCKS5 proxy")
            if buffer[1] == 2 and self.proxy.user:
                self._step = "auth"
                user, password = self.proxy.user.encode(), self.proxy.password.encode()
                if len(user) > 255 or len(password) > 255:
                    return self._fail(Verdict.REFUSED, "user name or password over 255 bytes")
                return (b"\x01" + bytes((len(user),)) + user + bytes((len(password),))
                        + password)  # fmt: skip
            if buffer[1] != 0:
                needs = "wrong credentials" if self.proxy.user else "it needs credentials"
                return self._fail(Verdict.REFUSED, f"{needs} (no method it offers is ours)")
            return self._socks_connect()
        if self._step == "auth":
            if len(buffer) < 2:
                return b""
            self._buffer = buffer[2:]
            if buffer[1] != 0:
                return self._fail(Verdict.REFUSED, "wrong credentials")
            return self._socks_connect()
        if len(buffer) < 5:
            return b""
        size = {1: 4, 4: 16, 3: 1 + buffer[4]}.get(buffer[3])
        if size is None:
            return self._fail(Verdict.REFUSED, "an answer of an unknown address type")
        if len(buffer) < 4 + size + 2:
            return b""
        self.early = buffer[4 + size + 2 :]
        code = buffer[1]
        if code == 0:
            self.done = True
            return b""
        why = _SOCKS_REPLIES.get(code, f"error {code}")
        verdict = Verdict.REFUSED if code in (2, 7, 8) else Verdict.UNAVAILABLE
        return self._fail(verdict, f"cannot connect to {self._target()}: {why}")

    def _socks_connect(self) -> bytes:
        self._step = "connect"
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            try:
                name = self.host.encode("idna")
            except UnicodeError:
                name = b""
            if not 0 < len(name) <= 255:
                return self._fail(Verdict.REFUSED, f"the server's name {self.host[:64]!r} "
                                  "cannot be sent through SOCKS5 (1..255 bytes)")  # fmt: skip
            where = b"\x03" + bytes((len(name),)) + name
        else:
            where = (b"\x01" if address.version == 4 else b"\x04") + address.packed
        return b"\x05\x01\x00" + where + struct.pack(">H", self.port)


_SOCKS_REPLIES = {
    1: "general failure",
    2: "not allowed by its rules",
    3: "network unreachable",
    4: "host unreachable",
    5: "connection refused",
    6: "TTL expired",
    7: "command not supported",
    8: "address type not supported",
}


class ProxyHandshake:
    """Run a ``Dialogue`` on ``sock`` (connected to the proxy) within ``timeout``;
    ``on_done(sock, None)`` once the proxy has opened the tunnel, or ``on_done(None,
    failure)`` (the socket closed)."""

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        dialogue: Dialogue,
        timeout: float,
        on_done: Callable[[socket.socket | None, ProxyFailure | None], None],
        owner: Owner,
    ) -> None:
        self._sock = sock
        self._dialogue = dialogue
        self._on_done: Callable[[socket.socket | None, ProxyFailure | None], None] | None = on_done
        self._out = dialogue.start()
        self._head = b""  # the HTTP answer so far
        self._watch = IOWatch(reactor, sock, self._on_io, owner)
        self._timer: Timer | None = reactor.call_later(timeout, self._timed_out, owner)
        self._timeout = timeout
        self._update()

    def _update(self) -> None:
        self._watch.want(READ | (WRITE if self._out else 0))

    def _on_io(self, mask: int) -> None:
        try:
            if mask & WRITE and self._out:
                sent = self._sock.send(self._out)
                self._out = self._out[sent:]
            if mask & READ:
                data = self._read()
                if not data:
                    self._finish(ProxyFailure(Verdict.UNAVAILABLE,
                                              f"proxy {self._dialogue.proxy}: it closed the "
                                              "connection before answering"))  # fmt: skip
                    return
                self._out += self._dialogue.receive(data)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            said = f"proxy {self._dialogue.proxy}: {describe_error(exc)}"
            self._finish(ProxyFailure(Verdict.UNAVAILABLE, said))
            return
        dialogue = self._dialogue
        if dialogue.failure is not None:
            self._finish(dialogue.failure)
        elif dialogue.done and dialogue.early:
            self._finish(ProxyFailure(Verdict.REFUSED, f"proxy {dialogue.proxy}: bytes after "
                                      "its answer, before the server could speak"))  # fmt: skip
        elif dialogue.done:
            self._finish(None)
        else:
            self._update()

    def _read(self) -> bytes:
        """The proxy's next bytes, and none of the server's (which may follow in the
        same segment: a server speaks first).  An HTTP answer's end is found by
        peeking; what is consumed is the head up to its blank line."""
        wanted = self._dialogue.wanted()
        if self._dialogue.proxy.socks:
            return self._sock.recv(wanted)
        peeked = self._sock.recv(wanted, socket.MSG_PEEK)
        if not peeked:
            return b""
        seen = self._head
        end = (seen + peeked).find(b"\r\n\r\n", max(0, len(seen) - 3))
        take = len(peeked) if end < 0 else end + 4 - len(seen)
        data = self._sock.recv(take)
        self._head += data
        return data

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(ProxyFailure(Verdict.UNAVAILABLE, f"proxy {self._dialogue.proxy}: no "
                                  f"answer within {self._timeout:g}s"))  # fmt: skip

    def _finish(self, failure: ProxyFailure | None) -> None:
        on_done, self._on_done = self._on_done, None
        if on_done is None:
            return
        self._watch.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if failure is not None:
            self._sock.close()
            on_done(None, failure)
        else:
            on_done(self._sock, None)

    def cancel(self) -> None:
        if self._on_done is not None:
            self._on_done = None
            self._watch.close()
            if self._timer is not None:
                self._timer.cancel()
            self._sock.close()
