"""The server role (the demultiplexer).

It accepts channels on its ``--listen`` addresses (over TLS when given a
certificate) and serves each one independently, once it has authenticated
(when a secret or a clients file is configured): a CONNECT (``-L``) records
the target its streams connect to, a BIND (``-R``) opens a listener whose
connections become streams toward the client.  Everything a channel created
(its ``-R`` listeners, its streams, its pending connects) dies with it, so a
client that reconnects finds its ports free.  A client that reconnects before
its old channel was noticed dead (a network cut TCP has not seen yet)
presents the same client id in HELLO; the old channel is then closed at
once, before the new one's BINDs are processed, so a stale listener never
blocks the reconnect, but only when the new channel authenticated as the
same client.

What a client may reach (``--allow-connect``) and open (``--allow-bind``)
is checked here, with its own lists from the clients file when it has them.

Until a connection has authenticated it is a *startup*, admitted or turned
away at accept by ``admission`` (``--max-startups`` and the per-source limits
and penalties); only authenticated channels count against
``--max-channels``, and a resume takes back its own suspended slot, so no
number of strangers can keep a client, or its resume, out.  A startup that
fails (authentication, a timeout, a protocol error, a TLS handshake) earns its
source block a penalty; what is turned away is logged in summaries
(``turnedaway``), never a line per connection.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

from reactor_mux.errors import StartupError
from reactor_mux.io import fdlimit
from reactor_mux.io import plane as data_plane
from reactor_mux.io.listener import ListenerSet, UnixListenerSet
from reactor_mux.io.netutil import LOOPBACK_PAIR, PeerAddress, connect_unix, describe_error
from reactor_mux.io.proxyreader import ProxyHeaderReader
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.io.routereader import RouteReader
from reactor_mux.io.tls import ServerTls, TlsTransport
from reactor_mux.io.transport import TcpTransport, Transport
from reactor_mux.io.websocket import Sniffer
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.auth import SHARED_NAME, SecretBook, SharedSecret
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.events import (
    DatagramReceived,
    HelloReceived,
    MappingAccepted,
    MappingCancelled,
    MappingKind,
    MappingRefused,
    MappingRequested,
    ResumeProved,
    ResumeRequested,
    SessionResumed,
)
from reactor_mux.protocol.failures import Failure, FailureClass, text_of
from reactor_mux.protocol.proxyheader import ProxyHeader, unmapped
from reactor_mux.protocol.routehint import Route
from reactor_mux.protocol.syntax import (
    LOCALHOST,
    format_host_port,
    is_loopback,
    listening_address,
)
from reactor_mux.protocol.verbs import Role
from reactor_mux.security.admission import AdmissionConfig, Network, Startup, in_networks
from reactor_mux.security.credentials import ClientEntry, ClientsFile
from reactor_mux.security.penalties import Offence
from reactor_mux.security.policy import Policy
from reactor_mux.security.startupgate import StartupGate
from reactor_mux.tunnel.channel import (
    SHUTTING_DOWN,
    Channel,
    LocalService,
    MappingAnswer,
    MappingDenied,
    MappingGranted,
)
from reactor_mux.tunnel.drain import wait_for_streams
from reactor_mux.tunnel.localstream import LocalStream
from reactor_mux.tunnel.meter import Meter
from reactor_mux.tunnel.settings import DEFAULT_DRAIN_TIMEOUT, ChannelSettings
from reactor_mux.tunnel.udp import DEFAULT_UDP_TIMEOUT, UdpBudget, UdpConnector, UdpListener

if TYPE_CHECKING:
    from reactor_mux.roles.cluster import Cluster

log = logging.getLogger("reactor_mux")

UNKNOWN_SESSION = "unknown session (the server restarted, or its --resume-timeout passed)"
"""Why a resume is refused for a session this server does not hold: the likely causes."""
ANOTHER_WORKER = "the session is held by worker {}: connect again"
ANOTHER_NODE = "the session is held by node {}: connect to it, or again"
"""Why a resume that landed in the wrong worker (no route hint) is turned away as
busy: every client, older ones too, retries a busy server with its session kept."""

DEFAULT_MAX_CHANNELS = 64
"""Authenticated channels (clients), live or waiting for a resume, served at once;
one more gets ERROR at its HELLO and is closed."""


@dataclass
class ServerConfig:
    listen: list[tuple[str, int]]
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    gateway_ports: bool = False
    max_channels: int = DEFAULT_MAX_CHANNELS
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    policy: Policy = field(default_factory=Policy)
    """The global allow-lists."""
    clients: ClientsFile | None = None
    """Named clients, each with its secret and maybe its own allow-lists."""
    tls: ServerTls | None = None
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    websocket_path: str | None = None
    """``--ws-path``: where an HTTP upgrade becomes a channel (None: no WebSocket)."""
    udp_timeout: float = DEFAULT_UDP_TIMEOUT
    """``--udp-timeout``: seconds a UDP association lives without a datagram."""
    node_id: int | None = None
    """``--node-id``: this host among several that share clients (it is in every
    session id, so another host can say ``elsewhere``)."""
    advertise: tuple[str, int] | None = None
    """``--advertise``: where clients reach this host directly, to resume."""
    proxy_protocol_from: tuple[Network, ...] = ()
    """``--proxy-protocol-from``: load balancers whose connections start with a PROXY
    protocol header naming the client (and must)."""

    @property
    def authenticates(self) -> bool:
        """Some proof of identity is required of every client."""
        tls_clients = self.tls is not None and self.tls.requires_client_certificate
        return self.settings.session.secret_book is not None or tls_clients


def _clients_changed(old: ClientsFile | None, new: ClientsFile | None) -> list[str]:
    """The named clients a reload added, removed, or gave a new secret or allow-lists."""
    before = old.entries if old is not None else {}
    after = new.entries if new is not None else {}
    changes = [f"added client {name!r}" for name in sorted(after.keys() - before.keys())]
    changes += [f"removed client {name!r}" for name in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        if before[name].secret != after[name].secret:
            changes.append(f"new secret for client {name!r}")
        if _allow_lists(before[name]) != _allow_lists(after[name]):
            changes.append(f"new allow-lists for client {name!r}")
    return changes


def _shared_secret(book: SecretBook | None) -> bytes | None:
    return book.secret_for(SHARED_NAME) if book is not None else None


def _allow_lists(entry: ClientEntry) -> tuple[object, ...]:
    return tuple(None if rules is None else (rules.patterns, rules.restrictive)
                 for rules in (entry.connect, entry.bind))  # fmt: skip


def _revoked(name: str | None, old: SecretBook | None, new: SecretBook | None) -> str | None:
    """Why a channel that authenticated as ``name`` under ``old`` may not stay open
    under ``new`` (its client was removed, or its secret changed), or None."""
    if name is None or old is None or new is None:
        return None  # it never authenticated, or authentication is now off
    before, after = old.secret_for(name), new.secret_for(name)
    if after is None:
        return f"client {name!r} is no longer known (reload)"
    if after != before:
        return f"the secret of client {name!r} changed (reload)"
    return None


@dataclass(frozen=True)
class Permissions:
    """What a reload may change on a running server: who may connect and what each
    client may do.  Addresses, TLS and limits need a restart."""

    policy: Policy
    clients: ClientsFile | None
    secret_book: SecretBook | None
    gateway_ports: bool
    max_channels: int
    admission: AdmissionConfig


@dataclass(frozen=True)
class Claim:
    """What a ``-R`` asks for: a TCP or UDP port, or a Unix socket path."""

    kind: str
    """``tcp``, ``udp`` or ``path``."""
    where: int | str

    def held_by(self, end: ListenerSet | UdpListener | UdpConnector) -> bool:
        if self.kind == "udp":
            return isinstance(end, UdpListener) and end.port == self.where
        if not isinstance(end, ListenerSet):
            return False
        if self.kind == "path":
            return end.path == self.where
        return end.path is None and end.port == self.where

    @classmethod
    def from_words(cls, kind: object, where: object) -> Claim | None:
        """A claim a sibling worker sent, checked."""
        if kind in ("tcp", "udp") and isinstance(where, int) and 0 < where < 65536:
            return cls(str(kind), where)
        if kind == "path" and isinstance(where, str):
            return cls(kind, where)
        return None

    def __str__(self) -> str:
        return str(self.where) if self.kind == "path" else f"{self.kind} port {self.where}"


@dataclass(frozen=True)
class _Identity:
    """Who a client is, as strongly as the server can tell (``_release_for``)."""

    certificate: bytes | None
    name: str | None
    peer_host: str

    def words(self) -> list[str | None]:
        """For a sibling worker: the certificate as its SHA-256 (a message is small)."""
        return [_digest(self.certificate), self.name, self.peer_host]

    def same_certificate(self, certificate: bytes | None, digest: bool) -> bool:
        if digest:  # ours came from a sibling as a digest
            return _digest(certificate) == (self.certificate.decode() if self.certificate
                                            else None)  # fmt: skip
        return certificate == self.certificate


def _digest(certificate: bytes | None) -> str | None:
    return hashlib.sha256(certificate).hexdigest() if certificate is not None else None


@dataclass
class _ClientState:
    """What one channel set up on this server."""

    peer_host: str
    startup: Startup | None = None
    """Admission's record while the channel has not authenticated (None after)."""
    client_id: str | None = None
    client_name: str | None = None
    policy: Policy = field(default_factory=Policy)
    targets: dict[int, tuple[str, int] | str] = field(default_factory=dict)
    """The client's ``-L`` mappings: ``host, port``, or the path of a Unix socket."""
    dynamic: set[int] = field(default_factory=set)
    """The client's ``-D`` mappings: each stream names its target."""
    binds: dict[int, ListenerSet] = field(default_factory=dict)
    udp: dict[int, UdpListener | UdpConnector] = field(default_factory=dict)
    udp_budget: UdpBudget = field(default_factory=UdpBudget)
    """What the channel's UDP forwards share: MAX_CHANNEL_ASSOCIATIONS in all."""
    """The client's UDP mappings: the connector of ``-L udp:``, the listener of ``-R
    udp:``."""
    certificate: bytes | None = None
    """The client's TLS certificate (mutual TLS): a resume must present the same."""


