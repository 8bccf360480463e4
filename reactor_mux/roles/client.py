"""The client role (the multiplexer).

The client binds its ``-L`` listeners once, at start, and keeps them for its
whole life; it holds at most one channel to the server and re-creates it
after every loss, with capped exponential backoff.  Each new channel
declares every mapping again (CONNECT for ``-L``, BIND for ``-R``) and
carries the same random client id in HELLO, which lets the server retire a
stale channel of ours at once.  While no channel is up, a connection to an
``-L`` port is reset at once (the local application sees a refusal
immediately rather than a hang).

Here are the listeners, the channel, and the glue.  Each other job is a part
of its own, testable without sockets: the ``ForwardTable`` (the forwards by
mapping number, and where each request stands), the ``ReconnectPolicy`` (when
to connect again, and how loudly to say so) and ``RemoteBinds`` (which port
each ``-R`` asks for, and when a refused one asks again).
"""

from __future__ import annotations

import enum
import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from reactor_mux.errors import StartupError
from reactor_mux.io import plane as data_plane
from reactor_mux.io.connector import Connector
from reactor_mux.io.listener import ListenerSet, UnixListenerSet
from reactor_mux.io.netutil import (
    LOOPBACK_PAIR,
    PeerAddress,
    abort_socket,
    connect_unix,
    describe_error,
    loopback_pair,
)
from reactor_mux.io.proxy import Dialogue, ProxyFailure, ProxyHandshake, ProxyUrl, Verdict
from reactor_mux.io.reactor import Reactor, Timer
from reactor_mux.io.resolver import Resolver
from reactor_mux.io.tls import ClientTls, TlsTransport, self_signed_fingerprint
from reactor_mux.io.transport import TcpTransport, Transport
from reactor_mux.io.websocket import WebSocketTransport
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.events import (
    DatagramReceived,
    HelloReceived,
    MappingAccepted,
    MappingCancelled,
    MappingRefused,
    MappingRequested,
    ResumeProved,
    ResumeRequested,
    SessionResumed,
)
from reactor_mux.protocol.failures import Failure, FailureClass, class_of, text_of
from reactor_mux.protocol.handshake import ROUTE_ID_PREFIX
from reactor_mux.protocol.routehint import alpn_hint
from reactor_mux.protocol.syntax import (
    LOCALHOST,
    LOCALHOST_ADDRESS,
    format_host_port,
    is_loopback,
)
from reactor_mux.protocol.verbs import Role
from reactor_mux.roles.backoff import DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN
from reactor_mux.roles.forwardtable import Changes, ForwardTable, same_forward
from reactor_mux.roles.reconnect import ReconnectPolicy, retry_cannot_help
from reactor_mux.roles.remotebinds import RemoteBinds
from reactor_mux.roles.socks import SocksRequest
from reactor_mux.roles.socksserver import LocalConnect, SocksOpenHook, SocksPort
from reactor_mux.roles.specs import ForwardKind, ForwardSpec, WebSocketUrl
from reactor_mux.roles.stdio import StdioBridge
from reactor_mux.tunnel.channel import (
    SHUTTING_DOWN,
    Channel,
    LocalService,
    MappingAnswer,
)
from reactor_mux.tunnel.drain import wait_for_streams
from reactor_mux.tunnel.localstream import LocalStream
from reactor_mux.tunnel.meter import Meter
from reactor_mux.tunnel.settings import DEFAULT_DRAIN_TIMEOUT, ChannelSettings
from reactor_mux.tunnel.udp import DEFAULT_UDP_TIMEOUT, UdpBudget, UdpConnector, UdpListener

log = logging.getLogger("reactor_mux")


@dataclass
class ClientConfig:
    server: tuple[str, int]
    forwards: list[ForwardSpec] = field(default_factory=list)
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    reconnect_min: float = DEFAULT_RECONNECT_MIN
    reconnect_max: float = DEFAULT_RECONNECT_MAX
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    tls: ClientTls | None = None
    proxy: ProxyUrl | None = None
    """``--proxy``: reach the server through this HTTP or SOCKS5 proxy."""
    websocket: WebSocketUrl | None = None
    """``--server ws[s]://...``: the channel as a WebSocket (``server`` is its host)."""
    udp_timeout: float = DEFAULT_UDP_TIMEOUT
    """``--udp-timeout``: seconds a UDP association lives without a datagram."""
    exit_on_forward_failure: str | None = None
    """A forward that fails during start-up ends the client; this names what asked for
    it in the line (``--exit-on-forward-failure``, ``-f``).  None: carry on."""
    persist: bool = False
    """Keep retrying a server that refuses us as configured; else exit (GAVE_UP_STATUS)."""
    persist_option: str = "--persist"
    """How the one line that gives up names the way to keep trying (the API:
    ``persist=True``)."""
    connect_attempts: int | None = None
    """Connection attempts in a row without a channel coming up before giving up
    (ssh's ConnectionAttempts); None: no limit."""
    on_forwards_up: Callable[[], None] | None = None
    """Called once, when every forward of the start-up is up (``-f``)."""
    stdio_target: tuple[str, int] | None = None
    """``-W HOST:PORT``: standard input and output as one connection to it (no forwards)."""


GAVE_UP_STATUS = 255
"""The exit status when the server cannot be used as configured, or the connection
attempts ran out: ssh's for a failed connection."""


class Ending(enum.Enum):
    """Why a client stopped of its own accord (the Python API raises by it)."""

    REFUSED = "refused"
    """Authentication failed, either way, or the server revoked this client."""
    UNUSABLE = "unusable"
    """Not a reactor-mux server, TLS against plaintext, a handshake it refused."""
    UNREACHABLE = "unreachable"
    """``--connect-attempts`` ran out."""
    FORWARD_FAILED = "forward"
    """A forward failed under ``--exit-on-forward-failure``."""
    STDIO = "stdio"
    """``-W``'s connection failed."""


