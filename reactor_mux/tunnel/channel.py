"""The channel connection: a transport, its Session, and the streams it carries.

The channel is role-neutral.  Opening a stream (a local connection accepted
on a listener) and answering a peer's SYN (connect to the mapping's target,
then SYN OK or SYN ERROR) work the same for ``-L`` on the client and ``-R``
on the server; what differs between roles (which mappings exist, what a
CONNECT or BIND means) is asked of the ``ChannelOwner``.

Here is only the glue: the session's events go to streams and to the owner,
and the session's output goes to the transport.  Each other job is a part
of its own, testable without sockets: ``Liveness`` (handshake deadline,
keepalive), ``Resumption`` (barrier ticks, the resume window, the session's
side of a reconnect or a handover), two ``BufferCap``s (inbound and outbound
storage, with hysteresis), ``PeerConnects`` (connects for the peer's SYNs),
and the ``Transport`` the bytes travel over.  Draining at shutdown is
``drain.wait_for_streams``.

Reading: the transport ``recv_into``s the session's receive buffer, and every
frame of that read is handled in one call.  Writing is deferred to the end
of the tick (``schedule_flush``) so everything produced in a tick leaves in
as few ``sendmsg`` calls as the transport allows; write interest is asked
for only while output is left over.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from time import monotonic
from typing import Protocol

from reactor_mux.io import plane as data_plane
from reactor_mux.io.connector import Connector
from reactor_mux.io.netutil import (
    abort_socket,
    connect_failure,
    describe_error,
    tune_stream_socket,
)
from reactor_mux.io.reactor import Cancellable, Owner, Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.io.transport import Transport, TransportError
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.errorcodes import ErrorCode, text_of
from reactor_mux.protocol.events import (
    ChannelFailed,
    CreditGranted,
    DatagramReceived,
    DataReceived,
    DeliveryFailed,
    Event,
    HelloReceived,
    MappingAccepted,
    MappingCancelled,
    MappingKind,
    MappingRefused,
    MappingRequested,
    PeerBlocked,
    PeerLeaving,
    PongReceived,
    ResumeProved,
    ResumeRequested,
    SessionResumed,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
    unhandled,
)
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.session import RESUME_REFUSED, Session
from reactor_mux.protocol.stream import Stream
from reactor_mux.protocol.streamstate import StreamState
from reactor_mux.protocol.verbs import ChannelState, Role
from reactor_mux.tunnel.buffercap import BufferCap
from reactor_mux.tunnel.liveness import Liveness
from reactor_mux.tunnel.localstream import LocalStream, OpenHook
from reactor_mux.tunnel.meter import Meter
from reactor_mux.tunnel.peerconnect import DoneCallback, PeerConnects
from reactor_mux.tunnel.planestream import PlaneStream
from reactor_mux.tunnel.resumption import Handover, Resumption
from reactor_mux.tunnel.settings import ChannelSettings

log = logging.getLogger("reactor_mux")


@dataclass(frozen=True, slots=True)
class ConnectPurpose:
    """What a connect made for the peer's SYN is for."""

    label: str
    """How the log names its mapping: ``-R 2222:127.0.0.1:22``."""
    metric: str
    """How the metrics do: ``-R``."""


@dataclass(frozen=True, slots=True)
class MappingGranted:
    """The server's yes to CONNECT, or to BIND with the address it bound (``host,
    port``, or the path of a Unix socket)."""

    bound: tuple[str, int] | str | None = None


@dataclass(frozen=True, slots=True)
class MappingDenied:
    """The server's no: its class (the client decides by it whether asking again may
    help) and the words the client will log."""

    failure: Failure


MappingAnswer = MappingGranted | MappingDenied


@dataclass(frozen=True)
class LocalService:
    """A target this side reaches without a network connect: ``open()`` returns a
    connected socket at once (the client's SOCKS server for reverse dynamic
    forwarding, a Unix socket of ``-R PORT:/PATH``), ``address`` names it in the log."""

    address: str
    open: Callable[[], socket.socket]


class ChannelOwner(Protocol):
    """What a channel asks of the role (client or server) that owns it."""

    meter: Meter
    """Where the channel counts its streams, bytes and refusals."""

    def target_for(
        self, channel: Channel, mapping: int, requested: tuple[str, int] | None
    ) -> tuple[str, int] | LocalService | Failure | None:
        """Where a peer SYN on ``mapping`` should connect (``requested`` is the target
        a dynamic mapping's SYN names), a service in this process that takes the
        stream instead, or why not: a refusal, or None when the mapping is unknown."""

    def check_resolved(self, channel: Channel, name: str, address: str, port: int) -> str | None:
        """Why connecting to ``address`` (what ``name`` resolved to) is refused, or None."""

    def metric_label(self, channel: Channel, mapping: int) -> str:
        """What the metrics call the mapping: a value from a small set, never one
        the peer can vary at will."""

    def mapping_label(self, channel: Channel, mapping: int) -> str:
        """How the log names a mapping: the flag as the user wrote it, where known."""

    def on_hello(self, channel: Channel, event: HelloReceived) -> None: ...

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> MappingAnswer:
        """Server: answer a CONNECT or BIND."""

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None: ...

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None: ...

    def on_mapping_cancelled(self, channel: Channel, event: MappingCancelled) -> None: ...

    def on_datagram(self, channel: Channel, event: DatagramReceived) -> None:
        """A datagram of a UDP mapping, for its local socket."""

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None: ...

    def on_channel_closed(self, channel: Channel, reason: str) -> None: ...

    def on_channel_suspended(self, channel: Channel, reason: str, first: bool) -> None:
        """The connection broke and the streams wait for a resume."""

    def on_channel_resumed(self, channel: Channel, event: SessionResumed) -> None: ...

    def on_resume_requested(self, channel: Channel, event: ResumeRequested) -> None:
        """Server: look the session up; ``challenge_resume`` or ``refuse_resume``."""

    def on_resume_proved(self, channel: Channel, event: ResumeProved) -> None:
        """Server: hand this connection to the session it resumes (``adopt``)."""


