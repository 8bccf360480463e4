"""The channel connection: one TCP socket, its Session, and the streams it carries.

The channel is role-neutral.  Opening a stream (a local connection accepted
on a listener) and answering a peer's SYN (connect to the mapping's target,
then SYN OK or SYN ERROR) work the same for ``-L`` on the client and ``-R``
on the server; what differs between roles (which mappings exist, what a
CONNECT or BIND means) is asked of the ``ChannelOwner``.

Reading takes one ``recv`` of up to a whole receive buffer per readiness
event and hands every frame in it to the session in one call.  Writing is
deferred to the end of the tick (``schedule_flush``) so everything produced
in a tick leaves in as few ``sendmsg`` calls as the socket allows; write
interest is registered only while output is left over.

Liveness: the HELLO exchange must finish within ``handshake_timeout``; after
``keepalive_interval`` of silence from the peer we send PING, and after
``dead_after`` of silence the channel is closed even if TCP has not noticed.

Memory: besides each stream's window, the channel caps what it holds in each
direction (``max_buffer``).  Over the cap, local sockets are no longer read
(outbound) or the channel socket is no longer read (inbound) until the
buffers drain to half the cap; while the channel read is paused we cannot see
the peer's traffic, so the silence clock stops and our PINGs keep telling
the peer we are alive.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable
from typing import Protocol

from reactor_mux.connector import Connector
from reactor_mux.localstream import LocalStream
from reactor_mux.netutil import (
    abort_socket,
    describe_error,
    format_address,
    tune_channel_socket,
)
from reactor_mux.protocol.events import (
    ChannelFailed,
    CreditGranted,
    DataReceived,
    Event,
    HelloReceived,
    MappingAccepted,
    MappingRefused,
    MappingRequested,
    PongReceived,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.session import Session
from reactor_mux.reactor import READ, WRITE, IOWatch, Reactor, Timer
from reactor_mux.resolver import Resolver
from reactor_mux.settings import ChannelSettings

log = logging.getLogger("reactor_mux")


DRAIN_POLL = 0.05
"""Seconds between checks, while draining, for streams still open."""


def wait_for_streams(
    reactor: Reactor,
    channels: Callable[[], Iterable[Channel]],
    timeout: float,
    done: Callable[[], None],
) -> Callable[[], None]:
    """Call ``done()`` once no channel has an open stream, or after ``timeout``.

    Used by both roles when draining; returns a function that cancels the wait.
    """
    deadline = reactor.time() + timeout
    timer: list[Timer] = []

    def check() -> None:
        busy = sum(1 for channel in channels() if channel.busy)
        if busy and reactor.time() < deadline:
            timer[:] = [reactor.call_later(DRAIN_POLL, check)]
            return
        if busy:
            log.warning("drain timeout: closing %d channel(s) with open streams", busy)
        done()

    def cancel() -> None:
        for pending in timer:
            pending.cancel()

    check()
    return cancel


class ChannelOwner(Protocol):
    """What a channel asks of the role (client or server) that owns it."""

    def target_for(self, channel: Channel, mapping: int) -> tuple[str, int] | None:
        """Where a peer SYN on ``mapping`` should connect, or None to refuse."""

    def on_hello(self, channel: Channel, event: HelloReceived) -> None: ...

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> None: ...

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None: ...

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None: ...

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None: ...

    def on_channel_closed(self, channel: Channel, reason: str) -> None: ...


class Channel:
    def __init__(
        self,
        reactor: Reactor,
        resolver: Resolver,
        sock: socket.socket,
        session: Session,
        owner: ChannelOwner,
        name: str,
        settings: ChannelSettings,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.sock = sock
        self.session = session
        self.owner = owner
        self.name = name
        self.settings = settings
        self.streams: dict[int, LocalStream] = {}
        self._connecting: dict[int, Connector] = {}
        tune_channel_socket(sock, settings.keepalive_interval)
        self._watch = IOWatch(reactor, sock, self._on_io)
        self._flush_pending = False
        self.closed = False
        self.close_reason: str | None = None
        self.close_was_error = False
        self.draining = False
        self.inbound_held = 0
        self._read_paused = False
        self._outbound_paused = False
        self._last_received = reactor.time()
        self._ping_token = 0
        self._handshake_timer: Timer | None = None
        self._keepalive_timer: Timer | None = None
        self._handlers: dict[type[Event], Callable[..., None]] = {
            DataReceived: self._on_data,
            CreditGranted: self._on_credit,
            HelloReceived: self._on_hello,
            PongReceived: self._on_pong,
            MappingRequested: self._on_mapping_requested,
            MappingAccepted: self._on_mapping_accepted,
            MappingRefused: self._on_mapping_refused,
            StreamRequested: self._on_stream_requested,
            StreamAccepted: self._on_stream_accepted,
            StreamRefused: self._on_stream_refused,
            StreamEnded: self._on_stream_ended,
            StreamReset: self._on_stream_reset,
            ChannelFailed: self._on_failed,
        }

    def start(self) -> None:
        """Send our HELLO (and whatever the owner queued) and start reading."""
        self._handshake_timer = self.reactor.call_later(
            self.settings.handshake_timeout, self._handshake_expired
        )
        self._schedule_keepalive()
        self._update_interest()
        self._flush()

    # ----------------------------------------------------------- liveness

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if not self.closed and not self.session.ready:
            self.close(f"handshake timed out after {self.settings.handshake_timeout:g}s")

    def _schedule_keepalive(self) -> None:
        self._keepalive_timer = self.reactor.call_later(
            self.settings.keepalive_interval / 2, self._keepalive_tick
        )

    def _keepalive_tick(self) -> None:
        if self.closed:
            return
        now = self.reactor.time()
        if self._read_paused:
            # We are the ones not reading: the peer's silence tells us nothing.
            self._last_received = now
        idle = now - self._last_received
        if idle >= self.settings.dead_after:
            self.close(f"no traffic from the peer for {idle:.1f}s (keepalive timeout)")
            return
        if idle >= self.settings.keepalive_interval or self._read_paused:
            self._ping_token += 1
            self.session.ping(self._ping_token)
            self.schedule_flush()
        self._schedule_keepalive()

    def _on_pong(self, _event: PongReceived) -> None:
        pass  # any traffic proves liveness; the read that brought it did the work

    # ------------------------------------------------------------- reading

    def _on_io(self, mask: int) -> None:
        try:
            if mask & WRITE:
                self._flush()
            if mask & READ and not self.closed:
                self._read()
        except Exception:  # noqa: BLE001 - a bug must cost one channel, not the process
            self._internal_error()

    def _internal_error(self) -> None:
        log.exception("%s: internal error; closing the channel", self.name)
        self.close("internal error")

    def _read(self) -> None:
        session = self.session
        try:
            count = self.sock.recv_into(session.receive_buffer())
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.close(f"channel read failed: {describe_error(exc)}")
            return
        if count == 0:
            clean = not session.mid_frame and session.failed is None
            self.close(session.receive_eof(), error=not clean)
            return
        self._last_received = self.reactor.time()
        handlers = self._handlers
        for event in session.receive_into(count):
            handlers[type(event)](event)
            if self.closed:
                return
        self._check_inbound_cap()
        self.schedule_flush()

    def _on_data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.deliver([event.data])

    def _on_credit(self, event: CreditGranted) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.update()

    def _on_hello(self, event: HelloReceived) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        self.owner.on_hello(self, event)

    def _on_mapping_requested(self, event: MappingRequested) -> None:
        self.owner.on_mapping_requested(self, event)

    def _on_mapping_accepted(self, event: MappingAccepted) -> None:
        self.owner.on_mapping_accepted(self, event)

    def _on_mapping_refused(self, event: MappingRefused) -> None:
        self.owner.on_mapping_refused(self, event)

    def _on_stream_requested(self, event: StreamRequested) -> None:
        stream_id = event.stream_id
        if self.draining:
            self.session.refuse_stream(stream_id, "shutting down")
            return
        target = self.owner.target_for(self, event.mapping)
        if target is None:
            self.session.refuse_stream(stream_id, f"mapping {event.mapping} is not available")
            return
        host, port = target

        def connected(sock: socket.socket | None, error: str | None) -> None:
            try:
                finish_connect(sock, error)
            except Exception:  # noqa: BLE001
                self._internal_error()

        def finish_connect(sock: socket.socket | None, error: str | None) -> None:
            self._connecting.pop(stream_id, None)
            address = format_address(host, port)
            if sock is None:
                log.warning("%s: connect to %s failed: %s", self.name, address, error)
                self.session.refuse_stream(stream_id, f"connect to {address} failed: {error}")
            else:
                label = f"stream {stream_id} -> {address}"
                stream = LocalStream(self, stream_id, sock, label)
                self.streams[stream_id] = stream
                self.session.accept_stream(stream_id)
                stream.start_reading()
                log.debug("%s: %s opened", self.name, label)
            self.schedule_flush()

        connector = Connector(
            self.reactor, self.resolver, host, port, connected, self.settings.connect_timeout
        )
        self._connecting[stream_id] = connector
        connector.start()

    def _on_stream_accepted(self, event: StreamAccepted) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.start_reading()

    def _on_stream_refused(self, event: StreamRefused) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            self.owner.on_stream_refused(self, stream, event.reason)
            stream.abort_local()

    def _on_stream_ended(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.peer_finished()

    def _on_stream_reset(self, event: StreamReset) -> None:
        connector = self._connecting.pop(event.stream_id, None)
        if connector is not None:
            connector.cancel()
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            log.debug("%s: %s reset by peer: %s", self.name, stream.label, event.reason)
            stream.abort_local()

    def _on_failed(self, event: ChannelFailed) -> None:
        if event.by_peer:
            self.close(f"peer reported an error: {event.reason}")
        else:
            self.close(f"protocol error: {event.reason}")

    # ------------------------------------------------------- buffer caps

    @property
    def read_paused(self) -> bool:
        """Channel reads are paused: the streams' inbound rings hold the cap or more."""
        return self._read_paused

    def inbound_changed(self, delta: int) -> None:
        """A stream's inbound ring took (+) or gave back (-) ``delta`` bytes of storage."""
        self.inbound_held += delta
        if delta < 0 and self._read_paused:
            self._check_inbound_cap()

    def _check_inbound_cap(self) -> None:
        """The cap bounds the storage of the inbound rings: at the cap, empty rings
        give theirs back, and channel reads pause if that is not enough; while
        paused, each ring gives its storage back as it empties."""
        cap = self.settings.max_buffer
        if not self._read_paused and self.inbound_held >= cap:
            for stream in self.streams.values():
                stream.release_idle_inbound()
            if self.inbound_held < cap:
                return
            self._read_paused = True
            log.info("%s: inbound buffers hold %d bytes (cap %d): pausing channel reads",
                     self.name, self.inbound_held, cap)  # fmt: skip
            self._update_interest()
        elif self._read_paused and self.inbound_held <= cap // 2:
            self._read_paused = False
            log.info("%s: local sockets caught up: resuming channel reads", self.name)
            self._update_interest()

    @property
    def outbound_paused(self) -> bool:
        """Local reads are paused: the send rings hold ``max_buffer`` bytes or more."""
        return self._outbound_paused

    def outbound_grew(self) -> None:
        """A stream read into its send ring: at the cap, pause local reads.

        The cap bounds the storage the rings hold, not just their contents.
        Rings keep their storage while they empty and refill (no allocation on
        the data path); only at the cap are empty rings' storage given back, and
        reads pause if that is not enough.  Checked once per local read; the
        read that crosses the cap is the only overshoot."""
        session = self.session
        cap = self.settings.max_buffer
        if self._outbound_paused or session.outbound_held < cap:
            return
        session.release_idle_outbound()
        held = session.outbound_held
        if held >= cap:
            self._outbound_paused = True
            log.info("%s: send buffers hold %d bytes (cap %d): pausing local reads",
                     self.name, held, cap)  # fmt: skip

    def _check_outbound_cap(self) -> None:
        """While paused, give back the storage of rings the channel has emptied;
        resume local reads once the rest is down to half the cap."""
        session = self.session
        session.release_idle_outbound()
        if session.outbound_held <= self.settings.max_buffer // 2:
            self._outbound_paused = False
            log.info("%s: sent the backlog: resuming local reads", self.name)
            for stream in list(self.streams.values()):
                stream.update()

    # ------------------------------------------------------------- streams

    def open_stream(self, mapping: int, sock: socket.socket, label: str) -> LocalStream | None:
        """Carry a freshly accepted local connection as a new stream (SYN)."""
        session = self.session
        if self.closed or self.draining or not session.ready or not session.can_open_stream():
            abort_socket(sock)
            return None
        stream_id = session.open_stream(mapping)
        stream = LocalStream(self, stream_id, sock, f"stream {stream_id} {label}")
        self.streams[stream_id] = stream
        log.debug("%s: %s opening", self.name, stream.label)
        self.schedule_flush()
        return stream

    def stream_closed(self, stream: LocalStream, reason: str) -> None:
        """A stream's local socket is gone; forget it."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
        log.debug(
            "%s: %s %s (%d bytes up, %d down)",
            self.name, stream.label, reason, stream.bytes_up, stream.bytes_down,
        )  # fmt: skip

    @property
    def busy(self) -> bool:
        """Streams (or connects for streams) are still open."""
        return bool(self.streams or self._connecting)

    # ------------------------------------------------------------- writing

    def schedule_flush(self) -> None:
        if not self._flush_pending and not self.closed:
            self._flush_pending = True
            self.reactor.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        if self.closed:
            return
        try:
            self._write_out()
        except Exception:  # noqa: BLE001
            self._internal_error()

    def _write_out(self) -> None:
        session = self.session
        sendmsg = self.sock.sendmsg
        while session.has_output():
            views = session.output_views()
            if not views:
                break
            try:
                sent = sendmsg(views)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self.close(f"channel write failed: {describe_error(exc)}")
                return
            session.output_sent(sent)
            if sent < sum(map(len, views)):
                break
        if self._outbound_paused:
            self._check_outbound_cap()
        self._update_interest()

    def _update_interest(self) -> None:
        if self.closed:
            return
        mask = 0 if self._read_paused else READ
        if self.session.has_output():
            mask |= WRITE
        self._watch.want(mask)

    # ------------------------------------------------------------- closing

    def close(self, reason: str, *, error: bool = True) -> None:
        """End the channel: every stream is reset locally, the socket closed.

        ``error`` is false for orderly ends (EOF between frames, shutdown), so
        owners can log those quietly.
        """
        if self.closed:
            return
        self.close_reason = reason
        self.close_was_error = error
        for timer in (self._handshake_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        for connector in self._connecting.values():
            connector.cancel()
        self._connecting.clear()
        for stream in self.streams.values():
            stream.abort_local()
        self.streams.clear()
        self.session.fail(reason)
        self._send_last_words()
        self.closed = True
        self._watch.close()
        self.sock.close()
        self.owner.on_channel_closed(self, reason)

    def _send_last_words(self) -> None:
        """Best effort, never blocking: let the peer read why (our ERROR frame)."""
        session = self.session
        try:
            while session.has_output():
                views = session.output_views()
                if not views:
                    break
                sent = self.sock.sendmsg(views)
                session.output_sent(sent)
                if sent < sum(map(len, views)):
                    break
        except OSError:
            pass
