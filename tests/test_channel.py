"""A Channel driven against a peer Session over a socketpair, in-process.

The channel (server role, with a recording owner) runs on a real reactor; the
test plays the client with a bare ``Session`` on the other end of a
socketpair, so every frame the channel sends is decoded and every frame it
receives is one the test chose.  Targets are real sockets on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import socket

import pytest
from inprocess import run_until
from support import BlackHole, payload

from reactor_mux.io.reactor import Reactor
from reactor_mux.io.resolver import Resolver
from reactor_mux.io.transport import TcpTransport
from reactor_mux.protocol.events import (
    ChannelFailed,
    DataReceived,
    Event,
    HelloReceived,
    MappingAccepted,
    MappingKind,
    MappingRefused,
    MappingRequested,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
)
from reactor_mux.protocol.failures import Failure, FailureClass
from reactor_mux.protocol.frames import KIND_COMMAND, encode_frame
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import ChannelState, Role
from reactor_mux.tunnel.channel import Channel, MappingAnswer, MappingDenied, MappingGranted
from reactor_mux.tunnel.localstream import LocalStream
from reactor_mux.tunnel.meter import Meter
from reactor_mux.tunnel.settings import ChannelSettings


class RecordingOwner:
    """The role's side of the channel: grants every mapping, records the rest."""

    def __init__(self, target: tuple[str, int] | None = None) -> None:
        self.target = target
        self.deny: str | None = None
        self.hellos: list[HelloReceived] = []
        self.requests: list[MappingRequested] = []
        self.refused_streams: list[str] = []
        self.cancelled: list[object] = []
        self.meter = Meter()
        self.closed: list[str] = []

    def target_for(
        self, channel: Channel, mapping: int, requested: tuple[str, int] | None
    ) -> tuple[str, int] | str | None:
        return self.target

    def check_resolved(self, channel: Channel, name: str, address: str, port: int) -> str | None:
        return None

    def mapping_label(self, channel: Channel, mapping: int) -> str:
        return f"mapping {mapping}"

    def metric_label(self, channel: Channel, mapping: int) -> str:
        return f"mapping {mapping}"

    def on_hello(self, channel: Channel, event: HelloReceived) -> None:
        self.hellos.append(event)

    def on_mapping_requested(self, channel: Channel, event: MappingRequested) -> MappingAnswer:
        self.requests.append(event)
        if self.deny is not None:
            return MappingDenied(Failure(FailureClass.FORBIDDEN, self.deny))
        if event.kind is MappingKind.BIND:
            return MappingGranted(("127.0.0.1", 40123))
        return MappingGranted()

    def on_mapping_accepted(self, channel: Channel, event: MappingAccepted) -> None:
        raise AssertionError("not sent to a server")

    def on_mapping_refused(self, channel: Channel, event: MappingRefused) -> None:
        raise AssertionError("not sent to a server")

    def on_mapping_cancelled(self, channel: Channel, event: object) -> None:
        self.cancelled.append(event)

    def on_stream_refused(self, channel: Channel, stream: LocalStream, reason: str) -> None:
        self.refused_streams.append(reason)

    def on_channel_closed(self, channel: Channel, reason: str) -> None:
        self.closed.append(reason)