class Channel:
    def __init__(
        self,
        reactor: Reactor,
        resolver: Resolver,
        transport: Transport,
        role: Role,
        owner: ChannelOwner,
        name: str,
        settings: ChannelSettings,
        *,
        client_id: str | None = None,
        peer: str = "",
    ) -> None:
        self.reactor = reactor
        self.peer = peer
        """The other end of the channel, ``host:port``, for status."""
        self.resolver = resolver
        self.owner = owner
        self.meter = owner.meter
        self.name = name
        self.settings = settings
        self.opened_at = reactor.time()
        self._rtt: float | None = None
        """The last keepalive round trip (PING to PONG), in seconds."""
        self._ping_sent: tuple[int, float] | None = None
        self.streams: dict[int, LocalStream] = {}
        self.closed = False
        self.close_reason: str | None = None
        self.close_was_error = False
        self.close_code: ErrorCode | None = None
        """What ended the channel, as a value (None only for an older peer's ERROR
        that says nothing this side recognises)."""
        self.closed_by_peer = False
        """The peer ended it with ERROR (the code is its word, not our finding)."""
        self.draining = False
        """Refuse new streams (the process is shutting down); open ones carry on."""
        self.said_goodbye = False
        """We sent BYE and wait for the peer to close the channel."""
        self._peer_leaving = False
        self._session = Session(role, settings.session, client_id=client_id)
        self.peer_role = "server" if role is Role.CLIENT else "client"
        self._transport: Transport | None = transport
        self.streams_reset_on_close = 0
        """How many streams closing the channel reset (for the log)."""
        self._resumption = Resumption(
            reactor,
            self,
            self._session,
            resume_timeout=settings.resume_timeout,
            flush=self.schedule_flush,
            expired=self._resume_expired,
            gone_idle=self._report_next_send,
        )
        self._flush_pending = False
        self._inbound_held = 0
        self._python_read_at = 0.0
        """When Python last read the channel (the liveness's evidence, with the plane's)."""
        self._plane_hub = data_plane.hub_for(reactor)
        self._plane: data_plane.Plane | None = None
        """Where the streams' bytes move (the compiled data plane), or None: LocalStream."""
        self._plane_reads = False
        """The plane reads the channel's socket (Python's transport does not)."""
        self._plane_input: tuple[object | None, int, int] = (None, -1, 0)
        self._python_read_asked = False
        """The plane handed a read back (its buffer must grow or move): Python reads once."""
        if self._plane_hub is not None:
            self._plane = self._plane_hub.new_plane(self._session.output_queue, self)
            self._session.use_plane(self._plane)
            self._plane.set_inbound_limit(settings.max_buffer)
            self._plane.set_max_window(settings.session.max_window)
        else:  # every read is the decoder's: the transport may call it directly
            self.buffer_updated = self._python_input  # type: ignore[method-assign]
        escaped = name.replace("%", "%%")
        self._inbound_cap = BufferCap(
            settings.max_buffer,
            held=self._inbound_storage,
            release_idle=self._release_idle_inbound,
            on_change=self._inbound_paused_changed,
            pause_message=f"{escaped}: inbound buffers hold %d bytes (cap %d): "
            "pausing channel reads",
            resume_message=f"{escaped}: local sockets caught up: resuming channel reads",
            pause_event=log_event("channel_reads_paused", channel=name),
            resume_event=log_event("channel_reads_resumed", channel=name),
        )
        self._outbound_cap = BufferCap(
            settings.max_buffer,
            held=lambda: self._session.outbound_held,
            release_idle=self._session.release_idle_outbound,
            on_change=self._outbound_paused_changed,
            pause_message=f"{escaped}: send buffers hold %d bytes (cap %d): pausing local reads",
            resume_message=f"{escaped}: sent the backlog: resuming local reads",
            pause_event=log_event("local_reads_paused", channel=name),
            resume_event=log_event("local_reads_resumed", channel=name),
        )
        self._liveness = self._new_liveness()
        self._connects = PeerConnects(self._connect, self._peer_connect_done, self)
        self._connect_purpose: dict[int, ConnectPurpose] = {}
        """What each pending connect is for."""
        # Calls made per read and per write go straight to the session (no
        # extra Python frame on the data path).
        self.get_buffer = self._session.receive_buffer
        self.outbound_buffer = self._session.outbound_buffer

    def _new_liveness(self) -> Liveness:
        settings = self.settings
        return Liveness(
            self.reactor,
            self,
            handshake_timeout=settings.handshake_timeout,
            keepalive_interval=settings.keepalive_interval,
            dead_after=settings.dead_after,
            send_ping=self._send_ping,
            give_up=self._lost,
            heard_at=self._last_read_at,
            quiet=self._release_idle_buffers,
            patient=self._session.role is Role.SERVER,
        )

    def _release_idle_buffers(self) -> None:
        """A keepalive tick found nothing read lately: give back what a busy channel
        holds (receive buffers, empty send rings, the output FIFO, TLS's
        ciphertext buffers); each comes back with the next bytes."""
        if not self.closed and self._transport is not None:
            self._session.release_idle_buffers()
            self._transport.release_idle()

    def _last_read_at(self) -> float:
        """When the channel last read anything, Python or the plane (the liveness's evidence)."""
        plane = self._plane
        at = self._python_read_at
        return at if plane is None else max(at, plane.last_read_at)

    # ------------------------------------------------------------ the role's calls

    @property
    def state(self) -> ChannelState:
        return self._session.state

    @property
    def ready(self) -> bool:
        """The peer said HELLO and the channel has not failed: streams may open."""
        return self._session.ready

    def request_connect(self, mapping: int, host: str, port: int) -> None:
        """Client: declare an ``-L`` mapping (sent with our HELLO at ``start``)."""
        self._session.request_connect(mapping, host, port)

    def request_bind(self, mapping: int, host: str, port: int) -> None:
        """Client: declare an ``-R`` mapping (sent with our HELLO at ``start``)."""
        self._session.request_bind(mapping, host, port)

    def request_connect_unix(self, mapping: int, path: str) -> None:
        """Client: declare an ``-L`` to a Unix socket on the server's side."""
        self._session.request_connect_unix(mapping, path)

    def request_bind_unix(self, mapping: int, path: str) -> None:
        """Client: declare an ``-R`` listening on a Unix socket on the server's side."""
        self._session.request_bind_unix(mapping, path)

    def request_udp(self, mapping: int, host: str, port: int, *, bind: bool) -> None:
        """Client: declare an ``-L udp:`` (UDP-CONNECT) or ``-R udp:`` (UDP-BIND)."""
        if bind:
            self._session.request_udp_bind(mapping, host, port)
        else:
            self._session.request_udp_connect(mapping, host, port)

    def send_datagram(self, mapping: int, association: int, payload: bytes) -> bool:
        """One datagram into the channel; False when it was dropped (UDP's way)."""
        if self.closed or not self._session.send_datagram(mapping, association, payload):
            return False
        self.schedule_flush()
        return True

    def request_dynamic(self, mapping: int) -> None:
        """Client: declare a ``-D`` mapping (sent with our HELLO at ``start``)."""
        self._session.request_dynamic(mapping)

    def cancel_mapping(self, mapping: int) -> None:
        """Client: UNMAP a removed forward; streams already open on it carry on."""
        self._session.cancel_mapping(mapping)
        self.schedule_flush()

    def start(self) -> None:
        """Send our HELLO (and whatever the owner declared) and start reading."""
        self._resumption.start()
        self._start_connection()

    @property
    def accepting(self) -> bool:
        """New local connections can become streams: the channel is up, or down
        and waiting for a resume (they are held until it comes)."""
        return self.ready or self.suspended

    @property
    def suspended(self) -> bool:
        """The connection broke and the streams wait for a resume (until it is done)."""
        return self._resumption.suspended

    @property
    def suspended_at(self) -> float | None:
        """When the connection broke, while suspended."""
        return self._resumption.suspended_at

    @property
    def transport(self) -> Transport | None:
        return self._transport

    def surrender_transport(self) -> Transport | None:
        """Give the connection up to another owner (a busy reply finishing a TLS
        handshake to say why); the channel then closes without it."""
        transport, self._transport = self._transport, None
        return transport

    @property
    def peer_certificate(self) -> bytes | None:
        """The peer's TLS certificate, where the transport asked for one."""
        return getattr(self._transport, "peer_certificate", None)

    @property
    def resumable(self) -> bool:
        """Its session can still be resumed (it may have given up: ``resume_lost``)."""
        return self._session.resumable

    @property
    def resume_lost(self) -> str | None:
        return self._session.resume_lost

    @property
    def session_id(self) -> str | None:
        return self._session.session_id

    @property
    def resume_at(self) -> tuple[str, int] | None:
        """Client: where the server said to resume (its ``--advertise``), if it did."""
        return self._session.resume_at

    @property
    def peer_asks_route(self) -> bool:
        """Server: the client asked where to resume, so it understands ``elsewhere``."""
        return self._session.peer_asks_route

    @property
    def resume_key(self) -> bytes:
        return self._session.resume_key

    def can_open_stream(self) -> bool:
        session = self._session
        return (
            not (self.closed or self.draining or not self.accepting) and session.can_open_stream()
        )

    def open_stream(
        self,
        mapping: int,
        sock: socket.socket,
        label: str,
        *,
        target: tuple[str, int] | None = None,
        on_open: OpenHook | None = None,
    ) -> LocalStream | None:
        """Carry a freshly accepted local connection as a new stream (SYN), naming
        ``target`` on a dynamic mapping; ``on_open`` hears the peer's answer first."""
        session = self._session
        if not self.can_open_stream():
            abort_socket(sock)
            return None
        stream_id = session.open_stream(mapping, target)
        stream = self._new_stream(stream_id, sock, f"stream {stream_id} {label}")
        stream.on_open = on_open
        self._count_opened(stream, mapping)
        self.streams[stream_id] = stream
        if log.isEnabledFor(logging.DEBUG):
            opened = self.stream_event("stream_opened", stream)
            log.debug("%s: %s opening", self.name, stream.label, extra=opened)
        self.schedule_flush()
        return stream

    def _new_stream(self, stream_id: int, sock: socket.socket, label: str) -> LocalStream:
        window = self._session.window
        if self._plane is None:
            return LocalStream(self.reactor, self, stream_id, sock, label, window)
        return PlaneStream(self.reactor, self, stream_id, sock, label, window, self._plane)

    def stream_event(
        self, name: str, stream: LocalStream, reason: str | None = None
    ) -> dict[str, object]:
        """``extra=`` for a log line about one of this channel's streams."""
        return log_event(name, channel=self.name, stream=stream.id, mapping=stream.mapping,
                         reason=reason)  # fmt: skip

    def _count_opened(self, stream: LocalStream, mapping: int | str) -> None:
        label = self.owner.metric_label(self, mapping) if isinstance(mapping, int) else mapping
        stream.mapping = label
        self.meter.streams_opened[label] += 1

    def _count_ended(self, stream: LocalStream, error: str | None) -> None:
        self.meter.stream_ended(stream.mapping, stream.bytes_up, stream.bytes_down, error)

    def say_goodbye(self) -> None:
        """Draining and idle: send BYE, so the peer closes the channel once every
        byte we sent has reached its local sockets (closing now could cut that)."""
        if not self.said_goodbye and not self.closed and self._session.ready:
            self.said_goodbye = True
            self._session.say_bye()
            self.schedule_flush()

    def _close_if_peer_left(self) -> None:
        if self._peer_leaving and not self.busy and not self.closed:
            self.closed_by_peer = True
            self.close(f"{self.peer_role} closed the channel: shutting down", error=False,
                       tell_peer=False, code=ErrorCode.SHUTDOWN)  # fmt: skip

    @property
    def heard_hello(self) -> bool:
        """The peer said HELLO on the current connection: it is a reactor-mux peer
        that took the connection on, whatever ended it later."""
        return self._session.hello_received

    @property
    def auth_failed(self) -> bool:
        """The channel ended because authentication failed (either side)."""
        return self.close_code is ErrorCode.AUTH_FAILED

    @property
    def peer_shut_down(self) -> bool:
        """The peer ended the channel on purpose (BYE, or ERROR shutdown), not because
        something failed or vanished."""
        return self.closed_by_peer and self.close_code is ErrorCode.SHUTDOWN

    @property
    def busy(self) -> bool:
        """Streams (or connects for streams) are still open."""
        return bool(self.streams or len(self._connects))

    # ------------------------------------------------------ TransportProtocol

    def buffer_updated(self, count: int) -> None:
        plane = self._plane
        if plane is not None:  # the plane delivers the read's leading data frames in place
            rx = self._session.receive_state
            if rx is not None:
                count, events = plane.take_input(rx, count)
                if events:
                    self.on_plane_events(events)
                if plane.has_backlog():  # ACKs it applied opened windows
                    self.plane_woken()
                if not count:
                    self._python_read_at = monotonic()  # the liveness's evidence
                    if self._inbound_storage() >= self._inbound_cap.limit:
                        self._inbound_cap.check()
                    if self._python_read_asked and not self.closed:
                        self._python_read_asked = False
                        self._update_interest()
                        if self._plane_reads:
                            plane.wake_input()
                            self.plane_woken()
                    return
                if self.closed:
                    return
        self._python_input(count)

    def _python_input(self, count: int) -> None:
        """Decode and handle ``count`` bytes read after the decoder's end."""
        self._python_read_at = monotonic()  # the liveness's evidence
        dispatch = self._dispatch
        for event in self._session.receive_into(count):
            dispatch(event)
            if self.closed:
                return
        plane = self._plane
        held = self._inbound_held if plane is None else self._inbound_held + plane.inbound_held
        if held >= self._inbound_cap.limit:  # the common case skips a call
            self._inbound_cap.check()
        if self._outbound_cap.paused:  # an ACK or a barrier's PONG may have freed rings
            self._session.release_idle_outbound()
            self._outbound_cap.check()
            if self._outbound_cap.paused:  # still held: have the peer confirm what it has
                self._session.request_barrier()
                self.schedule_flush()
        if self._session.has_output():  # replies, ACKs; most reads of data owe nothing
            self.schedule_flush()
        if self._peer_leaving:  # a refusal or reset may have freed the last stream
            self._close_if_peer_left()
        if self._plane is not None and not self.closed:
            self._python_read_asked = False
            self._update_interest()
            if self._plane_reads:
                self._plane.wake_input()  # the plane reads the channel again
                self.plane_woken()

    def eof_received(self) -> None:
        session = self._session
        clean = not session.mid_frame and session.state is not ChannelState.FAILED
        if session.resumable and not self.draining:
            self._lost("peer closed the channel", ErrorCode.PEER_CLOSED)
            return
        reason = session.receive_eof()
        self.close(reason, error=not clean, code=session.failure_code)

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        if authentication:
            self.close(reason, code=ErrorCode.AUTH_FAILED)
        else:
            self._lost(reason, code or ErrorCode.PEER_CLOSED)

    # ------------------------------------------------------------- resume

    def _lost(self, reason: str, code: ErrorCode) -> None:
        """The connection broke (reset, EOF, keepalive or handshake timeout): keep
        the streams for a resume where the session allows it, else close."""
        if self.closed:
            return
        if not self._session.resumable or self.draining:
            lost = self._session.resume_lost
            self.close(f"{reason} (not resumed: {lost})" if lost and not self.draining else reason,
                       code=code)  # fmt: skip
            return
        self._liveness.stop()
        transport, self._transport = self._transport, None
        if self._plane is not None:
            self._plane.set_channel(-1)  # before its descriptor can be reused
            self._plane.set_input(None, -1)
            self._plane_input, self._plane_reads = (None, -1, 0), False
        if transport is not None:
            transport.close()
        self._flush_pending = False
        first = self._resumption.suspend()
        self.owner.on_channel_suspended(self, reason, first)

    def _resume_expired(self, reason: str, code: ErrorCode) -> None:
        if not self.closed:
            self.close(reason, code=code)

    def attach(self, transport: Transport, peer: str) -> None:
        """Client: a new connection to resume this channel's session over."""
        if self.closed or not self.suspended or self._transport is not None:
            raise RuntimeError("attach needs a suspended channel")
        self._transport = transport
        self.peer = peer
        self._resumption.reconnect()
        self._liveness = self._new_liveness()
        self._start_connection()

    def _start_connection(self) -> None:
        self._liveness.start()
        assert self._transport is not None
        self._transport.attach(self)
        self._update_interest()
        self._flush()

    def challenge_resume(self, key: bytes) -> None:
        """Server: this connection asks to resume a session we hold."""
        self._session.challenge_resume(key)
        self.schedule_flush()

    def refuse_resume(self, reason: str) -> None:
        """Server: no such session (any more): say so, and close."""
        self.close(f"{RESUME_REFUSED}: {reason}", code=ErrorCode.RESUME_REFUSED,
                   after_replies=True)  # fmt: skip

    def hand_over(self) -> Handover:
        """Server: this connection proved it holds another channel's session: give
        that channel the transport and this session (what it read and queued).
        This channel ends here, without closing the transport or telling its owner
        (the connection lives on in the channel that adopts it)."""
        transport, self._transport = self._transport, None
        assert transport is not None
        self._liveness.stop()
        self._resumption.stop()
        if self._plane is not None:  # the socket and its TLS session are the adopter's now
            self._plane.set_channel(-1)
            self._plane.set_input(None, -1)
            self._plane_input, self._plane_reads = (None, -1, 0), False
        self.closed = True
        return Handover(transport, self._session, self.peer)

    def adopt(self, connection: Channel) -> None:
        """Server: carry on over ``connection``, which proved it holds our session.
        A connection we still think alive is cut first: the latest proof wins."""
        if self._transport is not None:
            self._lost("the client resumed on a new connection", ErrorCode.REPLACED)
        if self.closed:
            connection.refuse_resume("the session ended")
            return
        handover = connection.hand_over()
        self._resumption.adopt(handover)
        self._transport = transport = handover.transport
        self.peer = handover.peer
        self._liveness = self._new_liveness()
        self._liveness.start()
        transport.handover(self)
        self._trust_transport()
        self._update_interest()
        self.schedule_flush()

    def _trust_transport(self) -> None:
        """The peer proved itself: the transport may lift a stranger's bounds."""
        if self._transport is not None and self._session.peer_trusted:
            self._transport.trust()

    def _resumed(self, event: SessionResumed) -> None:
        self._resumption.resumed()
        self._trust_transport()
        self.meter.resumes += 1
        self._liveness.handshake_done()
        self.owner.on_channel_resumed(self, event)
        for stream in list(self.streams.values()):
            stream.update()
        self.schedule_flush()

    def write_ready(self) -> None:
        self._flush()

    def close_after_bug(self) -> None:
        self.close("internal error", code=ErrorCode.INTERNAL)

    # ------------------------------------------------------------- events

    def _dispatch(self, event: Event) -> None:
        match event:
            case DataReceived():
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.deliver(event.data)
            case CreditGranted():
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.update()
            case PeerBlocked():
                stream = self.streams.get(event.stream_id)
                if stream is not None and stream.keeping_up():
                    grown = self._session.grow_window(event.stream_id, event.window)
                    if grown:
                        stream.window_grown(grown)
                        log.debug("%s: %s window grown to %d", self.name, stream.label, grown,
                                  extra={**self.stream_event("window_grown", stream),
                                         "bytes": grown})  # fmt: skip
            case PeerLeaving():
                self.draining = True
                self._peer_leaving = True
                self._close_if_peer_left()
            case StreamRequested():
                self._on_stream_requested(event)
            case StreamAccepted():
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._stream_accepted(stream)
            case StreamRefused():
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._count_ended(stream, "refused_by_peer")
                    self.owner.on_stream_refused(self, stream, event.reason)
                    if stream.on_open is not None:
                        stream.on_open.refused(stream.sock, event.reason)
                        stream.close_local()
                    else:
                        stream.abort_local()
            case StreamEnded():
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_finished()
            case DeliveryFailed():
                stream = self.streams.get(event.stream_id)
                if isinstance(stream, PlaneStream):
                    stream.on_failed(event.error)
            case StreamReset():
                self._connects.cancel(event.stream_id)
                self._connect_purpose.pop(event.stream_id, None)
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self._count_ended(stream, "reset_by_peer")
                    if log.isEnabledFor(logging.DEBUG):
                        reset = self.stream_event("stream_reset", stream, event.reason)
                        log.debug("%s: %s reset by peer: %s", self.name, stream.label,
                                  event.reason, extra=reset)  # fmt: skip
                    stream.abort_local()
            case HelloReceived():
                self.meter.channels_opened += 1
                self._trust_transport()
                self._liveness.handshake_done()
                self.owner.on_hello(self, event)
            case SessionResumed():
                self._resumed(event)
            case ResumeRequested():
                self.owner.on_resume_requested(self, event)
            case ResumeProved():
                self.owner.on_resume_proved(self, event)
            case PongReceived():
                # Any traffic proves liveness (the read that brought it said so);
                # the answer to our last PING also times the round trip.
                sent = self._ping_sent
                if sent is not None and sent[0] == event.token:
                    self._rtt = self.reactor.time() - sent[1]
                    self._ping_sent = None
            case DatagramReceived():
                self.owner.on_datagram(self, event)
            case MappingRequested():
                self._answer_mapping(event)
            case MappingAccepted():
                self.owner.on_mapping_accepted(self, event)
            case MappingRefused():
                self.owner.on_mapping_refused(self, event)
            case MappingCancelled():
                self.owner.on_mapping_cancelled(self, event)
            case ChannelFailed() if event.kept:
                self._lost(f"{self.peer_role} turned the connection away: {event.reason}",
                           event.code or ErrorCode.PEER_CLOSED)  # fmt: skip
            case ChannelFailed(by_peer=True):
                self.closed_by_peer = True
                code, text = event.code, text_of(event.reason)
                if code is ErrorCode.SHUTDOWN:
                    self.close(f"{self.peer_role} closed the channel: {text}", error=False,
                               code=code)  # fmt: skip
                elif code is ErrorCode.AUTH_FAILED:
                    self.close(text, code=code)
                else:
                    self.close(f"{self.peer_role} reported an error: {text}", code=code)
            case ChannelFailed(code=ErrorCode.AUTH_FAILED | ErrorCode.NOT_A_PEER):
                self.close(event.reason, code=event.code)
            case ChannelFailed():
                self.close(f"protocol error: {event.reason}", code=event.code)
            case _:
                unhandled(event)

    def _answer_mapping(self, event: MappingRequested) -> None:
        session = self._session
        answer = self.owner.on_mapping_requested(self, event)
        if event.kind.datagrams:
            match answer:
                case MappingGranted(bound=(host, port)):
                    session.accept_bind(event.mapping, host, port, event.kind)
                case MappingGranted():
                    session.accept(event.mapping, event.kind)
                case MappingDenied(failure=failure):
                    self.meter.refusal("mapping", failure.kind)
                    session.refuse(event.mapping, event.kind, failure.wire)
            return
        match answer:
            case MappingGranted(bound=None) if event.kind is MappingKind.CONNECT:
                session.accept_connect(event.mapping)
            case MappingGranted(bound=None) if event.kind is MappingKind.DYNAMIC:
                session.accept_dynamic(event.mapping)
            case MappingDenied(failure=failure) if event.kind is MappingKind.DYNAMIC:
                self.meter.refusal("mapping", failure.kind)
                session.refuse_dynamic(event.mapping, failure.wire)
            case MappingGranted(bound=(host, port)) if event.kind is MappingKind.BIND:
                session.accept_bind(event.mapping, host, port)
            case MappingGranted(bound=str() as path) if event.kind is MappingKind.BIND:
                session.accept_bind_unix(event.mapping, path)
            case MappingDenied(failure=failure) if event.kind is MappingKind.CONNECT:
                self.meter.refusal("mapping", failure.kind)
                session.refuse_connect(event.mapping, failure.wire)
            case MappingDenied(failure=failure):
                self.meter.refusal("mapping", failure.kind)
                session.refuse_bind(event.mapping, failure.wire)
            case _:
                raise AssertionError(f"{answer!r} does not answer {event.kind.name}")

    # ------------------------------------------------- streams the peer opens

    def _stream_accepted(self, stream: LocalStream) -> None:
        """SYN OK for a stream we opened: tell its opener (a SOCKS reply goes out
        before any byte of the stream), then move data.  A stream the peer reset
        later in the same read is already gone from the session: its StreamReset,
        next, closes it."""
        if self._session.stream_state(stream.id) is StreamState.CLOSED:
            return
        hook, stream.on_open = stream.on_open, None
        if hook is not None:
            early = hook.accepted(stream.sock)
            if early is None:
                stream.abort("cannot reply to the local client")
                return
            if early and self._session.send_data(stream.id, early):
                self.schedule_flush()
        stream.start_reading()

    def _on_stream_requested(self, event: StreamRequested) -> None:
        if self.draining:
            self._refuse_stream(event.stream_id, Failure(FailureClass.SHUTDOWN, SHUTTING_DOWN))
            return
        target = self.owner.target_for(self, event.mapping, event.target)
        purpose = ConnectPurpose(self.owner.mapping_label(self, event.mapping),
                                 self.owner.metric_label(self, event.mapping))  # fmt: skip
        self._connect_purpose[event.stream_id] = purpose
        if isinstance(target, LocalService):
            try:
                sock = target.open()
            except OSError as exc:
                self._peer_connect_done(event.stream_id, target.address, None,
                                        connect_failure(exc))  # fmt: skip
                return
            tune_stream_socket(sock)
            self._peer_connect_done(event.stream_id, target.address, sock, None)
            return
        if not isinstance(target, tuple):
            del self._connect_purpose[event.stream_id]
            unknown = Failure(FailureClass.FAILED, f"mapping {event.mapping} is not available")
            self._refuse_stream(event.stream_id, target or unknown)
            return
        self._connects.start(event.stream_id, *target)

    def _refuse_stream(self, stream_id: int, failure: Failure) -> None:
        """SYN ERROR, its reason led by the failure's class (docs/protocol.md §5.1): a
        dynamic stream's opener turns it into a SOCKS reply code."""
        if self._session.refuse_stream(stream_id, failure.wire):
            self.meter.refusal("stream", failure.kind)

    def _connect(self, host: str, port: int, on_done: DoneCallback, owner: Owner) -> Cancellable:
        def check(address: str, address_port: int) -> str | None:
            return self.owner.check_resolved(self, host, address, address_port)

        timeout = self.settings.connect_timeout
        connector = Connector(
            self.reactor, self.resolver, host, port, on_done, timeout, owner, address_check=check
        )
        return connector.start()

    def _peer_connect_done(
        self, stream_id: int, address: str, sock: socket.socket | None, error: Failure | None
    ) -> None:
        purpose = self._connect_purpose.pop(stream_id, ConnectPurpose("", ""))
        what = purpose.label
        if sock is None:
            assert error is not None
            log.warning(
                "%s: stream %d %s: connect to %s failed: %s",
                self.name,
                stream_id,
                what,
                address,
                error,
                extra=log_event(
                    "connect_failed",
                    channel=self.name,
                    stream=stream_id,
                    mapping=what,
                    peer=address,
                    reason=error.text,
                ),
            )
            failed = Failure(error.kind, f"connect to {address} failed: {error}")
            self._refuse_stream(stream_id, failed)
        elif not self._session.accept_stream(stream_id):
            sock.close()  # the peer reset the stream, or the channel failed, since its SYN
        else:
            label = f"stream {stream_id} -> {address}"
            stream = self._new_stream(stream_id, sock, label)
            self._count_opened(stream, purpose.metric)
            self.streams[stream_id] = stream
            stream.start_reading()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: %s opened", self.name, label,
                          extra=log_event("stream_opened", channel=self.name, stream=stream_id,
                                          mapping=what, peer=address))  # fmt: skip
        self.schedule_flush()
        if self._peer_leaving:
            self._close_if_peer_left()

    # ------------------------------------------------------------ StreamHost

    def outbound_space(self, stream_id: int) -> int:
        if self._outbound_cap.paused:
            return 0
        return self._session.outbound_space(stream_id)

    def outbound_added(self, stream_id: int, count: int) -> None:
        session = self._session
        session.outbound_added(stream_id, count)
        # The read that crosses the cap is the only overshoot.
        if session.outbound_held >= self._outbound_cap.limit:
            self._outbound_cap.check()
        self.schedule_flush()

    def outbound_eof(self, stream_id: int) -> None:
        self._session.end_stream(stream_id)
        self.schedule_flush()

    def inbound_delivered(self, stream_id: int, count: int) -> None:
        if self._session.inbound_delivered(stream_id, count):  # an ACK is due
            self.schedule_flush()

    def inbound_storage_changed(self, delta: int) -> None:
        self._inbound_held += delta
        if delta < 0 and self._inbound_cap.paused:
            self._inbound_cap.check()

    @property
    def inbound_paused(self) -> bool:
        return self._inbound_cap.paused

    def stream_closed(self, stream: LocalStream, reason: str, *, reset: bool) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        self._count_ended(stream, "local_error" if reset else None)
        if self._peer_leaving:
            self.reactor.call_soon(self._close_if_peer_left, self)
        if reset and not self.closed:
            self._session.reset_stream(stream.id, reason)
            self.schedule_flush()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: %s %s (%d bytes sent, %d received)", self.name, stream.label, reason,
                      stream.bytes_up, stream.bytes_down,
                      extra=self.stream_event("stream_closed", stream, reason))  # fmt: skip

    # ------------------------------------------------------- buffer caps

    def _inbound_storage(self) -> int:
        """Storage the streams' inbound rings hold (Python's and the plane's)."""
        plane = self._plane
        return self._inbound_held + (plane.inbound_held if plane is not None else 0)

    def _release_idle_inbound(self) -> None:
        for stream in self.streams.values():
            stream.release_idle_inbound()
        if self._plane is not None:
            self._plane.release_idle_inbound()

    def _inbound_paused_changed(self, paused: bool) -> None:
        self._liveness.reads_paused = paused
        if self._plane is not None:
            self._plane.set_inbound_paused(paused)
        self._update_interest()

    # ------------------------------------------------------ the data plane

    def on_plane_events(self, events: list[data_plane.PlaneEvent]) -> None:
        """What the compiled data plane did with this channel's streams.  The
        channel's own end (EOF, a failed read or send) is acted on after every
        other event of the batch: the plane has already done what they report
        (an ACK counted, a FIN written), and a resumed session must know it."""
        session = self._session
        flush = False
        ended: Callable[[], None] | None = None
        for kind, _plane, stream_id, value in events:
            if kind == data_plane.OUTPUT:
                flush = True
                if session.outbound_held >= self._outbound_cap.limit:
                    self._outbound_cap.check()
            elif kind == data_plane.SENT:  # the plane sent what it read, itself
                flush |= session.sent_directly(value)
                limit = self._outbound_cap.limit
                if session.outbound_held >= limit:
                    self._outbound_cap.check()
                assert self._plane is not None
                self._plane.set_send_reports(session.sends_before_barrier, limit)
                self._resumption.wake()
            elif kind == data_plane.FIN_SENT:
                session.fin_sent(stream_id)
            elif kind == data_plane.CHANNEL_INPUT:  # bytes with a command: Python's read
                self._python_input(value)
                if self.closed:
                    return
            elif kind == data_plane.CHANNEL_READABLE:  # the buffer must grow: Python reads
                self._python_read_asked = True
                self._update_interest()
            elif kind == data_plane.CHANNEL_EOF:
                ended = ended or self.eof_received
            elif kind == data_plane.CHANNEL_READ_FAILED:
                failure = describe_error(OSError(value, os.strerror(value)))
                ended = ended or partial(self.transport_failed, f"channel read failed: {failure}")
            elif kind == data_plane.OUTPUT_LEFT:
                self._update_interest(True)  # the rest goes when the socket can take it
            elif kind == data_plane.CHANNEL_FAILED:
                reason = f"channel write failed: {os.strerror(value)}"
                ended = ended or partial(self._lost, reason, ErrorCode.PEER_CLOSED)
            elif kind == data_plane.CHANNEL_TLS_FAILED and self._transport is not None:
                reason = self._transport.plane_failure(value)
                ended = ended or partial(self.transport_failed, reason, code=ErrorCode.TLS)
            elif kind == data_plane.ACK:
                flush |= session.ack_due(stream_id, value)
            elif kind == data_plane.BLOCKED:
                session.send_blocked(stream_id)
                flush = True
            elif kind == data_plane.RING_FREED:
                pass  # the paused inbound cap is checked once, after the batch
            else:
                stream = self.streams.get(stream_id)
                if isinstance(stream, PlaneStream):  # a bug there costs the stream only
                    self.reactor.call_guarded(stream, stream.on_plane_event, kind, value)
        if ended is not None:
            ended()
            return
        if self._inbound_cap.paused:  # rings the plane emptied may let reads resume
            self._inbound_cap.check()
        if flush:
            self.schedule_flush()

    def plane_acks(self, events: list[data_plane.PlaneEvent]) -> None:
        self.on_plane_events(events)

    def plane_woken(self) -> None:
        if self._plane_hub is not None:
            self._plane_hub.pump_soon()

    def flow_record(self, stream_id: int) -> Stream:
        return self._session.flow_record(stream_id)

    def outbound_slot(self, stream_id: int) -> int:
        return self._session.outbound_slot(stream_id)

    def _outbound_paused_changed(self, paused: bool) -> None:
        if self._plane is not None:
            self._plane.set_paused(paused)
        if paused:
            # With resume on, sent bytes stay in the rings until the peer confirms
            # them: ask now rather than at the next quiet tick.
            self._session.request_barrier()
            self.schedule_flush()
        else:
            for stream in list(self.streams.values()):
                stream.update()

    # ------------------------------------------------------------- writing

    @property
    def limit_refusals(self) -> tuple[int, int]:
        """Mappings and streams the session refused for its limits (not yet in the meter)."""
        return self._session.mapping_limit_refusals, self._session.stream_limit_refusals

    def stream_report(self, stream: LocalStream) -> tuple[int, int, int]:
        """(bytes in flight, send window, bytes waiting to be sent) of one stream."""
        return self._session.stream_report(stream.id)

    @property
    def rtt(self) -> float | None:
        """The round trip of the last keepalive PING that was answered."""
        self._fold_plane_pong()
        return self._rtt

    def _fold_plane_pong(self) -> None:
        """The data plane takes keepalive PONGs itself (no Python read for them):
        the answer to our last PING times the round trip, as ``PongReceived`` does."""
        if self._plane is None:
            return
        pong = self._plane.take_pong()
        sent = self._ping_sent
        if pong is not None and sent is not None and pong[0] == sent[0]:
            self._rtt = pong[1] - sent[1]
            self._ping_sent = None

    def _send_ping(self, token: int) -> None:
        self._fold_plane_pong()
        self._ping_sent = (token, self.reactor.time())
        self._session.ping(token)
        self.schedule_flush()

    def schedule_flush(self) -> None:
        if not self._flush_pending and not self.closed:
            self._flush_pending = True
            self.reactor.call_soon(self._flush, self)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed:
            return
        if self._transport is None:
            return  # suspended: output waits for a resume
        try:
            left_over = self._send_output()
        except TransportError as exc:
            if exc.authentication:
                self.close(exc.reason, code=ErrorCode.AUTH_FAILED)
            else:
                self._lost(exc.reason, exc.code)
            return
        except OSError as exc:
            self._lost(f"channel write failed: {describe_error(exc)}", ErrorCode.PEER_CLOSED)
            return
        if self._outbound_cap.paused:
            # Rings the channel emptied give their storage back, then see if
            # what is left is down to half the cap.
            self._session.release_idle_outbound()
            self._outbound_cap.check()
        self._update_interest(left_over)
        self._resumption.wake()
        if self._plane is not None:
            self._let_plane_send(not left_over)

    def _report_next_send(self) -> None:
        """The barrier tick stopped (nothing left to confirm): the plane says when it
        sends again, which starts the tick again (SENT)."""
        if self._plane is not None:
            self._plane.set_send_reports(1, self._outbound_cap.limit)

    def _let_plane_send(self, caught_up: bool) -> None:
        """The plane may send the channel's output itself while the channel is
        open on a socket it can drive (plain, or a TLS session the plane takes
        over: io/nativetls.py), its output attached and nothing of Python's left."""
        plane, transport, session = self._plane, self._transport, self._session
        assert plane is not None
        fd, tls = (-1, 0) if transport is None or self.closed else transport.plane_socket()
        plane.set_channel(fd, tls)
        plane.set_send_ok(fd >= 0 and caught_up and session.state is ChannelState.OPEN
                          and session.output_attached and not session.has_output())  # fmt: skip

    def _send_output(self) -> bool:
        """Send what the transport takes now; return whether output is left over
        (raises ``OSError`` if the transport failed)."""
        session = self._session
        if self._transport is None:
            return False
        send = self._transport.send
        while session.has_output():
            views = session.output_views()
            if not views:
                return True  # queued, but nothing may leave yet
            try:
                sent = send(views)
            except (BlockingIOError, InterruptedError):
                return True
            session.output_sent(sent)
            if sent < sum(map(len, views)):
                return True
        return False

    def _update_interest(self, output_left: bool | None = None) -> None:
        """Read unless paused (or while the plane reads); write while output is left
        (``_flush`` knows; else ask)."""
        if not self.closed and self._transport is not None:
            if output_left is None:
                output_left = self._session.has_output()
            if self._plane is not None:
                self._let_plane_read()
            read = not self._inbound_cap.paused and (
                not self._plane_reads or self._python_read_asked
            )
            self._transport.set_interest(read=read, write=output_left)

    def _let_plane_read(self) -> None:
        """The plane reads the channel's socket itself while the channel is open on
        a socket it can drive, trusted, its output attached and its reads not paused."""
        plane, transport = self._plane, self._transport
        assert plane is not None
        rx = None if self._inbound_cap.paused or self.closed else self._session.receive_state
        fd, tls = (-1, 0) if rx is None or transport is None else transport.plane_socket()
        wanted = (rx if fd >= 0 else None, fd, tls)
        if wanted != self._plane_input:
            plane.set_input(*wanted)
            self._plane_input = wanted
            self._plane_reads = fd >= 0
            if self._plane_reads:
                self.plane_woken()  # the input is on the work list: pump this tick

    # ------------------------------------------------------------- closing

    def close(
        self,
        reason: str,
        *,
        code: ErrorCode | None,
        error: bool = True,
        tell_peer: bool = True,
        after_replies: bool = False,
    ) -> None:
        """End the channel: every stream is reset locally, the transport closed.

        ``error`` is false for orderly ends (EOF between frames, shutdown), so
        owners can log those quietly; ``tell_peer`` false skips the ERROR frame
        (the peer said BYE: what is queued is sent, then the socket closes);
        ``after_replies``: the handshake replies queued go before the ERROR;
        ``code`` says what ended it, for the owner to decide by.
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.close_was_error = error
        self.close_code = code
        try:
            self._liveness.stop()
            self._resumption.stop()
            self._connects.cancel_all()
            streams, self.streams = self.streams, {}
            self.streams_reset_on_close = len(streams)
            for stream in streams.values():
                self._count_ended(stream, "channel_closed")
                stream.abort_local()
            by_mapping, by_stream = self.limit_refusals
            self.meter.refused["mapping", "limit"] += by_mapping
            self.meter.refused["stream", "limit"] += by_stream
            if not tell_peer:
                try:
                    self._send_output()  # what was queued (ACKs) before we go quiet
                except OSError:
                    pass
            self._session.fail(reason, code or ErrorCode.INTERNAL, tell_peer=tell_peer,
                               after_replies=after_replies)  # fmt: skip
            self._send_output()  # last words: the peer reads why (our ERROR frame)
        except OSError:
            pass  # the connection is gone: nobody to tell
        except Exception:  # closing is often what a bug called for: it must finish
            log.exception("%s: internal error while closing", self.name)
        finally:
            # Whatever failed above, the socket goes and the owner forgets us.
            if self._plane is not None:  # first: its descriptors go with the transport
                self._plane.set_channel(-1)
                self._plane.set_input(None, -1)
            if self._transport is not None:
                self._transport.close()
            if self._plane is not None and self._plane_hub is not None:
                self._plane_hub.close_plane(self._plane)
                self._plane = None
            if self._session.failed:
                self._session.release_memory()
            self.owner.on_channel_closed(self, reason)


SHUTTING_DOWN = "shutting down"
"""The words a side gives in its ``ERROR shutdown:`` when it closes the channel on purpose."""
