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
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Protocol

from reactor_mux.connector import DEFAULT_CONNECT_TIMEOUT, Connector
from reactor_mux.localstream import LocalStream
from reactor_mux.netutil import abort_socket, describe_error, format_address
from reactor_mux.protocol.events import (
    ChannelFailed,
    CreditGranted,
    DataReceived,
    Event,
    HelloReceived,
    MappingAccepted,
    MappingRefused,
    MappingRequested,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.session import Session
from reactor_mux.reactor import READ, WRITE, IOWatch, Reactor
from reactor_mux.resolver import Resolver

log = logging.getLogger("reactor_mux")


class ChannelOwner(Protocol):
    """What a channel asks of the role (client or server) that owns it."""

    def target_for(self, channel: Channel, mapping: int) -> tuple[str, int] | None:
        """Where a peer SYN on ``mapping`` should connect, or None to refuse."""

    def on_hello(self, channel: Channel) -> None: ...

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
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.resolver = resolver
        self.sock = sock
        self.session = session
        self.owner = owner
        self.name = name
        self.connect_timeout = connect_timeout
        self.streams: dict[int, LocalStream] = {}
        self._connecting: dict[int, Connector] = {}
        self._watch = IOWatch(reactor, sock, self._on_io)
        self._flush_pending = False
        self.closed = False
        self.close_reason: str | None = None
        self.close_was_error = False
        self._handlers: dict[type[Event], Callable[..., None]] = {
            DataReceived: self._on_data,
            CreditGranted: self._on_credit,
            HelloReceived: self._on_hello,
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
        self._watch.want(READ)
        self._flush()

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
        handlers = self._handlers
        for event in session.receive_into(count):
            handlers[type(event)](event)
            if self.closed:
                return
        self.schedule_flush()

    def _on_data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.deliver([event.data])

    def _on_credit(self, event: CreditGranted) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.update()

    def _on_hello(self, _event: HelloReceived) -> None:
        self.owner.on_hello(self)

    def _on_mapping_requested(self, event: MappingRequested) -> None:
        self.owner.on_mapping_requested(self, event)

    def _on_mapping_accepted(self, event: MappingAccepted) -> None:
        self.owner.on_mapping_accepted(self, event)

    def _on_mapping_refused(self, event: MappingRefused) -> None:
        self.owner.on_mapping_refused(self, event)

    def _on_stream_requested(self, event: StreamRequested) -> None:
        stream_id = event.stream_id
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
            if sock is None:
                log.warning(
                    "%s: connect to %s failed: %s", self.name, format_address(host, port), error
                )
                self.session.refuse_stream(
                    stream_id, f"connect to {format_address(host, port)} failed: {error}"
                )
            else:
                label = f"stream {stream_id} -> {format_address(host, port)}"
                stream = LocalStream(self, stream_id, sock, label)
                self.streams[stream_id] = stream
                self.session.accept_stream(stream_id)
                stream.start_reading()
                log.debug("%s: %s opened", self.name, label)
            self.schedule_flush()

        connector = Connector(
            self.reactor, self.resolver, host, port, connected, self.connect_timeout
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

    # ------------------------------------------------------------- streams

    def open_stream(self, mapping: int, sock: socket.socket, label: str) -> LocalStream | None:
        """Carry a freshly accepted local connection as a new stream (SYN)."""
        session = self.session
        if self.closed or not session.ready or not session.can_open_stream():
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
            self.name,
            stream.label,
            reason,
            stream.bytes_up,
            stream.bytes_down,
        )

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
        self._watch.want(READ | WRITE if session.has_output() else READ)

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