class Peer:
    """The client end: a Session on a non-blocking socket, pumped by the test."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.session = Session(Role.CLIENT, client_id="peer-under-test")
        self.events: list[Event] = []
        self.outbox = bytearray()
        self.eof = False

    def send(self, data: bytes = b"") -> None:
        """Queue raw bytes, or (with none) whatever the session has to send."""
        self.outbox += data or self.session.data_to_send()

    def pump(self) -> None:
        """Move whatever can move without blocking, both ways."""
        self.outbox += self.session.data_to_send()
        if self.outbox:
            try:
                sent = self.sock.send(self.outbox)
                del self.outbox[:sent]
            except BlockingIOError:
                pass
        while not self.eof:
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                return
            except ConnectionResetError:
                data = b""
            if not data:
                self.eof = True
                return
            self.events += self.session.receive_data(data)

    def of(self, kind: type) -> list[Event]:
        return [event for event in self.events if isinstance(event, kind)]


def open_channel(
    reactor: Reactor,
    resolver: Resolver,
    owner: RecordingOwner,
    settings: ChannelSettings | None = None,
) -> tuple[Channel, Peer]:
    ours, theirs = socket.socketpair()
    settings = settings or ChannelSettings()
    transport = TcpTransport(reactor, ours, settings.keepalive_interval)
    channel = Channel(
        reactor, resolver, transport, Role.SERVER, owner, "channel under test", settings
    )
    channel.start()
    return channel, Peer(theirs)


def until(reactor: Reactor, peer: Peer, predicate) -> None:  # type: ignore[no-untyped-def]
    def step() -> bool:
        peer.pump()
        return bool(predicate())

    run_until(reactor, step)


def handshake(reactor: Reactor, channel: Channel, peer: Peer) -> None:
    until(reactor, peer, lambda: channel.ready and peer.session.ready)


def test_a_stream_to_a_real_target_round_trips_intact(reactor, resolver, echo):
    owner = RecordingOwner(("127.0.0.1", echo.port))
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_connect(1, "127.0.0.1", echo.port)
    handshake(reactor, channel, peer)
    assert owner.hellos[0].client_id == "peer-under-test"
    until(reactor, peer, lambda: peer.of(MappingAccepted))
    assert owner.requests == [MappingRequested(1, MappingKind.CONNECT, "127.0.0.1", echo.port)]

    sid = peer.session.open_stream(1)
    until(reactor, peer, lambda: peer.of(StreamAccepted))
    data = bytes(payload(5, 200_000))
    peer.session.send_data(sid, data)
    peer.session.end_stream(sid)
    until(reactor, peer, lambda: peer.of(StreamEnded))
    echoed = b"".join(bytes(e.data) for e in peer.of(DataReceived))  # type: ignore[union-attr]
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    until(reactor, peer, lambda: not channel.streams)  # both halves closed: the stream is gone
    assert channel.state is ChannelState.OPEN and not channel.busy


def test_a_protocol_violation_closes_the_channel_and_tells_the_peer(reactor, resolver):
    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    handshake(reactor, channel, peer)
    peer.send(b"\x00\x00\x00\x01\x00\x00\x00\x01\x07x")  # kind byte 7
    until(reactor, peer, lambda: channel.closed and peer.eof)
    assert channel.close_reason is not None
    assert channel.close_reason.startswith("protocol error: frame kind byte")
    failed = peer.of(ChannelFailed)
    assert len(failed) == 1 and failed[0].by_peer  # type: ignore[union-attr]
    assert owner.closed == [channel.close_reason]


def test_a_peer_that_never_says_hello_is_cut_off(reactor, resolver):
    owner = RecordingOwner()
    settings = ChannelSettings(handshake_timeout=0.1)
    channel, _peer = open_channel(reactor, resolver, owner, settings)
    run_until(reactor, lambda: channel.closed)
    assert channel.close_reason == "handshake timed out after 0.1s (the peer sent nothing)"


def test_a_peer_that_sent_part_of_a_hello_is_not_called_silent(reactor, resolver):
    """The liveness counts the channel's reads instead of timing each one: a read
    made before the deadline still tells the timeout apart from silence."""
    owner = RecordingOwner()
    settings = ChannelSettings(handshake_timeout=0.1)
    channel, peer = open_channel(reactor, resolver, owner, settings)
    peer.sock.sendall(b"\x00\x00")  # the start of a header, never finished
    run_until(reactor, lambda: channel.closed)
    assert channel.close_reason == "handshake timed out after 0.1s"


def test_a_silent_peer_gets_pings_then_the_channel_closes(reactor, resolver):
    owner = RecordingOwner()
    settings = ChannelSettings(keepalive_interval=0.05, keepalive_timeout=0.3)
    channel, peer = open_channel(reactor, resolver, owner, settings)
    handshake(reactor, channel, peer)

    received = bytearray()

    def listen_only() -> bool:  # read what comes, answer nothing
        try:
            received.extend(peer.sock.recv(65536))
        except BlockingIOError:
            pass
        return channel.closed

    run_until(reactor, listen_only)
    assert channel.close_reason is not None and "keepalive timeout" in channel.close_reason
    assert b"PING 1" in received and b"PING 2" in received


def test_an_unreachable_target_refuses_the_stream_and_the_channel_goes_on(reactor, resolver):
    nothing = socket.socket()
    nothing.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
    owner = RecordingOwner(nothing.getsockname())
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_connect(1, "127.0.0.1", 9)
    handshake(reactor, channel, peer)
    peer.session.open_stream(1)
    until(reactor, peer, lambda: peer.of(StreamRefused))
    reason = peer.of(StreamRefused)[0].reason  # type: ignore[union-attr]
    port = nothing.getsockname()[1]
    assert reason == f"refused: connect to 127.0.0.1:{port} failed: connection refused"
    assert channel.ready and not channel.busy
    nothing.close()


def test_a_reset_while_connecting_cancels_the_connect(reactor, resolver):
    hole = BlackHole()
    owner = RecordingOwner(("127.0.0.1", hole.port))
    try:
        channel, peer = open_channel(reactor, resolver, owner)
        peer.session.request_connect(1, "127.0.0.1", hole.port)
        handshake(reactor, channel, peer)
        sid = peer.session.open_stream(1)
        until(reactor, peer, lambda: channel.busy)  # the SYN arrived: connecting
        peer.session.reset_stream(sid, "changed my mind")
        until(reactor, peer, lambda: not channel.busy)
        assert peer.of(StreamRefused) == [] and peer.of(StreamAccepted) == []
    finally:
        hole.close()


def test_while_draining_new_streams_are_refused(reactor, resolver, echo):
    owner = RecordingOwner(("127.0.0.1", echo.port))
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_connect(1, "127.0.0.1", echo.port)
    handshake(reactor, channel, peer)
    channel.draining = True
    peer.session.open_stream(1)
    until(reactor, peer, lambda: peer.of(StreamRefused))
    assert peer.of(StreamRefused)[0].reason == "shutdown: shutting down"  # type: ignore[union-attr]


def test_the_owners_answers_reach_the_peer(reactor, resolver):
    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_bind(1, "127.0.0.1", 0)
    handshake(reactor, channel, peer)
    until(reactor, peer, lambda: peer.of(MappingAccepted))
    assert peer.of(MappingAccepted) == [MappingAccepted(1, MappingKind.BIND, "127.0.0.1", 40123)]
    owner.deny = "not on this server"
    peer.session.request_connect(2, "db", 5432)
    until(reactor, peer, lambda: peer.of(MappingRefused))
    assert peer.of(MappingRefused) == [
        MappingRefused(2, MappingKind.CONNECT, "forbidden: not on this server")
    ]


@pytest.mark.parametrize(
    ("tail", "reason", "is_error"),
    [
        (b"", "peer closed the channel", False),
        (encode_frame(0, KIND_COMMAND, b"PING 1")[:5], "in the middle of a frame", True),
    ],
)
def test_eof_between_frames_is_orderly_and_inside_one_is_an_error(
    reactor, resolver, tail, reason, is_error
):
    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    handshake(reactor, channel, peer)
    peer.send(tail)
    until(reactor, peer, lambda: not peer.outbox)
    peer.sock.shutdown(socket.SHUT_WR)
    run_until(reactor, lambda: channel.closed)
    assert channel.close_reason is not None and reason in channel.close_reason
    assert channel.close_was_error is is_error


def test_after_bye_a_refused_stream_lets_the_channel_close(reactor, resolver):
    """Our SYN crossed the peer's BYE and the peer refused it: with no stream
    left the channel closes, instead of waiting for one that never comes."""
    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_bind(1, "127.0.0.1", 0)
    handshake(reactor, channel, peer)
    until(reactor, peer, lambda: peer.of(MappingAccepted))
    ours, _theirs = socket.socketpair()
    channel.open_stream(1, ours, "-R from a crossing connection")  # SYN
    peer.session.say_bye()  # the peer, draining and idle, says BYE ...
    until(reactor, peer, lambda: peer.of(StreamRequested))
    peer.session.refuse_stream(peer.of(StreamRequested)[0].stream_id, "shutting down")
    run_until(reactor, lambda: (peer.pump(), channel.closed)[1], timeout=5)
    assert channel.close_reason == "client closed the channel: shutting down"
    assert not channel.close_was_error and channel.peer_shut_down


def test_a_stream_accepted_and_reset_in_one_read_is_only_reset(reactor, resolver):
    """SYN OK and RST for one stream can arrive in one read (the peer's connect
    worked, then its target reset at once): the session has forgotten the stream
    by the time the channel hears it was accepted, so the channel must not start
    it; the reset closes the local connection and the channel goes on."""
    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    peer.session.request_bind(1, "127.0.0.1", 0)
    handshake(reactor, channel, peer)
    until(reactor, peer, lambda: peer.of(MappingAccepted))
    listener = socket.create_server(("127.0.0.1", 0))
    theirs = socket.create_connection(listener.getsockname())
    ours, _ = listener.accept()
    listener.close()
    ours.setblocking(False)
    channel.open_stream(1, ours, "-R from a connection the peer's target resets")
    until(reactor, peer, lambda: peer.of(StreamRequested))
    stream_id = peer.of(StreamRequested)[0].stream_id  # type: ignore[union-attr]
    assert peer.session.accept_stream(stream_id)
    peer.session.reset_stream(stream_id, "local connection failed: connection reset by peer")
    peer.send()  # both frames, one write
    until(reactor, peer, lambda: not channel.streams)
    assert not channel.closed and channel.state is ChannelState.OPEN
    theirs.settimeout(5)
    with pytest.raises(ConnectionResetError):  # the reset reached the local connection
        theirs.recv(1)
    theirs.close()


def test_the_channels_end_is_acted_on_after_the_rest_of_the_planes_events(reactor, resolver):
    """EOF from the plane's read comes in the same batch as what the plane already
    did (here: sends it made itself); the channel counts those first, so a resumed
    session knows them, then loses the connection."""
    from reactor_mux.io import plane as data_plane

    owner = RecordingOwner()
    channel, peer = open_channel(reactor, resolver, owner)
    if channel._plane is None:
        pytest.skip("no compiled data plane here")
    handshake(reactor, channel, peer)
    log = channel._session._log
    before = log.sends
    tag = channel._plane.tag
    channel.on_plane_events([(data_plane.CHANNEL_EOF, tag, 0, 0), (data_plane.SENT, tag, 0, 5)])
    assert log.sends == before + 5
    assert channel.closed or channel.suspended