@dataclass(frozen=True)
class GaveUp:
    ending: Ending
    line: str
    """What the log said, in one line."""


class Client:
    name = "client"
    exit_status = 0
    """What the process exits with once the reactor stops (1 after a forward failure
    under ``--exit-on-forward-failure``, GAVE_UP_STATUS when it gave up on the server)."""

    def __init__(self, reactor: Reactor, resolver: Resolver, config: ClientConfig) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.config = config
        self.client_id = ROUTE_ID_PREFIX + secrets.token_hex(16)  # §9.5: it can resume anywhere
        self.server_label = (str(config.websocket) if config.websocket is not None
                             else format_host_port(*config.server))  # fmt: skip
        self.forward_table = ForwardTable(config.forwards)
        self.local_listeners: dict[int, ListenerSet] = {}
        self.udp_ends: dict[int, UdpListener | UdpConnector] = {}
        self._udp_budget = UdpBudget()
        """Each UDP forward's end here: the listener of ``-L udp:``, the connector of
        ``-R udp:`` (made when the server first accepts it)."""
        self.socks_ports: dict[int, SocksPort] = {}
        self.channel: Channel | None = None
        self.meter = Meter()
        self.started_at = reactor.time()
        self._warned_plaintext = False
        self._connector: Connector | ProxyHandshake | None = None
        self._target = config.server
        """Where the attempt under way connects: ``--server``, or while resuming maybe
        the address the server advertised."""
        self._target_label = self.server_label
        self._retry: Timer | None = None
        self._attempts = 0
        """Connection attempts made since a channel was last up (--connect-attempts)."""
        self._reconnect = ReconnectPolicy(reactor.time, config.reconnect_min, config.reconnect_max)
        self._server_cannot_resume = False
        """The server is older than resume: it refused our HELLO's ``resume`` word."""
        self._direct_next = False
        """The next attempt to resume goes to the server's advertised address."""
        self._stopped = False
        self._cancel_drain: Callable[[], None] | None = None
        self._remote_binds = RemoteBinds(reactor, self, config.reconnect_min, config.reconnect_max)
        self._retired_socks: list[SocksPort] = []
        """SOCKS negotiations of removed reverse dynamic forwards, left to finish."""
        self._stdio_mapping = self.forward_table.new_number() if config.stdio_target else None
        """``-W``: the CONNECT mapping its one stream opens on (not a forward of the table)."""
        self._stdio: StdioBridge | None = None
        self.gave_up: GaveUp | None = None
        """Why the client stopped of its own accord, if it did."""
        self._started_up = False
        """Every forward has been up once: start-up is over."""

    def start(self) -> None:
        data_plane.hub_for(self.reactor)  # its epoll set now, not with the first channel
        for mapping, spec in list(self.forward_table.mappings.items()):
            if spec.kind is not ForwardKind.REMOTE:
                reason = self._listen(mapping, spec)
                asked = self.config.exit_on_forward_failure
                if reason is not None and asked is not None:
                    raise StartupError(f"{reason} ({asked})")
                if reason is not None:
                    log.error("%s", reason, extra=log_event("listen_failed", mapping=spec.flag,
                                                            reason=reason))  # fmt: skip
        has_remote = any(spec.kind is ForwardKind.REMOTE for spec in self.forward_table.specs)
        if (not self.local_listeners and not self.udp_ends and not has_remote
                and self._stdio_mapping is None):  # fmt: skip
            raise StartupError("no -L or -D port could be bound and there is no -R: nothing to do")
        self._connect()

    def _listen(self, mapping: int, spec: ForwardSpec) -> str | None:
        """Open the local port of an ``-L`` or ``-D``; why it failed, or None."""
        if spec.udp:
            return self._listen_udp(mapping, spec)
        if spec.kind is ForwardKind.DYNAMIC:
            socks = SocksPort(self.reactor, spec.flag, self.config.settings.handshake_timeout,
                              partial(self._on_socks_request, mapping))  # fmt: skip
            on_accept = socks.accept
        else:
            on_accept = partial(self._on_local_accept, mapping)
        try:
            listener = (
                UnixListenerSet(self.reactor, spec.bind_path, on_accept)
                if spec.bind_path is not None
                else ListenerSet(self.reactor, spec.bind_host, spec.bind_port, on_accept)
            )
        except OSError as exc:
            return f"{spec.flag}: cannot listen on {spec.bind}: {describe_error(exc)}"
        if spec.kind is ForwardKind.DYNAMIC:
            self.socks_ports[mapping] = socks
        self.local_listeners[mapping] = listener
        log.info(
            "listening on %s for %s",
            listener.address,
            spec.flag,
            extra=log_event("listening", mapping=spec.flag, address=listener.address),
        )
        return None

    def _listen_udp(self, mapping: int, spec: ForwardSpec) -> str | None:
        try:
            listener = UdpListener(self.reactor, spec.bind_host, spec.bind_port,
                                   partial(self._udp_send, mapping), self,
                                   timeout=self.config.udp_timeout,
                                   totals=self.meter.datagrams,
                                   budget=self._udp_budget)  # fmt: skip
        except OSError as exc:
            return f"{spec.flag}: cannot listen on udp/{spec.bind}: {describe_error(exc)}"
        self.udp_ends[mapping] = listener
        log.info("listening on %s for %s", listener.address, spec.flag,
                 extra=log_event("listening", mapping=spec.flag,
                                 address=listener.address))  # fmt: skip
        return None

    def _forget_remote_udp(self) -> None:
        """A new session (not a resume): the server's -R udp listeners number their
        sources afresh, so the sockets kept for the old numbers must go, or a new
        source would get an old one's replies."""
        for mapping, end in list(self.udp_ends.items()):
            if isinstance(end, UdpConnector):
                end.close()
                del self.udp_ends[mapping]

    def _udp_send(self, mapping: int, association: int, payload: bytes) -> bool:
        channel = self.channel
        return channel is not None and channel.send_datagram(mapping, association, payload)

    def on_datagram(self, channel: Channel, event: DatagramReceived) -> None:
        end = self.udp_ends.get(event.mapping)
        if end is None:  # -R udp: its first datagram makes the connecting end
            spec = self.forward_table.mappings.get(event.mapping)
            if spec is None or not spec.udp or spec.kind is not ForwardKind.REMOTE:
                return
            end = self.udp_ends[event.mapping] = UdpConnector(
                self.reactor, self.resolver, spec.target_host, spec.target_port,
                partial(self._udp_send, event.mapping), self, timeout=self.config.udp_timeout,
                totals=self.meter.datagrams, budget=self._udp_budget,
            )  # fmt: skip
        end.deliver(event.association, event.payload)

    # ------------------------------------------------ forwards added and removed

    @property
    def forwards(self) -> list[ForwardSpec]:
        """The forwards in use, as configured (in the order they were added)."""
        return self.forward_table.specs

    def add_forward(self, spec: ForwardSpec) -> str | None:
        """Start a forward on the running client (reload, ``forward add``): its
        local port opens now and the channel, if up, declares it at once.
        Returns why it could not start, or None."""
        if self._stopped:
            return "shutting down"
        if self.forward_table.find(spec) is not None:
            return f"{spec.flag} is already forwarded"
        mapping = self.forward_table.new_number()
        if spec.kind is not ForwardKind.REMOTE:
            reason = self._listen(mapping, spec)
            if reason is not None:
                return reason
        self.forward_table.add(mapping, spec)
        channel = self.channel
        if channel is not None and not channel.closed:
            self._declare(channel, mapping, spec)
            channel.schedule_flush()
        log.info("%s added", spec.flag, extra=log_event("forward_added", mapping=spec.flag))
        return None

    def remove_forward(self, spec: ForwardSpec) -> bool:
        """Stop a forward (reload, ``forward cancel``): its port closes, the server
        forgets it; streams already open on it carry on to their end."""
        mapping = self.forward_table.find(spec)
        if mapping is None:
            return False
        listener = self.local_listeners.pop(mapping, None)
        if listener is not None:
            if spec.kind is ForwardKind.LOCAL:
                listener.accept_waiting()  # connected already: they get their streams
            listener.close()
        udp = self.udp_ends.pop(mapping, None)
        if udp is not None:
            udp.close()
        removed = self.forward_table.remove(mapping)
        socks = self.socks_ports.pop(mapping, None)
        if socks is not None and spec.kind is ForwardKind.REMOTE:
            # Its streams are open: let them negotiate (those done are dropped here).
            self._retired_socks = [old for old in self._retired_socks if old.negotiations]
            self._retired_socks.append(socks)
        elif socks is not None:
            socks.close()  # -D: a negotiation is not a stream yet, and UNMAP ends the mapping
        self._remote_binds.forget(mapping)
        channel = self.channel
        if channel is not None and not channel.closed:
            channel.cancel_mapping(mapping)
        log.info(
            "%s removed", removed.flag, extra=log_event("forward_removed", mapping=removed.flag)
        )
        return True

    def reconfigure(self, forwards: list[ForwardSpec]) -> Changes:
        """Make ``forwards`` the forwards in use: stop the dropped, start the new,
        leave the rest (and every open stream) alone."""
        changes = Changes()
        for spec in self.forwards:
            if not any(same_forward(spec, wanted) for wanted in forwards):
                self.remove_forward(spec)
                changes.removed.append(spec.flag)
        for spec in forwards:
            if self.forward_table.find(spec) is None:
                reason = self.add_forward(spec)
                if reason is None:
                    changes.added.append(spec.flag)
                else:
                    changes.failed.append(reason)
        return changes

    def _stop_reconnecting(self) -> None:
        self._stopped = True
        if self._retry is not None:
            self._retry.cancel()
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None

    def close(self) -> None:
        self._stop_reconnecting()
        if self._stdio is not None:  # gives standard input and output their flags back
            self._stdio.close()
        if self._cancel_drain is not None:
            self._cancel_drain()
        if self.channel is not None:
            self.channel.close(SHUTTING_DOWN, error=False, code=ErrorCode.SHUTDOWN)
        self._close_listeners()

    @property
    def draining(self) -> bool:
        """Shutting down: nothing may be added."""
        return self._stopped

    def _close_listeners(self) -> None:
        for listener in self.local_listeners.values():
            listener.close()
        self.local_listeners.clear()
        for end in self.udp_ends.values():
            end.close()
        self.udp_ends.clear()
        for socks in [*self.socks_ports.values(), *self._retired_socks]:
            socks.close()

    def drain(self, timeout: float, done: Callable[[], None]) -> None:
        """Stop accepting and reconnecting; call ``done()`` once no stream is open."""
        self._stop_reconnecting()
        self._close_listeners()
        if self.channel is not None:
            if self.channel.suspended:
                self.channel.close(SHUTTING_DOWN, error=False, code=ErrorCode.SHUTDOWN)
            else:
                self.channel.draining = True
        self._cancel_drain = wait_for_streams(
            self.reactor, lambda: [self.channel] if self.channel else [], timeout, done
        )

    # ------------------------------------------------------------ the channel

    def _connect(self) -> None:
        if self._retry is not None:
            self.meter.reconnects += 1
        self._retry = None
        if self._stopped:
            return
        self._attempts += 1
        resuming = self.channel is not None and self.channel.suspended
        self._target = self._resume_target() if resuming else self.config.server
        where = self.server_label
        if self._target != self.config.server:
            where = f"{format_host_port(*self._target)} (advertised by {where})"
        self._target_label = where
        log.log(
            logging.DEBUG if resuming else logging.INFO,  # each retry already says it failed
            "connecting to server %s%s",
            where,
            "" if self.config.proxy is None else f" through proxy {self.config.proxy}",
            extra=log_event("connecting", peer=where),
        )
        proxy = self.config.proxy
        host, port = self._target if proxy is None else (proxy.host, proxy.port)
        self._connector = Connector(
            self.reactor,
            self.resolver,
            host,
            port,
            self._on_connected if proxy is None else self._on_proxy_connected,
            self.config.settings.connect_timeout,
            self,
        ).start()

    def _resume_target(self) -> tuple[str, int]:
        """Where to resume: the address the server advertised and ``--server`` (its
        balancer) in turn, the advertised one first (§9.5)."""
        held = self.channel
        direct = held.resume_at if held is not None and self.config.websocket is None else None
        if direct is None:
            return self.config.server
        self._direct_next = not self._direct_next
        return direct if self._direct_next else self.config.server

    def _on_proxy_connected(self, sock: socket.socket | None, error: Failure | None) -> None:
        """Connected to the proxy: ask it for the server (by name: it resolves)."""
        proxy = self.config.proxy
        assert proxy is not None
        self._connector = None
        if sock is None:
            self._schedule_reconnect(f"cannot connect to proxy {proxy}: {error}")
            return
        host, port = self._target
        self._connector = ProxyHandshake(self.reactor, sock, Dialogue(proxy, host, port),
                                         self.config.settings.connect_timeout, self._on_proxied,
                                         self)  # fmt: skip

    def _on_proxied(self, sock: socket.socket | None, failure: ProxyFailure | None) -> None:
        self._connector = None
        if sock is not None:
            self._on_connected(sock, None)
            return
        assert failure is not None
        if failure.verdict is Verdict.REFUSED and not self.config.persist:
            line = f"{failure.text}; not retrying ({self.config.persist_option} keeps trying)"
            self._give_up(line, "proxy_refused", failure.text, Ending.UNUSABLE)
            return
        self._schedule_reconnect(failure.text)

    def _on_connected(self, sock: socket.socket | None, error: Failure | None) -> None:
        self._connector = None
        if sock is None:
            self._schedule_reconnect(f"cannot connect to server {self._target_label}: {error}")
            return
        held = self.channel
        if held is not None and held.suspended and not held.closed and not held.resumable:
            held.close(f"resume abandoned: {held.resume_lost or 'the session ended'}",
                       code=ErrorCode.RESUME_EXPIRED)  # fmt: skip
            held = self.channel  # on_channel_closed forgot it
            if self._retry is not None:  # and scheduled a connection: this one serves
                self._retry.cancel()
                self._retry = None
        if held is not None and held.suspended and not held.closed:
            log.info("connected to server %s: resuming the session",
                     self._target_label)  # fmt: skip
            held.attach(self._transport(sock), _peer_label(sock))
            return
        self._forget_remote_udp()
        self._direct_next = False
        settings = self.config.settings
        if self._server_cannot_resume:
            settings = replace(settings, resume_timeout=0.0,
                               session=replace(settings.session, resume=False))  # fmt: skip
        channel = Channel(
            self.reactor,
            self.resolver,
            self._transport(sock),
            Role.CLIENT,
            self,
            f"channel to {self.server_label}",
            settings,
            client_id=self.client_id,
            peer=_peer_label(sock),
        )
        for mapping, spec in self.forward_table.mappings.items():
            self._declare(channel, mapping, spec)
        if self._stdio_mapping is not None and self._stdio is None:
            assert self.config.stdio_target is not None
            channel.request_connect(self._stdio_mapping, *self.config.stdio_target)
        self.forward_table.channel_opened()
        self.channel = channel
        channel.start()

    def _declare(self, channel: Channel, mapping: int, spec: ForwardSpec) -> None:
        """CONNECT, DYNAMIC or BIND for one forward (an ``-L`` or ``-D`` only if its
        local port is open: without one, no stream can use it)."""
        if spec.kind is ForwardKind.LOCAL and spec.udp and mapping in self.udp_ends:
            channel.request_udp(mapping, spec.target_host, spec.target_port, bind=False)
        elif spec.kind is ForwardKind.LOCAL and mapping in self.local_listeners:
            if spec.target_path is not None:
                channel.request_connect_unix(mapping, spec.target_path)
            else:
                channel.request_connect(mapping, spec.target_host, spec.target_port)
        elif spec.kind is ForwardKind.DYNAMIC and mapping in self.local_listeners:
            channel.request_dynamic(mapping)
        elif spec.kind is ForwardKind.REMOTE:
            self._request_bind(channel, mapping, spec)
        else:
            return
        self.forward_table.asked(mapping)

    def _transport(self, sock: socket.socket) -> Transport:
        """TCP or TLS to the server, and a WebSocket on it where the URL says so."""
        below = self._tcp_or_tls(sock)
        websocket = self.config.websocket
        if websocket is None:
            return below
        return WebSocketTransport(self.reactor, below, client=True,
                                  host=websocket.host_header, path=websocket.path)  # fmt: skip

    def _tcp_or_tls(self, sock: socket.socket) -> Transport:
        settings, tls = self.config.settings, self.config.tls
        if tls is None:
            if settings.session.credentials is not None and not self._warned_plaintext:
                try:
                    peer: str | None = sock.getpeername()[0]
                except OSError:  # reset already (a busy server): the next connection checks
                    peer = None
                if peer is not None and not is_loopback(peer):
                    self._warned_plaintext = True
                    log.warning("authenticating to %s without TLS: the secret stays secret, but "
                                "the forwarded data is not encrypted (use --tls)",
                                self.server_label)  # fmt: skip
            return TcpTransport(self.reactor, sock, settings.keepalive_interval)
        if tls.insecure:
            log.warning("TLS to %s without verifying the server (--tls-insecure): anyone on "
                        "the path can pose as it", self.server_label)  # fmt: skip
        name = tls.server_name or self.config.server[0]
        held = self.channel  # resuming: the server's workers route by the hint (not over ws)
        session = held.session_id if held is not None and held.suspended else None
        direct = self.config.websocket is None
        hint = alpn_hint(session) if session is not None and direct else None
        return TlsTransport(self.reactor, sock, settings.keepalive_interval, tls.context,
                            server_side=False, server_hostname=name,
                            fingerprint=tls.fingerprint, route_hint=hint)  # fmt: skip

    def close_after_bug(self) -> None:
        """A bug while connecting to the server or setting up its channel: drop
        this attempt and retry (a channel that is up owns its own callbacks)."""
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self.channel is not None and not self.channel.ready:
            self.channel.close("internal error", code=ErrorCode.INTERNAL)  # a retry follows
        elif self.channel is None and self._retry is None:
            self._schedule_reconnect("internal error while connecting")

    def _may_attempt(self) -> bool:
        """No attempt is under way or due, and we are not shutting down."""
        return not self._stopped and self._connector is None and self._retry is None

    def _connect_now(self) -> None:
        """Reconnect without a delay or a log line (the caller logged why)."""
        if self._may_attempt():
            self._retry = self.reactor.call_later(0.0, self._connect, self)

    def _schedule_reconnect(
        self,
        reason: str,
        *,
        orderly: bool = False,
        immediate: bool = False,
        soon: bool = False,
        event: str | None = None,
    ) -> None:
        """Connect again when the reconnect policy says, with the log line it chooses
        (the options are the policy's: ``soon``, the server was only busy, and so on;
        ``event`` names the line where it says more than that the channel is down)."""
        if not self._may_attempt():
            return
        limit = self.config.connect_attempts
        if limit is not None and self._attempts >= limit:
            line = (f"{reason}; giving up after {self._attempts} connection attempt(s) "
                    f"(--connect-attempts {limit})")  # fmt: skip
            self._give_up(line, "attempts_exhausted", reason, Ending.UNREACHABLE)
            return
        channel = self.channel
        attempt = self._reconnect.next_attempt(
            reason,
            resuming=channel is not None and channel.suspended,
            orderly=orderly,
            immediate=immediate,
            soon=soon,
        )
        log.log(
            attempt.level,
            "%s; reconnecting in %.1fs",
            attempt.reason,
            attempt.delay,
            extra=log_event(
                event or attempt.event,
                peer=self.server_label,
                reason=attempt.reason,
                delay=round(attempt.delay, 3),
            ),
        )
        self._retry = self.reactor.call_later(attempt.delay, self._connect, self)

    def _on_local_accept(self, mapping: int, sock: socket.socket, peer: PeerAddress) -> None:
        channel = self.channel
        spec = self.forward_table.mappings.get(mapping)
        if spec is None:  # removed while the connection waited to be accepted
            abort_socket(sock)
            return
        refused = self.forward_table.is_refused(mapping)
        if channel is None or not channel.accepting or refused:
            why = "the server refused this forward" if refused else (
                "no channel to the server")  # fmt: skip
            log.debug("%s: connection from %s reset: %s", spec.flag,
                      format_host_port(peer[0], peer[1]), why)  # fmt: skip
            abort_socket(sock)
            return
        channel.open_stream(mapping, sock, f"{spec.flag} from {format_host_port(peer[0], peer[1])}")

    def _on_socks_request(
        self, mapping: int, sock: socket.socket, request: SocksRequest, hook: SocksOpenHook
    ) -> None:
        channel = self.channel
        spec = self.forward_table.mappings.get(mapping)
        if spec is None:  # removed while the client negotiated
            hook.reply_failure(sock, FailureClass.FAILED)
            sock.close()
            return
        target = format_host_port(request.host, request.port)
        label = f"{spec.flag} from {_peer_label(sock)} to {target}"
        refused = self.forward_table.is_refused(mapping)
        if channel is None or refused or not channel.can_open_stream():
            log.info("%s: refused: no channel to the server", label,
                     extra=log_event("stream_refused", mapping=spec.flag, peer=target,
                                     reason="no channel to the server"))  # fmt: skip
            hook.reply_failure(sock, FailureClass.FAILED)
            sock.close()
            return
        channel.open_stream(mapping, sock, label, target=(request.host, request.port),
                            on_open=hook)  # fmt: skip

    # ----------------------------------------------------------- ChannelOwner

    def target_for(
        self, channel: Channel, mapping: int, requested: tuple[str, int] | None
    ) -> tuple[str, int] | LocalService | Failure | None:
        spec = self.forward_table.mappings.get(mapping)
        if spec is None or spec.kind is not ForwardKind.REMOTE:
            return None
        if spec.dynamic:
            return LocalService("SOCKS", partial(self._reverse_socks, mapping))
        if spec.target_path is not None:
            return LocalService(spec.target_path, partial(connect_unix, spec.target_path))
        return spec.target_host, spec.target_port

    def _reverse_socks(self, mapping: int) -> socket.socket:
        """A stream on a reverse dynamic ``-R``: one end of a loopback pair carries it,
        the other is served by our SOCKS negotiation and then spliced to the target
        (a reset at either end reaches the other, as with any forwarded connection)."""
        stream_end, socks_end = loopback_pair()
        spec = self.forward_table.mappings[mapping]
        self._reverse_socks_port(mapping).negotiate(socks_end, spec.flag)
        return stream_end

    def _reverse_socks_port(self, mapping: int) -> SocksPort:
        socks = self.socks_ports.get(mapping)
        if socks is None:
            spec = self.forward_table.mappings[mapping]
            socks = SocksPort(self.reactor, spec.flag, self.config.settings.handshake_timeout,
                              partial(self._on_reverse_socks_request, spec))  # fmt: skip
            self.socks_ports[mapping] = socks
        return socks

    def _on_reverse_socks_request(
        self, spec: ForwardSpec, sock: socket.socket, request: SocksRequest, hook: SocksOpenHook
    ) -> None:
        LocalConnect(self.reactor, self.resolver, sock, request, hook,
                     self.config.settings.connect_timeout, spec.flag)  # fmt: skip

    def metric_label(self, channel: Channel, mapping: int) -> str:
        return self.mapping_label(channel, mapping)  # the user's own forwards: a few

    def mapping_label(self, channel: Channel, mapping: int) -> str:
        spec = self.forward_table.mappings.get(mapping)
        if spec is None and mapping == self._stdio_mapping:
            return self._stdio_label
        return spec.flag if spec is not None else f"mapping {mapping}"

    @property
    def _stdio_label(self) -> str:
        assert self.config.stdio_target is not None
        return f"-W {format_host_port(*self.config.stdio_target)}"

    def check_resolved(self, channel: Channel, name: str, address: str, port: int) -> str | None:
        return None  # the client connects only to the targets it was given itself

    def on_hello(self, channel: Channel, event: HelloReceived) -> None:
        self._reconnect.channel_up()
        self._attempts = 0
        log.info(
            "connected to server %s",
            self.server_label,
            extra=log_event("channel_up", channel=channel.name, peer=channel.peer),
        )

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> MappingAnswer:
        raise AssertionError("the session never reports mapping requests to a client")

    def on_resume_requested(self, channel: Channel, event: ResumeRequested) -> None:
        raise AssertionError("the session never reports resume requests to a client")

    def on_resume_proved(self, channel: Channel, event: ResumeProved) -> None:
        raise AssertionError("the session never reports resume proofs to a client")

    def on_channel_suspended(self, channel: Channel, reason: str, first: bool) -> None:
        if channel is not self.channel:
            return
        if not first:
            self._schedule_reconnect(f"resuming on {self.server_label} failed: {reason}")
            return
        self._reconnect.channel_suspended()
        log.debug("client %s resumes session %s", self.client_id, channel.session_id)
        log.warning("channel to %s lost: %s; keeping %d stream(s) for %gs while reconnecting "
                    "to resume them", self.server_label, reason, len(channel.streams),
                    self.config.settings.resume_timeout,
                    extra=log_event("channel_suspended", channel=channel.name,
                                    peer=self.server_label, reason=reason))  # fmt: skip
        self._connect_now()

    def on_channel_resumed(self, channel: Channel, event: SessionResumed) -> None:
        self._reconnect.channel_resumed()
        self._attempts = 0
        log.info("resumed the session with server %s: %d stream(s) carry on, %d byte(s) sent "
                 "again", self.server_label, event.streams, event.replayed,
                 extra=log_event("channel_resumed", channel=channel.name,
                                 peer=channel.peer))  # fmt: skip

    def on_mapping_cancelled(self, channel: Channel, event: MappingCancelled) -> None:
        raise AssertionError("the session never reports UNMAP to a client")

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None:
        if event.mapping == self._stdio_mapping:
            self._open_stdio(channel)
            return
        spec = self.forward_table.mappings[event.mapping]
        granted: tuple[str, int] | str | None = event.path
        if event.host is not None and event.port is not None:
            # "localhost" is both loopback addresses; status names the first of them.
            host = LOCALHOST_ADDRESS if event.host == LOCALHOST else event.host
            granted = (host, event.port)
        self.forward_table.forwarding(event.mapping, granted)
        up = log_event("forward_up", mapping=spec.flag)
        udp_end = self.udp_ends.get(event.mapping)
        if spec.kind is not ForwardKind.REMOTE and isinstance(udp_end, UdpListener):
            bound = udp_end.address
            up = log_event("forward_up", mapping=spec.flag, address=bound)
            log.info("forwarding -L %s -> udp/%s", bound, spec.target, extra=up)
        elif spec.kind is not ForwardKind.REMOTE:
            listener = self.local_listeners.get(event.mapping)
            if listener is not None:
                bound = (
                    listener.address
                    if spec.bind_path
                    else format_host_port(listener.host, listener.port)
                )
                target = "SOCKS4/4a/5" if spec.dynamic else spec.target
                up = log_event("forward_up", mapping=spec.flag, address=listener.address)
                log.info("forwarding -%s %s -> %s", spec.kind.value, bound, target, extra=up)
        elif event.path is not None:
            target = "SOCKS4/4a/5" if spec.dynamic else spec.target
            up = log_event("forward_up", mapping=spec.flag, address=event.path)
            log.info("forwarding -R %s -> %s", event.path, target, extra=up)
        else:
            assert event.host is not None and event.port is not None
            hosts = LOOPBACK_PAIR if event.host == LOCALHOST else (event.host,)
            kind = "udp/" if spec.udp else ""
            before = self._remote_binds.accepted(event.mapping, spec, event.port)
            if before is not None:
                log.warning("%s: listening on port %d now (it had %d)",
                            spec.flag, event.port, before,
                            extra=log_event("forward_port_changed", mapping=spec.flag,
                                            address=kind + format_host_port(hosts[0],
                                                                     event.port)))  # fmt: skip
            bound = " and ".join(kind + format_host_port(host, event.port) for host in hosts)
            target = "SOCKS4/4a/5" if spec.dynamic else kind + spec.target
            up = log_event("forward_up", mapping=spec.flag, address=bound)
            log.info("forwarding -R %s -> %s", bound, target, extra=up)
        self._tell_if_all_up()

    def _open_stdio(self, channel: Channel) -> None:
        """``-W``: its one stream, fed by standard input and feeding standard output."""
        if self._stdio is not None:  # a new channel after a loss: the stream is gone
            return
        assert self._stdio_mapping is not None
        stream_end, bridge_end = loopback_pair()
        try:
            self._stdio = StdioBridge(self.reactor, bridge_end, self._stdio_done)
        except OSError as exc:  # a descriptor epoll refuses for another reason
            stream_end.close()
            bridge_end.close()
            self._stdio_failed(f"cannot use standard input and output: {describe_error(exc)}")
            return
        channel.open_stream(self._stdio_mapping, stream_end, self._stdio_label,
                            on_open=_StdioOpened(self._stdio_failed))  # fmt: skip

    def _stdio_failed(self, why: str) -> None:
        if self._stdio is not None:
            self._stdio.close()
        self._give_up(f"{self._stdio_label} {why}", "stdio_failed", why, Ending.STDIO)

    def _stdio_done(self, clean: bool) -> None:
        """Both directions of ``-W`` are over: 0 when they ended, 255 after a reset."""
        if not clean:
            log.error("%s: the connection was reset", self._stdio_label,
                      extra=log_event("stdio_failed", reason="reset"))  # fmt: skip
        self._exit(0 if clean else GAVE_UP_STATUS)

    def _tell_if_all_up(self) -> None:
        """The first time every forward is up: start-up is over (``-f``'s parent may
        go, ``--exit-on-forward-failure`` no longer applies)."""
        if self._started_up or not self.forward_table.all_forwarding():
            return
        self._started_up = True
        if self.config.on_forwards_up is not None:
            self.config.on_forwards_up()

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None:
        if event.mapping == self._stdio_mapping:
            self._stdio_failed(f"refused by server: {text_of(event.reason)}")
            return
        spec = self.forward_table.mappings[event.mapping]
        why = text_of(event.reason)  # for people; the decision reads its class
        refused = log_event("forward_refused", mapping=spec.flag, reason=why)
        self.forward_table.refused(event.mapping, why)
        asked = self.config.exit_on_forward_failure
        if (
            asked is not None and not self._started_up and not self.forward_table.added_later(spec)
        ):  # ssh's ExitOnForwardFailure: start-up's forwards; later the -R is asked again
            line = f"{spec.flag} refused by server: {why}; exiting ({asked})"
            log.error("%s", line, extra=refused)
            self.gave_up = GaveUp(Ending.FORWARD_FAILED, line)
            self._exit(1)
            return
        if spec.kind is not ForwardKind.REMOTE:
            self.forward_table.not_asked_again(event.mapping)
            log.error("%s refused by server: %s", spec.flag, why, extra=refused)
            return
        again = self._remote_binds.refused(event.mapping, spec, class_of(event.reason))
        if again is None:
            self.forward_table.not_asked_again(event.mapping)
            log.error(
                "%s refused by server: %s (not asked again: the server's settings decide this)",
                spec.flag,
                why,
                extra=refused,
            )
            return
        if again.taken_port is not None:
            log.warning("%s: port %d, which it had before, is not free (%s); asking for any port",
                        spec.flag, again.taken_port, why,
                        extra=log_event("forward_port_taken", mapping=spec.flag,
                                        reason=why))  # fmt: skip
            self._rebind(channel, event.mapping)
            return
        log.error(
            "%s refused by server: %s; asking again in %.1fs",
            spec.flag,
            why,
            again.delay,
            extra={**refused, "delay": round(again.delay, 3)},
        )
        self._remote_binds.ask_later(
            event.mapping, again.delay, partial(self._rebind, channel, event.mapping)
        )

    def _request_bind(self, channel: Channel, mapping: int, spec: ForwardSpec) -> None:
        """BIND for ``spec``; an ``-R 0`` asks for the port it had on the last channel."""
        if spec.bind_path is not None:
            channel.request_bind_unix(mapping, spec.bind_path)
            return
        port = self._remote_binds.port_to_ask(mapping, spec)
        if spec.udp:
            channel.request_udp(mapping, spec.bind_host, port, bind=True)
            return
        channel.request_bind(mapping, spec.bind_host, port)

    def _rebind(self, channel: Channel, old: int) -> None:
        """Ask again for a refused -R, under a new mapping number, on the same channel."""
        if channel is not self.channel or channel.closed:
            return  # a new channel declares every mapping anyway
        mapping = self.forward_table.renumber(old)
        spec = self.forward_table.mappings[mapping]
        socks = self.socks_ports.pop(old, None)
        if socks is not None:  # a reverse dynamic -R keeps its one SOCKS server
            self.socks_ports[mapping] = socks
        self._request_bind(channel, mapping, spec)
        self.forward_table.asked(mapping, again=True)
        channel.schedule_flush()

    def _exit(self, status: int) -> None:
        self.exit_status = status
        self._stop_reconnecting()
        self.reactor.stop()

    def _give_up(self, line: str, event: str, reason: str, ending: Ending) -> None:
        """Say ``line`` as the one error of the outcome and exit with GAVE_UP_STATUS."""
        log.error("%s", line, extra=log_event(event, peer=self.server_label, reason=reason))
        self.gave_up = GaveUp(ending, line)
        self._exit(GAVE_UP_STATUS)

    def _pin_hint(self) -> str:
        """After we refused the server's certificate without a pin: the fingerprint to
        pin if it is self-signed (ssh shows the key it was not told to trust)."""
        tls = self.config.tls
        if tls is None or tls.fingerprint is not None:
            return ""
        pin = self_signed_fingerprint(*self.config.server, self.config.settings.connect_timeout)
        if pin is None:
            return ""
        return (f"; to trust this self-signed certificate, check that the server's keygen "
                f"printed the same fingerprint and give --tls-fingerprint {pin}")  # fmt: skip

    def _server_unusable(self, channel: Channel, reason: str) -> str:
        """The line that says why the server cannot be used as configured."""
        server = self.server_label
        match channel.close_code:
            case ErrorCode.AUTH_FAILED if channel.closed_by_peer:
                why = f"server {server} refused this client: {reason}"
            case ErrorCode.AUTH_FAILED if channel.heard_hello:  # its proof of the secret
                why = f"cannot authenticate server {server}: {reason}"
            case ErrorCode.AUTH_FAILED:  # we refused its certificate in the TLS handshake
                why = f"cannot authenticate server {server}: {reason}{self._pin_hint()}"
            case ErrorCode.REVOKED:
                why = f"server {server} no longer accepts this client: {reason}"
            case ErrorCode.NOT_A_PEER:
                why = f"{server} is {reason}"
            case ErrorCode.TLS if self.config.websocket and not self.config.websocket.secure:
                why = f"server {server}: {reason}; for TLS under the WebSocket write wss://"
            case ErrorCode.TLS:
                why = f"server {server}: {reason}"
            case _:
                why = f"server {server} refused the handshake: {reason}"
        return f"{why}; not retrying ({self.config.persist_option} keeps trying)"

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None:
        why = text_of(reason)
        refused = channel.stream_event("stream_refused", stream, why)
        log.warning("%s: the server refused it: %s", stream.label, why, extra=refused)

    def on_channel_closed(self, channel: Channel, reason: str) -> None:
        if channel is not self.channel:
            return
        self.channel = None
        self.forward_table.channel_closed()
        self._remote_binds.channel_closed()
        self._reconnect.channel_closed(channel.close_code)
        if not self.config.persist and retry_cannot_help(channel.close_code, channel.heard_hello):
            refused = channel.close_code in (ErrorCode.AUTH_FAILED, ErrorCode.REVOKED)
            event = "auth_failed" if channel.auth_failed else "server_unusable"
            self._give_up(self._server_unusable(channel, reason), event, reason,
                          Ending.REFUSED if refused else Ending.UNUSABLE)  # fmt: skip
            return
        lost = f"channel to {self.server_label} lost: {reason}"
        match channel.close_code:
            case ErrorCode.AUTH_FAILED:  # --persist: one line says it and when it retries
                who = (f"server {self.server_label} refused this client"
                       if channel.closed_by_peer
                       else f"cannot authenticate server {self.server_label}")  # fmt: skip
                self._schedule_reconnect(f"{who}: {reason}", event="auth_failed")
            case ErrorCode.UNSUPPORTED if not self._server_cannot_resume:
                self._server_cannot_resume = True
                log.warning("server %s is older than resume (it refused the HELLO that offers "
                            "it): connecting without resume; upgrade it to keep streams through "
                            "a broken channel", self.server_label,
                            extra=log_event("resume_unsupported", peer=self.server_label,
                                            reason=reason))  # fmt: skip
                self._schedule_reconnect(reason, orderly=True, immediate=True)
            case ErrorCode.SHUTDOWN if channel.peer_shut_down:
                self._schedule_reconnect(reason, orderly=True)
            case ErrorCode.BUSY:
                self._schedule_reconnect(f"server {self.server_label} is busy: {reason}",
                                         soon=True)  # fmt: skip
            case ErrorCode.RESUME_REFUSED | ErrorCode.RESUME_EXPIRED:
                log.warning("%s: %d stream(s) reset; starting a new session", reason,
                            channel.streams_reset_on_close,
                            extra=log_event("resume_failed", peer=self.server_label,
                                            reason=reason))  # fmt: skip
                self._connect_now()
            case ErrorCode.NOT_A_PEER:
                self._schedule_reconnect(f"{self.server_label} is {reason}")
            case ErrorCode.NO_ANSWER:
                self._schedule_reconnect(
                    f"{lost}, though a reactor-mux server says HELLO at "
                    "once: is it stopped, or not a reactor-mux server?"
                )
            case ErrorCode.PEER_CLOSED | ErrorCode.TLS if (
                not channel.heard_hello and not channel.closed_by_peer
            ):
                self._schedule_reconnect(
                    f"server {self.server_label} closed the connection before its HELLO "
                    f"({reason}): it may be turning this address away for a while (see its "
                    "log, and its --per-source-penalties), or it is not a reactor-mux server"
                )
            case _:
                self._schedule_reconnect(lost)


class _StdioOpened:
    """The server's answer to ``-W``'s stream: a refusal ends the client (255)."""

    def __init__(self, failed: Callable[[str], None]) -> None:
        self._failed = failed

    def accepted(self, sock: socket.socket) -> bytes | None:
        return b""

    def refused(self, sock: socket.socket, reason: str) -> None:
        self._failed(f"failed: {text_of(reason)}")


def _peer_label(sock: socket.socket) -> str:
    try:
        peer = sock.getpeername()
    except OSError:
        return "?"
    return format_host_port(peer[0], peer[1])
