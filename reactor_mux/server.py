"""The server role (the demultiplexer).

It accepts channels on its ``--listen`` addresses and serves each one
independently: a CONNECT (``-L``) records the target its streams connect
to, a BIND (``-R``) opens a listener whose connections become streams
toward the client.  Everything a channel created (its ``-R`` listeners, its
streams, its pending connects) dies with it, so a client that reconnects
finds its ports free.  A client that reconnects before its old channel was
noticed dead (a network cut TCP has not seen yet) presents the same client
id in HELLO; the old channel is then closed at once, before the new one's
BINDs are processed, so a stale listener never blocks the reconnect.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from reactor_mux.channel import (
    Channel,
    MappingAnswer,
    MappingDenied,
    MappingGranted,
    wait_for_streams,
)
from reactor_mux.listener import Listener
from reactor_mux.localstream import LocalStream
from reactor_mux.netutil import PeerAddress, describe_error
from reactor_mux.protocol.events import (
    HelloReceived,
    MappingAccepted,
    MappingKind,
    MappingRefused,
    MappingRequested,
)
from reactor_mux.protocol.session import Role, error_frame
from reactor_mux.protocol.syntax import format_host_port, is_loopback, listening_address
from reactor_mux.reactor import Reactor
from reactor_mux.resolver import Resolver
from reactor_mux.settings import DEFAULT_DRAIN_TIMEOUT, ChannelSettings
from reactor_mux.transport import TcpTransport

log = logging.getLogger("reactor_mux")

DEFAULT_MAX_CHANNELS = 64
"""Channels (clients) served at once; one more gets ERROR and is closed."""


@dataclass
class ServerConfig:
    listen: list[tuple[str, int]]
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    gateway_ports: bool = False
    max_channels: int = DEFAULT_MAX_CHANNELS
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT


@dataclass
class _ClientState:
    """What one channel set up on this server."""

    client_id: str | None = None
    targets: dict[int, tuple[str, int]] = field(default_factory=dict)
    binds: dict[int, Listener] = field(default_factory=dict)


class Server:
    def __init__(self, reactor: Reactor, resolver: Resolver, config: ServerConfig) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.config = config
        self.listeners: list[Listener] = []
        self.clients: dict[Channel, _ClientState] = {}
        self._by_client_id: dict[str, Channel] = {}
        self._accepted = 0
        self._draining = False
        self._cancel_drain: Callable[[], None] | None = None

    def start(self) -> None:
        """Bind every ``--listen`` address; raises OSError if one cannot be bound."""
        for host, port in self.config.listen:
            listener = Listener(self.reactor, host, port, self._on_accept)
            self.listeners.append(listener)
            address = format_host_port(listener.host, listener.port)
            log.info("listening on %s", address)
            if not is_loopback(listener.host):
                log.warning(
                    "%s is reachable from other hosts and has no authentication: anyone who "
                    "can connect can open connections through this host",
                    address,
                )

    def close(self) -> None:
        if self._cancel_drain is not None:
            self._cancel_drain()
        self._stop_accepting()
        for channel in list(self.clients):
            channel.close("server shutting down", error=False)

    def _stop_accepting(self) -> None:
        for listener in self.listeners:
            listener.close()
        self.listeners.clear()
        for state in self.clients.values():
            for listener in state.binds.values():
                listener.close()

    def drain(self, timeout: float, done: Callable[[], None]) -> None:
        """Stop accepting; call ``done()`` once no stream is open, or after ``timeout``."""
        self._draining = True
        self._stop_accepting()
        for channel in self.clients:
            channel.draining = True
        self._cancel_drain = wait_for_streams(
            self.reactor, lambda: list(self.clients), timeout, done
        )

    def _on_accept(self, sock: socket.socket, peer: PeerAddress) -> None:
        self._accepted += 1
        name = f"channel #{self._accepted} from {format_host_port(peer[0], peer[1])}"
        if len(self.clients) >= self.config.max_channels:
            reason = f"too many channels (limit {self.config.max_channels})"
            log.warning("%s: refused: %s", name, reason)
            try:
                sock.send(error_frame(reason))
            except OSError:
                pass
            sock.close()
            return
        settings = self.config.settings
        transport = TcpTransport(self.reactor, sock, settings.keepalive_interval)
        channel = Channel(self.reactor, self.resolver, transport, Role.SERVER, self, name, settings)
        channel.draining = self._draining
        self.clients[channel] = _ClientState()
        log.debug("%s: accepted", name)
        channel.start()

    # ----------------------------------------------------------- ChannelOwner

    def target_for(self, channel: Channel, mapping: int) -> tuple[str, int] | None:
        state = self.clients.get(channel)
        return state.targets.get(mapping) if state is not None else None

    def on_hello(self, channel: Channel, event: HelloReceived) -> None:
        state = self.clients[channel]
        client_id = event.client_id
        if client_id is not None:
            stale = self._by_client_id.get(client_id)
            if stale is not None and stale is not channel and not stale.closed:
                log.info("%s: replaces %s from the same client", channel.name, stale.name)
                stale.close("replaced by a new channel from the same client", error=False)
            state.client_id = client_id
            self._by_client_id[client_id] = channel
        log.info("%s: client connected", channel.name)

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> MappingAnswer:
        state = self.clients[channel]
        target = format_host_port(event.host, event.port)
        if event.kind is MappingKind.CONNECT:
            state.targets[event.mapping] = (event.host, event.port)
            log.info("%s: forwarding -L to %s", channel.name, target)
            return MappingGranted()
        address, reason = self._bind_policy(event.host)
        if address is not None:
            try:
                listener = Listener(
                    self.reactor,
                    address,
                    event.port,
                    partial(self._on_remote_accept, channel, event.mapping),
                )
            except OSError as exc:
                reason = f"cannot listen on {target}: {describe_error(exc)}"
            else:
                state.binds[event.mapping] = listener
                bound = format_host_port(listener.host, listener.port)
                log.info("%s: forwarding -R %s -> client", channel.name, bound)
                return MappingGranted((listener.host, listener.port))
        log.warning("%s: -R refused: %s", channel.name, reason)
        return MappingDenied(reason)

    def _bind_policy(self, host: str) -> tuple[str | None, str]:
        """``(address to bind, "")`` if a BIND for ``host`` is allowed, else
        ``(None, why not)``."""
        if self._draining:
            return None, "server shutting down"
        address = listening_address(host)
        if address is None:
            return None, f"bind address {host} must be an IP address"
        if not self.config.gateway_ports and not is_loopback(address):
            return None, (
                f"binding {host} needs the server's --gateway-ports (only loopback otherwise)"
            )
        return address, ""

    def _on_remote_accept(
        self, channel: Channel, mapping: int, sock: socket.socket, peer: PeerAddress
    ) -> None:
        channel.open_stream(mapping, sock, f"-R from {format_host_port(peer[0], peer[1])}")

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None:
        raise AssertionError("the session never reports mapping replies to a server")

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None:
        raise AssertionError("the session never reports mapping replies to a server")

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None:
        log.warning("%s: %s refused by client: %s", channel.name, stream.label, reason)

    def on_channel_closed(self, channel: Channel, reason: str) -> None:
        state = self.clients.pop(channel, None)
        if state is not None:
            for listener in state.binds.values():
                listener.close()
            if state.client_id is not None and self._by_client_id.get(state.client_id) is channel:
                del self._by_client_id[state.client_id]
        level = logging.WARNING if channel.close_was_error else logging.INFO
        log.log(level, "%s: closed: %s", channel.name, reason)