class Server:
    exit_status = 0
    """What the process exits with once the reactor stops."""

    def __init__(self, reactor: Reactor, resolver: Resolver, config: ServerConfig,
                 cluster: Cluster | None = None) -> None:  # fmt: skip
        self.reactor = reactor
        self.resolver = resolver
        self.cluster = cluster
        """Its siblings when it is one of ``--workers`` (roles/cluster.py)."""
        self.node = config.node_id
        """This host's ``--node-id`` (None: it shares no clients with other hosts)."""
        route = cluster.route if cluster is not None else (
            Route(config.node_id, 0) if config.node_id is not None else None)  # fmt: skip
        if route is not None or config.advertise is not None:
            where = format_host_port(*config.advertise) if config.advertise else ""
            session = replace(config.settings.session, advertise=where,
                              session_route=route.hex if route is not None else "")  # fmt: skip
            config = replace(config, settings=replace(config.settings, session=session))
        self.config = config
        self.listeners: list[ListenerSet] = []
        self.clients: dict[Channel, _ClientState] = {}
        self._authenticated_channels = 0
        """Channels in ``clients`` that authenticated (live and suspended)."""
        self.meter = Meter()
        self.started_at = reactor.time()
        self._by_client_id: dict[tuple[str | None, str], Channel] = {}
        self._sessions: dict[str, Channel] = {}
        """Resumable sessions by id: live channels and suspended ones alike."""
        siblings = cluster if cluster is not None and cluster.count > 1 else None
        self.gate = StartupGate(reactor, config.admission, self.meter,
                                keepalive_interval=config.settings.keepalive_interval,
                                shared=siblings)  # fmt: skip
        if cluster is not None:
            self.gate.on_penalty = self._tell_penalty
        self._accepted = 0
        self._proxied: set[ProxyHeaderReader] = set()
        """Connections from a balancer still sending their PROXY header."""
        self._routing: set[RouteReader] = set()
        """Connections still naming their route (with ``--workers``)."""
        self._draining = False
        self._cancel_drain: Callable[[], None] | None = None

    def start(self) -> None:
        """Bind every ``--listen`` address; raises StartupError if one cannot be bound."""
        before, after = fdlimit.raise_to_hard()  # before anything takes a descriptor
        if after != before:
            log.debug("raised the descriptor limit from %d to %d (the hard limit)", before, after)
        data_plane.hub_for(self.reactor)  # its epoll set now, not with the first channel
        cluster = self.cluster
        if cluster is not None:
            cluster.start(self._on_handed_over, self._on_sibling_message)
        for position, (host, port) in enumerate(self.config.listen):
            shared = cluster.listening_sockets(position) if cluster is not None else None
            try:
                listener = ListenerSet(self.reactor, host, port, self._on_accept, sockets=shared,
                                       should_yield=self._should_yield)  # fmt: skip
            except OSError as exc:
                where = format_host_port(host, port)
                raise StartupError(f"cannot listen on {where}: {describe_error(exc)}") from None
            self.listeners.append(listener)
            address = listener.address
            log.info("listening on %s", address, extra=log_event("listening", address=address))
            if not is_loopback(listener.host) and not self.config.authenticates:
                log.warning(
                    "%s is reachable from other hosts and has no authentication: anyone who "
                    "can connect can open connections through this host (--insecure)",
                    address,
                    extra=log_event("unauthenticated_listener", address=address),
                )
        self.gate.check_descriptors(len(self.listeners), self.config.max_channels)

    def close(self) -> None:
        if self._cancel_drain is not None:
            self._cancel_drain()
        self.gate.close()
        self._stop_accepting()
        # Accepted, and still saying who they are or where they go (a drain lets
        # them finish: their clients saw the connect succeed).
        for reader in list(self._proxied):
            reader.close()
        for router in list(self._routing):
            router.close()
        self._proxied.clear()
        self._routing.clear()
        for channel in list(self.clients):
            channel.close(SHUTTING_DOWN, error=False, code=ErrorCode.SHUTDOWN)

    def _stop_accepting(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        for state in self.clients.values():
            for listener in state.binds.values():
                listener.close()
            for end in state.udp.values():
                if isinstance(end, UdpListener):
                    end.close()

    def is_startup(self, channel: Channel) -> bool:
        """The channel has not authenticated yet (admission counts it)."""
        state = self.clients.get(channel)
        return state is not None and state.startup is not None

    @property
    def bound_addresses(self) -> list[tuple[str, int]]:
        """Where the server listens for channels now (a reload cannot change it)."""
        return [(listener.host, listener.port) for listener in self.listeners]

    @property
    def draining(self) -> bool:
        """Shutting down: a reload would reopen what the drain closed."""
        return self._draining

    def drain(self, timeout: float, done: Callable[[], None]) -> None:
        """Stop accepting; call ``done()`` once no stream is open, or after ``timeout``."""
        self._draining = True
        self._stop_accepting()
        if self.cluster is not None:
            self.cluster.stop_accepting()
        for channel in list(self.clients):
            channel.draining = True
            if channel.suspended:
                channel.close(SHUTTING_DOWN, error=False, code=ErrorCode.SHUTDOWN)
        self._cancel_drain = wait_for_streams(
            self.reactor, lambda: list(self.clients), timeout, done
        )

    def _on_accept(self, sock: socket.socket, peer: PeerAddress) -> None:
        where = format_host_port(peer[0], peer[1])
        if in_networks(peer[0], self.config.proxy_protocol_from):
            self._read_proxy_header(sock, peer, where)
            return
        self._admit(sock, peer[0], where)

    def _route(self, sock: socket.socket, startup: Startup, address: str, where: str) -> None:
        """With ``--workers``: a connection that resumes a session another worker holds
        goes there, before anything is read from it (``routehint``).  It is a startup
        here meanwhile (admitted, penalties and limits applied); the holder admits it
        again."""
        cluster = self.cluster
        assert cluster is not None

        def on_route(sock: socket.socket, route: Route | None) -> None:
            self._routing.discard(reader)
            holder = self._sibling_holding(route)
            note = {"address": address, "where": where, "health": startup.unpenalised}
            if holder is not None and cluster.hand_over(holder, sock, note):
                self.gate.handed_over(startup)
                log.debug("%s: resumes a session of worker %d: handed over", where, holder,
                          extra=log_event("handed_over", peer=where,
                                          reason=f"worker {holder}"))  # fmt: skip
                return
            self._serve(sock, startup, address, where)

        reader = RouteReader(self.reactor, sock, on_route,
                             on_abort=lambda: self._routing.discard(reader))  # fmt: skip
        startup.owner = reader  # evicted, it is closed
        self._routing.add(reader)

    def _on_handed_over(self, sock: socket.socket, note: dict[str, Any]) -> None:
        """A sibling accepted a connection that resumes a session of ours."""
        address, where = note.get("address"), note.get("where")
        if not isinstance(address, str) or not isinstance(where, str) or self._draining:
            sock.close()
            return
        try:
            sock.setblocking(False)
        except OSError:
            sock.close()
            return
        self._admit(sock, address, where, health_check=note.get("health") is True, route=False)

    def _on_sibling_message(self, message: dict[str, Any]) -> None:
        """A penalty another worker gave a source holds here too; a new session's -R
        frees what a suspended session of the same client holds here."""
        replacing = message.get("replace")
        if isinstance(replacing, list) and len(replacing) == 2 and isinstance(replacing[1], str):
            name = replacing[0] if isinstance(replacing[0], str) else None
            self._replace_stale((name, replacing[1]), "a channel in another worker", "-")
            return
        release = message.get("release")
        if isinstance(release, list) and len(release) == 5:
            kind, where, certificate, name, peer_host = release
            claim = Claim.from_words(kind, where)
            if claim is not None and isinstance(peer_host, str):
                identity = _Identity(certificate.encode() if isinstance(certificate, str)
                                     else None, name if isinstance(name, str) else None,
                                     peer_host)  # fmt: skip
                self._release_for(identity, claim, "another worker", peer_host, digest=True)
            return
        offence = message.get("offence")
        if isinstance(offence, list) and len(offence) == 2:
            address, value = offence
            try:
                kind = Offence(value)
            except ValueError:
                return
            if isinstance(address, str):
                self.gate.admission.offended(address, kind, self.reactor.time())

    def _tell_penalty(self, address: str, offence: Offence) -> None:
        if self.cluster is not None:
            self.cluster.tell_others({"offence": [address, offence.value]})

    def _should_yield(self) -> bool:
        """With ``--workers``: leave the next connection to a less busy sibling (the
        kernel wakes every worker waiting on the shared queue, and the first to
        accept wins, often the same one: balance would be luck)."""
        cluster = self.cluster
        return cluster is not None and cluster.count > 1 and cluster.busier_than_siblings()

    def _read_proxy_header(self, sock: socket.socket, peer: PeerAddress, where: str) -> None:
        """A balancer's connection: its PROXY header names the client, before TLS and
        before admission (which must count the client's address, not the balancer's).
        Bounded as the startups are, and by the handshake timeout."""
        if len(self._proxied) >= self.gate.admission.config.max_startups.full:
            self.gate.refuse_unread(sock, peer[0], where)
            return

        def on_header(sock: socket.socket, header: ProxyHeader) -> None:
            self._proxied.discard(reader)
            # The balancer's own connection (a health check: LOCAL in v2; in v1 HAProxy
            # names the connection itself) is served, and never penalised; one whose
            # header names no source counts as from the balancer.
            if header.local or header.source == (unmapped(peer[0]), peer[1]):
                self._admit(sock, peer[0], where, health_check=True)
            elif header.source is None:
                self._admit(sock, peer[0], where)
            else:
                self._admit(sock, header.source[0], format_host_port(*header.source))

        def on_failure(why: str) -> None:
            self._proxied.discard(reader)
            self.gate.bad_proxy_header(peer[0], where, why)

        reader = ProxyHeaderReader(self.reactor, sock, where,
                                   self.config.settings.handshake_timeout, on_header,
                                   on_failure)  # fmt: skip
        self._proxied.add(reader)

    def _admit(self, sock: socket.socket, address: str, where: str, *,
               health_check: bool = False, route: bool = True) -> None:  # fmt: skip
        """A connection from ``address`` (the client's, as a PROXY header names it):
        admitted or turned away, then (``route``, with workers) sent to the worker its
        resume names, or served here."""
        tls = self.config.tls
        startup = self.gate.admit(sock, address, where, tls.context if tls else None,
                                  health_check=health_check)  # fmt: skip
        if startup is None:
            return  # turned away
        if route and self.cluster is not None and self.cluster.count > 1:
            self._route(sock, startup, address, where)
            return
        self._serve(sock, startup, address, where)

    def _serve(self, sock: socket.socket, startup: Startup, address: str, where: str) -> None:
        """An admitted connection becomes a channel of this worker."""
        tls = self.config.tls
        self._accepted += 1
        name = f"channel #{self._accepted} from {where}"
        settings = self.config.settings
        transport: Transport
        if tls is not None:
            transport = TlsTransport(self.reactor, sock, settings.keepalive_interval,
                                     tls.context, server_side=True)  # fmt: skip
        else:
            transport = TcpTransport(self.reactor, sock, settings.keepalive_interval)
        if self.config.websocket_path is not None:
            transport = Sniffer(self.reactor, transport, self.config.websocket_path)
        channel = Channel(self.reactor, self.resolver, transport, Role.SERVER, self, name, settings,
                          peer=where)  # fmt: skip
        startup.owner = channel
        channel.draining = self._draining
        self.clients[channel] = _ClientState(address, startup, policy=self.config.policy)
        log.debug("%s: accepted", name)
        channel.start()

    # ----------------------------------------------------------- ChannelOwner

    def target_for(
        self, channel: Channel, mapping: int, requested: tuple[str, int] | None
    ) -> tuple[str, int] | LocalService | Failure | None:
        state = self.clients.get(channel)
        if state is None:
            return None
        if requested is None or mapping not in state.dynamic:
            target = state.targets.get(mapping)
            if isinstance(target, str):
                return self._unix_target(state, target)
            return target
        refusal = state.policy.connect.check_target(*requested)
        if refusal is not None:
            log.warning(
                "%s: -D stream to %s refused: %s",
                channel.name,
                format_host_port(*requested),
                refusal,
                extra=log_event(
                    "stream_refused",
                    channel=channel.name,
                    mapping="-D",
                    peer=format_host_port(*requested),
                    reason=refusal,
                ),
            )
            return Failure(FailureClass.FORBIDDEN, refusal)
        return requested

    def _unix_target(self, state: _ClientState, path: str) -> LocalService | Failure:
        """An ``-L`` to a Unix socket: checked again per stream (a reload may have
        taken the permission away), then connected at once (a local connect does
        not wait)."""
        refusal = state.policy.connect.check_path(path)
        if refusal is not None:
            return Failure(FailureClass.FORBIDDEN, refusal)
        return LocalService(path, partial(connect_unix, path))

    def metric_label(self, channel: Channel, mapping: int) -> str:
        """``-L``, ``-R`` or ``-D``: targets and ports are the clients' to choose, and
        a label per target would let one client grow the metrics without bound."""
        state = self.clients.get(channel)
        if state is None or mapping in state.dynamic:
            return "-D"
        if mapping in state.udp:
            return "udp"
        return "-R" if mapping in state.binds else "-L"

    def mapping_label(self, channel: Channel, mapping: int) -> str:
        """``-L db:5432``, ``-R 127.0.0.1:8022`` or ``-D``: what logs and metrics call it."""
        state = self.clients.get(channel)
        if state is None:
            return f"mapping {mapping}"
        if mapping in state.dynamic:
            return "-D"
        udp = state.udp.get(mapping)
        if udp is not None:
            flag = "-R" if isinstance(udp, UdpListener) else "-L"
            return f"{flag} udp/{format_host_port(udp.host, udp.port)}"
        target = state.targets.get(mapping)
        if isinstance(target, str):
            return f"-L {target}"
        if target is not None:
            return f"-L {format_host_port(*target)}"
        bind = state.binds.get(mapping)
        if bind is not None and bind.path is not None:
            return f"-R {bind.path}"
        if bind is not None:
            return f"-R {format_host_port(bind.host, bind.port)}"
        return f"mapping {mapping}"

    def check_resolved(self, channel: Channel, name: str, address: str, port: int) -> str | None:
        state = self.clients.get(channel)
        if state is None:
            return "the channel is closed"
        return state.policy.connect.check_resolved(name, address, port)

    def on_hello(self, channel: Channel, event: HelloReceived) -> None:
        state = self.clients[channel]
        self._authenticated(state)
        state.client_name = event.client_name
        state.certificate = channel.peer_certificate
        state.policy = self._policy_for(event.client_name)
        client_id = event.client_id
        if client_id is not None:
            # A channel may retire only one that authenticated as the same client.
            key = (event.client_name, client_id)
            self._replace_stale(key, channel.name, channel.peer, keep=channel)
            if self.cluster is not None:  # its stale channel may be in another worker
                self.cluster.tell_others({"replace": [event.client_name, client_id]})
            state.client_id = client_id
            self._by_client_id[key] = channel
        total = self._channels_besides(channel)
        if self.cluster is not None:
            whole = self.cluster.take_channel(total, self.config.max_channels)
            total = whole if whole is not None else 0
        if total >= self.config.max_channels:
            # Authenticated channels only, live and suspended: strangers still in
            # their handshakes never take a client's place (a resume takes back
            # its own suspended one).
            waiting = sum(1 for other in self.clients if other.suspended)
            reason = f"too many channels (limit {self.config.max_channels})"
            if waiting:
                reason = reason[:-1] + f", {waiting} of them waiting for a resume)"
            log.warning("%s: refused: %s", channel.name, reason,
                        extra=log_event("channel_refused", channel=channel.name,
                                        reason=reason))  # fmt: skip
            # AUTH OK first: an older client reads "full" as a refusal, not a failed AUTH.
            channel.close(reason, code=ErrorCode.FULL, after_replies=True)
            return
        if channel.session_id is not None:
            self._sessions[channel.session_id] = channel
        name = event.client_name if event.client_name not in (None, "-") else None
        who = f" {name!r}" if name is not None else ""
        log.info(
            "%s: client%s connected",
            channel.name,
            who,
            extra=log_event("channel_up", channel=channel.name, peer=channel.peer, client=name),
        )

    def _replace_stale(self, key: tuple[str | None, str], name: str, peer: str,
                       keep: Channel | None = None) -> None:  # fmt: skip
        """A new channel of the client ``key`` names retires the one it left (a cut
        not noticed yet), so its -R ports are free for the new one."""
        stale = self._by_client_id.get(key)
        if stale is not None and stale is not keep and not stale.closed:
            log.info("%s: replaces %s from the same client", name, stale.name,
                     extra=log_event("channel_replaced", channel=name, peer=peer,
                                     reason=stale.name))  # fmt: skip
            stale.close("replaced by a new channel from the same client", error=False,
                        code=ErrorCode.REPLACED)  # fmt: skip

    def _authenticated(self, state: _ClientState, *, counted: bool = True) -> None:
        """The channel proved itself (or finished HELLO, without authentication):
        it stops counting as a startup, and counts as a channel (``counted``: it
        stays in ``clients``)."""
        if state.startup is not None:
            self.gate.authenticated(state.startup)
            state.startup = None
            self._authenticated_channels += counted

    def _channels_besides(self, channel: Channel) -> int:
        """Authenticated channels, live and suspended, other than ``channel`` (a count
        kept as they come and go: a storm of N reconnects must not cost N squared)."""
        state = self.clients.get(channel)
        return self._authenticated_channels - (state is not None and state.startup is None)

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> MappingAnswer:
        state = self.clients[channel]
        if event.kind is MappingKind.DYNAMIC:
            state.dynamic.add(event.mapping)
            log.info("%s: dynamic forwarding (-D): targets checked per stream", channel.name)
            return MappingGranted()
        if event.kind is MappingKind.CONNECT:
            return self._grant_connect(channel, state, event)
        if event.kind is MappingKind.UDP_CONNECT:
            return self._grant_udp_connect(channel, state, event)
        if event.kind is MappingKind.UDP_BIND:
            return self._grant_udp_bind(channel, state, event)
        if event.path is not None:
            return self._grant_unix_bind(channel, state, event.mapping, event.path)
        return self._grant_bind(channel, state, event)

    def _grant_connect(
        self, channel: Channel, state: _ClientState, event: MappingRequested
    ) -> MappingAnswer:
        """``-L``: its target, ``host:port`` or a Unix socket, checked against the rules."""
        if event.path is not None:
            target = event.path
            refusal = state.policy.connect.check_path(event.path)
        else:
            target = format_host_port(event.host, event.port)
            refusal = state.policy.connect.check_target(event.host, event.port)
        if refusal is not None:
            log.warning(
                "%s: -L refused: %s",
                channel.name,
                refusal,
                extra=log_event(
                    "mapping_refused", channel=channel.name, mapping=f"-L {target}", reason=refusal
                ),
            )
            return MappingDenied(Failure(FailureClass.FORBIDDEN, refusal))
        state.targets[event.mapping] = (
            event.path if event.path is not None else (event.host, event.port)
        )
        log.info(
            "%s: forwarding -L to %s",
            channel.name,
            target,
            extra=log_event("mapping_up", channel=channel.name, mapping=f"-L {target}"),
        )
        return MappingGranted()

    def _grant_udp_connect(
        self, channel: Channel, state: _ClientState, event: MappingRequested
    ) -> MappingAnswer:
        """``-L udp:``: the target checked as written now, and each address it resolves
        to as each association starts."""
        target = f"udp/{format_host_port(event.host, event.port)}"
        refusal = state.policy.connect.check_target(event.host, event.port, udp=True)
        if refusal is not None:
            log.warning("%s: -L refused: %s", channel.name, refusal,
                        extra=log_event("mapping_refused", channel=channel.name,
                                        mapping=f"-L {target}", reason=refusal))  # fmt: skip
            return MappingDenied(Failure(FailureClass.FORBIDDEN, refusal))
        policy = state.policy.connect

        def check(name: str, address: str, port: int) -> str | None:
            return policy.check_resolved(name, address, port, udp=True)

        def refused(why: str) -> None:
            log.warning("%s: -L %s: datagrams dropped: %s", channel.name, target, why,
                        extra=log_event("stream_refused", channel=channel.name,
                                        mapping=f"-L {target}", reason=why))  # fmt: skip

        state.udp[event.mapping] = UdpConnector(
            self.reactor, self.resolver, event.host, event.port,
            partial(self._udp_send, channel, event.mapping), channel, check=check,
            timeout=self.config.udp_timeout, on_refused=refused, totals=self.meter.datagrams,
            budget=state.udp_budget,
        )  # fmt: skip
        up = log_event("mapping_up", channel=channel.name, mapping=f"-L {target}")
        log.info("%s: forwarding -L to %s", channel.name, target, extra=up)
        return MappingGranted()

    def _grant_udp_bind(
        self, channel: Channel, state: _ClientState, event: MappingRequested
    ) -> MappingAnswer:
        """``-R udp:``: the same rules as a TCP ``-R`` (loopback unless
        ``--gateway-ports``, then ``udp/`` patterns)."""
        target = f"udp/{format_host_port(event.host, event.port)}"
        address, denied = self._bind_address(state, event.host, event.port, udp=True)
        if address is not None and event.port:
            port = event.port
            self._release_held(channel, state, Claim("udp", port))
        if address is not None:
            try:
                listener = UdpListener(self.reactor, address, event.port,
                                       partial(self._udp_send, channel, event.mapping), channel,
                                       timeout=self.config.udp_timeout,
                                       totals=self.meter.datagrams,
                                       budget=state.udp_budget)  # fmt: skip
            except OSError as exc:
                denied = Failure(FailureClass.UNAVAILABLE,
                                 f"cannot listen on {target}: {describe_error(exc)}")  # fmt: skip
            else:
                state.udp[event.mapping] = listener
                bound = format_host_port(listener.host, listener.port)
                log.info("%s: forwarding -R %s -> client", channel.name, listener.address,
                         extra=log_event("mapping_up", channel=channel.name,
                                         mapping=f"-R udp/{bound}",
                                         address=listener.address))  # fmt: skip
                both = address == LOCALHOST and len(listener.sockets) == len(LOOPBACK_PAIR)
                return MappingGranted((LOCALHOST if both else listener.host, listener.port))
        assert denied is not None
        return self._bind_refused(channel, target, denied)

    def _udp_send(self, channel: Channel, mapping: int, association: int, payload: bytes) -> bool:
        return channel.send_datagram(mapping, association, payload)

    def on_datagram(self, channel: Channel, event: DatagramReceived) -> None:
        state = self.clients.get(channel)
        end = state.udp.get(event.mapping) if state is not None else None
        if end is not None:
            end.deliver(event.association, event.payload)

    def _grant_bind(
        self, channel: Channel, state: _ClientState, event: MappingRequested
    ) -> MappingAnswer:
        """``-R`` on ``host:port``: loopback only unless ``--gateway-ports``, then the rules."""
        target = format_host_port(event.host, event.port)
        address, denied = self._bind_address(state, event.host, event.port, udp=False)
        if address is not None and event.port:
            port = event.port
            self._release_held(channel, state, Claim("tcp", port))
        if address is not None:
            try:
                listener = ListenerSet(
                    self.reactor,
                    address,
                    event.port,
                    partial(self._on_remote_accept, channel, event.mapping),
                )
            except OSError as exc:
                denied = Failure(FailureClass.UNAVAILABLE,
                                 f"cannot listen on {target}: {describe_error(exc)}")  # fmt: skip
            else:
                state.binds[event.mapping] = listener
                bound = format_host_port(listener.host, listener.port)
                log.info(
                    "%s: forwarding -R %s -> client",
                    channel.name,
                    listener.address,  # every address: 127.0.0.1:8022 and [::1]:8022
                    extra=log_event("mapping_up", channel=channel.name, mapping=f"-R {bound}",
                                    address=listener.address),
                )  # fmt: skip
                # "localhost" in BIND OK says "127.0.0.1 and ::1" (protocol.md §5): a
                # client older than this reads a host name there, which it allows.
                both = address == LOCALHOST and len(listener.listeners) == len(LOOPBACK_PAIR)
                return MappingGranted((LOCALHOST if both else listener.host, listener.port))
        assert denied is not None
        return self._bind_refused(channel, target, denied)

    def _grant_unix_bind(
        self, channel: Channel, state: _ClientState, mapping: int, path: str
    ) -> MappingAnswer:
        """``-R /PATH:...``: a Unix socket where a ``--allow-bind`` path pattern allows it
        (mode 0600, as OpenSSH's StreamLocalBindMask leaves it)."""
        if self._draining:
            closing = Failure(FailureClass.SHUTDOWN, "server shutting down")
            return self._bind_refused(channel, path, closing)
        refusal = state.policy.bind.check_path(path)
        if refusal is not None:
            return self._bind_refused(channel, path, Failure(FailureClass.FORBIDDEN, refusal))
        self._release_held(channel, state, Claim("path", path))
        if any(listener.path == path for other in self.clients.values()
               for listener in other.binds.values()):  # fmt: skip
            # Ours already: asked without probing it (a probe would be a connection).
            taken = f"cannot listen on {path}: another client's -R listens there"
            failure = Failure(FailureClass.UNAVAILABLE, taken)
            return self._bind_refused(channel, path, failure)
        try:
            listener = UnixListenerSet(
                self.reactor, path, partial(self._on_remote_accept, channel, mapping)
            )
        except OSError as exc:
            failure = Failure(FailureClass.UNAVAILABLE,
                              f"cannot listen on {path}: {describe_error(exc)}")  # fmt: skip
            return self._bind_refused(channel, path, failure)
        state.binds[mapping] = listener
        log.info("%s: forwarding -R %s -> client", channel.name, path,
                 extra=log_event("mapping_up", channel=channel.name, mapping=f"-R {path}",
                                 address=path))  # fmt: skip
        return MappingGranted(path)

    def _bind_refused(self, channel: Channel, target: str, denied: Failure) -> MappingDenied:
        log.warning(
            "%s: -R refused: %s",
            channel.name,
            denied,
            extra=log_event(
                "mapping_refused", channel=channel.name, mapping=f"-R {target}", reason=denied.text
            ),
        )
        return MappingDenied(denied)

    def _release_held(self, channel: Channel, state: _ClientState, claim: Claim) -> None:
        """A client that restarted lost its session key, so the session it left
        waiting for a resume can never be resumed; its -R ports (and sockets) must not
        keep the new process from binding them.  With ``--workers`` that session may
        be in another worker: they are all told (the client's -R retry then finds the
        port free)."""
        identity = _Identity(state.certificate, state.client_name, state.peer_host)
        self._release_for(identity, claim, channel.name, channel.peer)
        if self.cluster is not None:
            self.cluster.tell_others({"release": [claim.kind, claim.where, *identity.words()]})

    def _release_for(self, identity: _Identity, claim: Claim, name: str, peer: str, *,
                     digest: bool = False) -> None:  # fmt: skip
        """End the suspended sessions of the same client that hold ``claim``.  Only the
        same client may take them, by the strongest identity there is: its TLS client
        certificate, else its name from a clients file; a shared secret or no
        authentication names nobody, so then only the same address (docs/security.md)."""
        book = self.config.settings.session.secret_book
        named = book is not None and not isinstance(book, SharedSecret)
        for other, held in list(self.clients.items()):
            if not other.suspended:
                continue
            if held.certificate is not None or identity.certificate is not None:
                same = identity.same_certificate(held.certificate, digest)
            elif named:
                same = held.client_name is not None and held.client_name == identity.name
            else:
                same = held.peer_host == identity.peer_host
            ends = [*held.binds.values(), *held.udp.values()]
            if same and any(claim.held_by(end) for end in ends):
                log.info("%s: -R %s is held by %s, a session of the same client waiting "
                         "for a resume; a new session asks for it, so that one ends",
                         name, claim, other.name,
                         extra=log_event("session_replaced", channel=name, peer=peer,
                                         reason=other.name))  # fmt: skip
                other.close("replaced by a new session of the same client (it restarted?)",
                            error=False, code=ErrorCode.REPLACED)  # fmt: skip

    def _bind_address(
        self, state: _ClientState, host: str, port: int, *, udp: bool
    ) -> tuple[str | None, Failure | None]:
        """What a ``-R`` (TCP or UDP) may bind: the address, or why not (the server's
        own rules, then the client's ``--allow-bind``)."""
        address, denied = self._bind_policy(host)
        if address is None:
            return None, denied
        # localhost is checked as 127.0.0.1: its ::1 twin is the same host's loopback.
        checked = LOOPBACK_PAIR[0] if address == LOCALHOST else address
        refusal = state.policy.bind.check_bind(checked, port, udp=udp)
        if refusal is not None:
            return None, Failure(FailureClass.FORBIDDEN, refusal)
        return address, None

    def _bind_policy(self, host: str) -> tuple[str | None, Failure | None]:
        """``(address to bind, None)`` if a BIND for ``host`` is allowed, else
        ``(None, why not)``."""
        if self._draining:
            return None, Failure(FailureClass.SHUTDOWN, "server shutting down")
        address = listening_address(host)
        if address is None:
            return None, Failure(
                FailureClass.FORBIDDEN, f"bind address {host} must be an IP address"
            )
        if not self.config.gateway_ports and not is_loopback(address):
            return None, Failure(FailureClass.FORBIDDEN, f"binding {host} needs the server's "
                                 "--gateway-ports (only loopback otherwise)")  # fmt: skip
        return address, None

    def _on_remote_accept(
        self, channel: Channel, mapping: int, sock: socket.socket, peer: PeerAddress
    ) -> None:
        channel.open_stream(mapping, sock, f"-R from {format_host_port(peer[0], peer[1])}")

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None:
        raise AssertionError("the session never reports mapping replies to a server")

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None:
        raise AssertionError("the session never reports mapping replies to a server")

    def on_mapping_cancelled(self, channel: Channel, event: MappingCancelled) -> None:
        state = self.clients.get(channel)
        if state is None:
            return
        label = self.mapping_label(channel, event.mapping)
        state.targets.pop(event.mapping, None)
        state.dynamic.discard(event.mapping)
        listener = state.binds.pop(event.mapping, None)
        if listener is not None:
            listener.close()
        udp = state.udp.pop(event.mapping, None)
        if udp is not None:
            udp.close()
        removed = log_event("mapping_removed", channel=channel.name, mapping=label)
        log.info("%s: %s removed by the client", channel.name, label, extra=removed)

    # ----------------------------------------------------------- reload

    def reconfigure(self, permissions: Permissions) -> list[str]:
        """Apply new permissions (a reload): to new channels, and to every request
        an open channel makes from now on (mappings already granted stay declared,
        but their new streams are checked again).  A channel whose client is gone
        from the secrets, or whose secret changed, is closed.  Returns what changed
        in the clients and which channels it closed, for the reload's answer."""
        config = self.config
        changes = _clients_changed(config.clients, permissions.clients)
        config.policy = permissions.policy
        config.clients = permissions.clients
        config.gateway_ports = permissions.gateway_ports
        config.max_channels = permissions.max_channels
        config.admission = permissions.admission
        self.gate.reconfigure(permissions.admission)
        old_book = config.settings.session.secret_book
        config.settings = replace(
            config.settings, session=replace(config.settings.session,
                                             secret_book=permissions.secret_book)
        )  # fmt: skip
        if _shared_secret(old_book) != _shared_secret(permissions.secret_book):
            changes.append("new shared secret")
        for channel, state in list(self.clients.items()):
            revoked = _revoked(state.client_name, old_book, permissions.secret_book)
            if revoked is not None:  # its old rights must not outlive its identity
                log.warning("%s: %s: closing its channel", channel.name, revoked,
                            extra=log_event("channel_revoked", channel=channel.name,
                                            peer=channel.peer, reason=revoked,
                                            client=state.client_name))  # fmt: skip
                channel.close(revoked, code=ErrorCode.REVOKED)
                changes.append(f"closed {channel.name}: {revoked}")
                continue
            state.policy = self._policy_for(state.client_name)
        return changes

    def _policy_for(self, client_name: str | None) -> Policy:
        """The global allow-lists, or the client's own from the clients file."""
        clients = self.config.clients
        entry = clients.entry(client_name) if clients and client_name else None
        if entry is None:
            return self.config.policy
        return self.config.policy.overridden(entry.connect, entry.bind)

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None:
        why = text_of(reason)
        log.warning("%s: %s refused by client: %s", channel.name, stream.label, why,
                    extra=channel.stream_event("stream_refused", stream, why))  # fmt: skip

    def on_channel_suspended(self, channel: Channel, reason: str, first: bool) -> None:
        timeout = self.config.settings.resume_timeout
        log.warning("%s: connection lost: %s; keeping %d stream(s) and its -R ports for %gs "
                    "for the client to resume", channel.name, reason, len(channel.streams),
                    timeout, extra=log_event("channel_suspended", channel=channel.name,
                                             peer=channel.peer, reason=reason))  # fmt: skip

    def on_resume_requested(self, channel: Channel, event: ResumeRequested) -> None:
        """A new connection names a session: only the client that made it may resume
        it, and a refusal leaves the session as it was for its owner."""
        held = self._sessions.get(event.session_id)
        state = self.clients.get(held) if held is not None else None
        route = Route.parse(event.session_id)
        if held is None and route is not None and self.node is not None and route.node != self.node:
            # Another host's: a client that asked where to resume reads "elsewhere"; an
            # older one retries a busy server with its session kept (through the balancer).
            code = ErrorCode.ELSEWHERE if channel.peer_asks_route else ErrorCode.BUSY
            channel.close(ANOTHER_NODE.format(route.node), code=code, error=False,
                          after_replies=True)  # fmt: skip
            return
        elsewhere = self._sibling_holding(route)
        if held is None and elsewhere is not None:
            channel.close(ANOTHER_WORKER.format(elsewhere), code=ErrorCode.BUSY, error=False,
                          after_replies=True)  # fmt: skip
            return
        if held is None or held.closed or state is None:  # its close line says why
            channel.refuse_resume(UNKNOWN_SESSION)
            return
        if (state.client_id != event.client_id or state.client_name != event.client_name
                or state.certificate != channel.peer_certificate):  # fmt: skip
            log.warning("%s: resume refused: session %s belongs to another client",
                        channel.name, event.session_id[:8],
                        extra=log_event("resume_refused", channel=channel.name, peer=channel.peer,
                                        reason="session of another client"))  # fmt: skip
            channel.refuse_resume(UNKNOWN_SESSION)
            return
        channel.challenge_resume(held.resume_key)

    def _sibling_holding(self, route: Route | None) -> int | None:
        """The sibling worker a session's route names, when not this one."""
        cluster = self.cluster
        if cluster is None or route is None or route.node != cluster.route.node:
            return None
        if route.worker == cluster.index or route.worker >= cluster.count:
            return None
        return route.worker

    def on_resume_proved(self, channel: Channel, event: ResumeProved) -> None:
        held = self._sessions.get(event.session_id)
        if held is None or held.closed:
            channel.refuse_resume(UNKNOWN_SESSION)
            return
        if held.draining:
            channel.refuse_resume("server shutting down")
            return
        handshake = self.clients.pop(channel, None)
        if handshake is not None:
            self._authenticated_channels -= handshake.startup is None
            self._authenticated(handshake, counted=False)
            self.clients[held].peer_host = handshake.peer_host
        held.adopt(channel)

    def on_channel_resumed(self, channel: Channel, event: SessionResumed) -> None:
        log.info("%s: client resumed its session over %s: %d stream(s) carry on, %d byte(s) "
                 "sent again", channel.name, channel.peer, event.streams, event.replayed,
                 extra=log_event("channel_resumed", channel=channel.name,
                                 peer=channel.peer))  # fmt: skip

    def on_channel_closed(self, channel: Channel, reason: str) -> None:
        if channel.session_id is not None and self._sessions.get(channel.session_id) is channel:
            del self._sessions[channel.session_id]
        state = self.clients.pop(channel, None)
        if state is not None and state.startup is None:
            self._authenticated_channels -= 1
            if self.cluster is not None:
                self.cluster.publish_channels(self._channels_besides(channel))
        if state is not None:
            for listener in state.binds.values():
                listener.close()
            for end in state.udp.values():
                end.close()
            key = (state.client_name, state.client_id or "")
            if state.client_id is not None and self._by_client_id.get(key) is channel:
                del self._by_client_id[key]
            if state.startup is not None:
                self.gate.ended(state.startup, channel.name, channel.peer, reason,
                                channel.close_code, channel.closed_by_peer,
                                channel.close_was_error)  # fmt: skip
                return
        level = logging.WARNING if channel.close_was_error else logging.INFO
        reset = (
            f" ({channel.streams_reset_on_close} stream(s) reset)"
            if channel.streams_reset_on_close
            else ""
        )
        log.log(
            level,
            "%s: closed: %s%s",
            channel.name,
            reason,
            reset,
            extra=log_event("channel_down", channel=channel.name, peer=channel.peer, reason=reason),
        )
