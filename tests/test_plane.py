"""The compiled data plane (csrc/rmux_plane.c) on real loopback sockets.

Each test gives a plane streams whose sockets are one end of a TCP connection
on 127.0.0.1 and checks what arrives at the other end (sizes and hashes), what
the send queue holds afterwards, the events, and that the counters follow
reactor_mux/protocol/windows.py step for step.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator

import pytest

from reactor_mux import codec
from reactor_mux.io import plane as plane_module
from reactor_mux.io.plane import ACK, BLOCKED, FAILED, OUTPUT, READ_EOF, WRITE_CLOSED, Engine, Plane
from reactor_mux.protocol.windows import ReceiveWindow

pytestmark = pytest.mark.skipif(
    codec.BACKEND != "c" or not plane_module.available(), reason="the compiled data plane"
)

FRAME_SIZE = 16384


def tcp_pair(small: bool = False) -> tuple[socket.socket, socket.socket]:
    """(the stream's socket, nonblocking; the application's end, blocking).
    ``small``: 32 KiB socket buffers, so an application that does not read
    fills them at once."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        app = socket.socket()
        if small:
            app.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        app.connect(server.getsockname())
        mine, _ = server.accept()
    if small:
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    mine.setblocking(False)
    app.settimeout(10)
    return mine, app


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine()
    yield engine


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


class Harness:
    """A plane on its own send queue, with helpers to make streams and records."""

    def __init__(self, engine: Engine, sockets: list[socket.socket], tag: int = 7) -> None:
        self.engine = engine
        self.sockets = sockets
        self.tx = codec.OutboundQueue(FRAME_SIZE, 256 * 1024, 4 * 1024 * 1024, False)
        self.plane = Plane(engine, self.tx, tag)

    def stream(
        self,
        stream_id: int,
        send_window: int = 256 * 1024,
        receive_window: int = 256 * 1024,
        small: bool = False,
    ) -> tuple[int, socket.socket, int]:
        """(handle, the application's socket, the send ring's slot) of a new open stream."""
        mine, app = tcp_pair(small)
        self.sockets += [mine, app]
        handle = self.plane.add(stream_id, send_window, receive_window)
        slot = self.tx.open(stream_id, send_window)
        self.plane.attach(handle, mine, slot)
        self.plane.set_receiving(handle, True)
        self.plane.set_sending(handle, True)
        return handle, app, slot

    def deliver(self, pieces: list[tuple[int, int, bytes]], index: int = 0):  # type: ignore[no-untyped-def]
        """Deliver (record kind, stream id, body) records from one staging buffer."""
        staging = b"".join(body for _kind, _id, body in pieces)
        records, offset = [], 0
        for kind, stream_id, body in pieces:
            records.append((kind, stream_id, offset, len(body)))
            offset += len(body)
        c_staging = plane_module.ffi.new("uint8_t[]", max(len(staging), 1))
        plane_module.ffi.memmove(c_staging, staging, len(staging))
        c_records = plane_module.ffi.new("rmux_record[]", records or [(0, 0, 0, 0)])
        return self.plane.deliver(c_staging, len(staging), c_records, len(records), index)

    def frames(self) -> dict[int, bytearray]:
        """Drain the send queue; return the data frames' bodies by stream id."""
        out: dict[int, bytearray] = {}
        while self.tx.has_output():
            self.tx.fill()
            wire = bytes(self.tx.pending())
            self.tx.sent(len(wire))
            frames, end, error = codec.scan_frames(wire, 0, len(wire), 1 << 20, 1 << 16)
            assert error == codec.OK and end == len(wire)
            for stream_id, kind, offset, length in frames:
                if kind == codec.KIND_DATA:
                    out.setdefault(stream_id, bytearray()).extend(wire[offset : offset + length])
        return out


DATA = codec.RECORD_DATA
COMMAND = codec.RECORD_COMMAND


def read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < count:
        chunk = sock.recv(count - len(chunks))
        assert chunk, f"EOF after {len(chunks)} of {count} bytes"
        chunks += chunk
    return bytes(chunks)


def test_delivery_writes_each_record_to_its_stream_and_counts_like_the_window(engine, sockets):
    h = Harness(engine, sockets)
    a, app_a, _ = h.stream(1, receive_window=4096)
    b, app_b, _ = h.stream(3, receive_window=4096)
    model = {1: ReceiveWindow(4096), 3: ReceiveWindow(4096)}
    pieces = [(DATA, 1, os.urandom(700)), (DATA, 3, os.urandom(1500)), (DATA, 1, os.urandom(600))]
    index, events = h.deliver(pieces)
    assert index == 3
    expected_acks = []
    for _kind, stream_id, body in pieces:
        model[stream_id].received(len(body))
        ack = model[stream_id].delivered(len(body))  # loopback takes it all at once
        if ack:
            expected_acks.append((ACK, 7, stream_id, ack))
    assert events == expected_acks
    assert read_exactly(app_a, 1300) == pieces[0][2] + pieces[2][2]
    assert read_exactly(app_b, 1500) == pieces[1][2]
    for handle, stream_id in ((a, 1), (b, 3)):
        flow, window = h.plane.flow(handle), model[stream_id]
        assert (flow.recv_unacked, flow.recv_undelivered, flow.recv_delivered_unacked) == (
            window.unacked,
            window.undelivered,
            window.delivered_unacked,
        )
    assert h.plane.flow(a).recv_total == h.plane.flow(a).bytes_down == 1300


def test_delivery_stops_where_python_must_decide(engine, sockets):
    h = Harness(engine, sockets)
    a, app_a, _ = h.stream(1, receive_window=1000)
    h.plane.set_receiving(h.stream(5)[0], False)  # after the peer's FIN
    body = b"x" * 10
    cases = [
        ([(DATA, 1, body), (COMMAND, 1, b"FIN")], 1),  # a command
        ([(DATA, 1, body), (DATA, 9, body)], 1),  # a stream the plane does not hold
        ([(DATA, 1, body), (DATA, 5, body)], 1),  # a stream that may not receive
        ([(DATA, 1, body), (DATA, 1, b"y" * 991)], 1),  # beyond the window: 10 + 20 + 991
    ]
    for pieces, stopped in cases:
        index, _events = h.deliver(pieces)
        assert index == stopped
    assert h.plane.flow(a).recv_total == 40  # the four first records, and nothing after them
    assert read_exactly(app_a, 40) == body * 4
    index, _events = h.deliver([(COMMAND, 1, b"FIN"), (DATA, 1, body)], index=1)
    assert index == 2  # called again past the record Python handled


def test_a_full_socket_keeps_the_rest_in_the_inbound_ring_until_it_drains(engine, sockets):
    h = Harness(engine, sockets)
    window = 8 * 1024 * 1024
    handle, app, _ = h.stream(1, receive_window=window, small=True)
    model = ReceiveWindow(window)
    payload = os.urandom(4 * 1024 * 1024)
    acks: list[int] = []
    for offset in range(0, len(payload), 65536):
        chunk = payload[offset : offset + 65536]
        index, events = h.deliver([(DATA, 1, chunk)])
        assert index == 1
        model.received(len(chunk))
        acks += [value for kind, _tag, _id, value in events if kind == ACK]
    held = h.plane.inbound_buffered(handle)
    assert held > 0, "the application read nothing, yet the socket took 4 MiB"
    assert h.plane.inbound_held >= held
    received = bytearray()
    app.setblocking(False)
    while len(received) < len(payload):
        try:
            received += app.recv(1 << 20)
        except BlockingIOError:
            pass
        acks += [value for kind, _tag, _id, value in engine.pump() if kind == ACK]
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert h.plane.inbound_buffered(handle) == 0
    flow = h.plane.flow(handle)
    assert sum(acks) == len(payload) - flow.recv_delivered_unacked
    assert flow.recv_unacked == model.unacked - sum(acks)
    assert flow.recv_undelivered == 0 and flow.bytes_down == len(payload)
    assert acks and all(ack >= window // 4 for ack in acks)  # a quarter window at least
    assert engine.pump() == [] and engine.backlog == 0


def test_the_pump_reads_within_the_send_window_and_reports_blocked_once(engine, sockets):
    h = Harness(engine, sockets)
    handle, app, _ = h.stream(1, send_window=65536)
    payload = os.urandom(300_000)
    app.sendall(payload)
    events: list[tuple[int, int, int, int]] = []
    for _ in range(20):
        events += engine.pump()
    assert (OUTPUT, 7, 1, 0) in events
    assert [e for e in events if e[0] == BLOCKED] == [(BLOCKED, 7, 1, 65536)]
    flow = h.plane.flow(handle)
    assert flow.send_unacked == flow.bytes_up == flow.send_total == 65536
    assert bytes(h.frames()[1]) == payload[:65536]
    # The peer acknowledges (what SendWindow.acknowledge does), and the stream reads on.
    got = bytearray(payload[:65536])
    while len(got) < len(payload):
        flow.send_unacked = 0
        flow.blocked_reported = 0
        h.plane.wake(handle)
        while engine.pump():
            pass
        got += h.frames().get(1, b"")
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()


def test_eof_and_reset_are_reported_not_acted_on(engine, sockets):
    h = Harness(engine, sockets)
    _, app_a, _ = h.stream(1)
    _, app_b, _ = h.stream(3)
    app_a.sendall(b"last words")
    app_a.shutdown(socket.SHUT_WR)
    app_b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    app_b.close()
    events: list[tuple[int, int, int, int]] = []
    for _ in range(100):
        events += engine.pump()
        if READ_EOF in [e[0] for e in events] and FAILED in [e[0] for e in events]:
            break
    assert (READ_EOF, 7, 1, 0) in events
    assert (FAILED, 7, 3, 104) in events  # ECONNRESET
    assert bytes(h.frames()[1]) == b"last words"


def test_the_peers_fin_is_passed_on_after_the_inbound_ring(engine, sockets):
    h = Harness(engine, sockets)
    handle, app, _ = h.stream(1, receive_window=8 * 1024 * 1024, small=True)
    payload = os.urandom(3 * 1024 * 1024)
    for offset in range(0, len(payload), 65536):
        assert h.deliver([(DATA, 1, payload[offset : offset + 65536])])[0] == 1
    assert h.plane.inbound_buffered(handle) > 0
    assert h.plane.peer_finished(handle) is False  # bytes still wait for the socket
    received = bytearray()
    closed = []
    app.setblocking(False)
    while True:
        try:
            chunk = app.recv(1 << 20)
        except BlockingIOError:
            closed += [e for e in engine.pump() if e[0] == WRITE_CLOSED]
            continue
        if not chunk:
            break
        received += chunk
    assert received == payload
    assert closed == [(WRITE_CLOSED, 7, 1, 0)]
    quiet_handle, quiet_app, _ = h.stream(3)
    assert h.plane.peer_finished(quiet_handle) is True  # nothing waiting: at once
    assert quiet_app.recv(10) == b""


def test_one_bulk_stream_does_not_keep_another_waiting(engine, sockets):
    h = Harness(engine, sockets)
    bulk, app_bulk, _ = h.stream(1, send_window=8 * 1024 * 1024)
    small, app_small, _ = h.stream(3)
    app_bulk.sendall(os.urandom(2 * 1024 * 1024))
    app_small.sendall(b"ping")
    events = engine.pump()
    assert h.plane.flow(bulk).bytes_up <= plane_module.lib.RMUX_PLANE_READ_CHUNK
    assert h.plane.flow(small).bytes_up == 4
    assert engine.backlog >= 1  # the bulk stream goes round again
    assert [e for e in events if e[0] == OUTPUT] == [(OUTPUT, 7, 1, 0)]  # once per plane


def test_a_paused_plane_reads_nothing_until_it_resumes(engine, sockets):
    h = Harness(engine, sockets)
    handle, app, _ = h.stream(1)
    h.plane.set_paused(True)
    app.sendall(b"held back")
    for _ in range(5):
        assert engine.pump() == []
    assert h.plane.flow(handle).bytes_up == 0
    h.plane.set_paused(False)
    assert (OUTPUT, 7, 1, 0) in engine.pump()
    assert bytes(h.frames()[1]) == b"held back"


def test_inbound_rings_are_given_back_when_they_empty_under_the_cap(engine, sockets):
    h = Harness(engine, sockets)
    handle, app, _ = h.stream(1, receive_window=8 * 1024 * 1024, small=True)
    for _ in range(64):
        h.deliver([(DATA, 1, os.urandom(65536))])
    assert h.plane.inbound_held > 0
    h.plane.set_inbound_paused(True)
    app.setblocking(False)
    received = 0
    while received < 64 * 65536:
        try:
            received += len(app.recv(1 << 20))
        except BlockingIOError:
            engine.pump()
    engine.pump()
    assert h.plane.inbound_buffered(handle) == 0
    assert h.plane.inbound_held == 0


def test_planes_share_an_engine_and_name_themselves_in_events(engine, sockets):
    first, second = Harness(engine, sockets, tag=1), Harness(engine, sockets, tag=2)
    _, app_first, _ = first.stream(1)
    _, app_second, _ = second.stream(1)  # the same stream id on another channel
    app_first.sendall(b"one")
    app_second.sendall(b"two")
    events: list[tuple[int, int, int, int]] = []
    for _ in range(5):
        events += engine.pump()
    assert sorted(e for e in events if e[0] == OUTPUT) == [(OUTPUT, 1, 1, 0), (OUTPUT, 2, 1, 0)]
    assert first.frames() == {1: bytearray(b"one")}
    assert second.frames() == {1: bytearray(b"two")}


def test_handles_ids_and_misuse(engine, sockets):
    h = Harness(engine, sockets)
    handle = h.plane.add(11, 1000, 1000)
    with pytest.raises(ValueError):
        h.plane.add(11, 1000, 1000)  # the id is in use
    h.plane.remove(handle)
    with pytest.raises(ValueError):
        h.plane.flow(handle)
    again = h.plane.add(11, 1000, 1000)  # the id and the handle are free again
    assert again == handle
    many = [h.plane.add(1001 + 2 * i, 1000, 1000) for i in range(1000)]
    assert len(set(many)) == 1000
    for stream_handle in many[::2]:
        h.plane.remove(stream_handle)
    assert h.deliver([(DATA, 1001, b"z")])[0] == 0  # removed: Python decides
    with pytest.raises(ValueError):
        h.plane.remove(10_000)


def test_an_idle_engine_pumps_nothing(engine, sockets):
    h = Harness(engine, sockets)
    for stream_id in range(1, 200, 2):
        h.stream(stream_id)
    engine.pump()  # the registrations' first edges
    assert engine.pump() == []
    assert engine.backlog == 0


def test_a_bound_stream_keeps_the_sessions_rules_and_gets_its_numbers_back(engine, sockets):
    """bind() moves a Stream record's counters into the plane's flow; the windows'
    own methods still decide (here: an ACK for more than is outstanding), and
    unbind() gives the record plain numbers again."""
    from reactor_mux.io.plane import FlowStream, bind, unbind
    from reactor_mux.protocol.errors import ProtocolError
    from reactor_mux.protocol.stream import Stream
    from reactor_mux.protocol.streamstate import StreamState

    h = Harness(engine, sockets)
    record = Stream(9, StreamState.OPEN, 1, 1000, 4000)
    record.send.consume(300)
    record.received, record.written = 11, 300
    handle = h.plane.add(9, 1, 1)
    mine, app = tcp_pair()
    sockets += [mine, app]
    h.plane.attach(handle, mine, h.tx.open(9, 1000))
    bind(record, h.plane, handle)
    assert h.deliver([(DATA, 9, b"early")])[0] == 1  # OPEN: the plane delivers
    flow = h.plane.flow(handle)
    assert isinstance(record, FlowStream)
    assert (flow.send_size, flow.send_unacked, flow.recv_size, flow.recv_threshold) == (
        1000,
        300,
        4000,
        1000,
    )
    assert (flow.recv_total, flow.send_total) == (16, 300)
    assert read_exactly(app, 5) == b"early"
    with pytest.raises(ProtocolError, match="acknowledges more than the 300 bytes outstanding"):
        record.send.acknowledge(301)
    record.send.acknowledge(100)
    assert record.received == 16 and flow.send_unacked == 200
    # Its state decides what the plane may do: after the peer's FIN, no delivery.
    record.state = StreamState.HALF_CLOSED_REMOTE
    assert h.deliver([(DATA, 9, b"late")])[0] == 0
    unbind(record)
    assert type(record) is Stream
    assert (record.send.unacked, record.received, record.written) == (200, 16, 300)
    assert (record.recv.unacked, record.recv.undelivered) == (5, 0)
    h.plane.remove(handle)
    assert record.recv.size == 4000  # still readable with the plane's flow gone


def test_the_pump_sends_the_channels_output_itself_while_python_lets_it(engine, sockets):
    from reactor_mux.io.plane import OUTPUT_LEFT, SENT

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1)
    channel, peer = tcp_pair(small=True)  # the channel: its far end reads the frames
    sockets += [channel, peer]
    h.plane.set_channel(channel.fileno())
    h.plane.set_send_ok(True)
    app.sendall(b"first")
    events = engine.pump()
    assert (SENT, 7, 0, 1) in events and OUTPUT not in [e[0] for e in events]
    assert not h.tx.has_output()
    wire = peer.recv(1000)
    frames, _end, error = codec.scan_frames(wire, 0, len(wire), 1 << 20, 1 << 16)
    assert error == codec.OK and [(f[0], bytes(wire[f[2] : f[2] + f[3]])) for f in frames] == [
        (1, b"first")
    ]
    h.plane.hold_output()  # Python queued a command: it goes first, in Python's flush
    app.sendall(b"second")
    assert [e[0] for e in engine.pump()] == [OUTPUT]
    assert h.tx.has_output()
    h.frames()  # Python's flush
    # A channel that stops taking bytes: the pump sends what fits, then leaves the
    # rest to Python, which waits for the socket to be writable.
    h.plane.set_send_ok(True)
    app.sendall(os.urandom(200_000))
    kinds: list[int] = []
    for _ in range(20):
        kinds += [e[0] for e in engine.pump()]
        if OUTPUT_LEFT in kinds:
            break
    assert OUTPUT_LEFT in kinds and h.tx.has_output()
    app.sendall(b"more")
    assert [e[0] for e in engine.pump()] == [OUTPUT]  # sending stays off until allowed again


def test_the_plane_sends_the_acks_it_owes_itself_while_nothing_of_pythons_waits(engine, sockets):
    """Data delivered in a pump that earns the peer an ACK: a plane that sends its
    own output puts the ACK on the channel itself and keeps it for the session's
    log (take_acks); while Python has output queued, or outside a pump, the ACK is
    Python's (the ACK event), so the log's order stays the wire's; and while the
    inbound cap pauses reads, so that Python sees the rings drain."""
    from reactor_mux.codec._c import InboundDecoder

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1, receive_window=4096)  # an ACK per 1024 delivered
    mine, peer = tcp_pair()
    sockets += [mine, peer]
    decoder = InboundDecoder(65536, 1024, 262144)
    decoder._resize(16384)  # a busy channel's buffer (it starts at 2 KiB)
    decoder.writable()
    decoder.rx.capacity = decoder.rx.buffer_length  # full grown: growing is not the test's
    h.plane.set_input(decoder.rx, mine.fileno())
    h.plane.set_channel(mine.fileno())
    h.plane.set_send_ok(True)
    frame = codec.encode_header(2048, 1, codec.KIND_DATA) + bytes(2048)
    peer.sendall(frame)
    events = engine.pump()
    assert [e[0] for e in events] in ([], [plane_module.SENT])  # the ACK went out in C
    assert read_exactly(app, 2048) == bytes(2048)
    wire = peer.recv(100)
    frames, _end, error = codec.scan_frames(wire, 0, len(wire), 1 << 20, 1 << 16)
    assert error == codec.OK
    assert [(f[0], f[1], bytes(wire[f[2] : f[2] + f[3]])) for f in frames] == [
        (1, codec.KIND_COMMAND, b"ACK 2048")
    ]
    assert h.plane.take_acks() == [(1, 2048)] and h.plane.take_acks() == []
    h.plane.hold_output()  # Python queued a command: its order must hold, so Python sends
    peer.sendall(frame)
    assert (ACK, 7, 1, 2048) in engine.pump()
    assert read_exactly(app, 2048) == bytes(2048)
    assert h.plane.take_acks() == []
    # Under the inbound cap the channel is not read; what the rings hold drains to
    # the sockets, and the ACKs that earns are events: Python sees the rings drain.
    h.plane.set_send_ok(True)
    _handle, slow_app, _slot = h.stream(3, receive_window=1 << 20, small=True)
    big = os.urandom(900_000)
    pieces = [big[i : i + 8000] for i in range(0, len(big), 8000)]  # within its buffer
    peer.sendall(b"".join(codec.encode_header(len(p), 3, codec.KIND_DATA) + p for p in pieces))
    deadline = time.monotonic() + 10
    while h.plane.inbound_held == 0:  # the application reads nothing: the ring fills
        assert time.monotonic() < deadline
        h.plane.wake_input()
        engine.pump()
    h.plane.take_acks()
    h.plane.set_inbound_paused(True)
    got, acks = bytearray(), []
    while len(got) < len(big):
        assert time.monotonic() < deadline
        got += slow_app.recv(65536)
        acks += [event for event in engine.pump() if event[0] == ACK]
    assert bytes(got) == big and acks and h.plane.take_acks() == []
    h.plane.set_input(None, -1)


def test_the_hub_gives_each_channel_its_own_events(sockets):
    """Found by the stress run: a pump's events were handed to one channel whenever
    the first and last were its own, even with another channel's in between."""
    from reactor_mux.io.plane import PlaneHub
    from reactor_mux.io.reactor import Reactor

    class Owner:
        def __init__(self) -> None:
            self.events: list[tuple[int, int, int, int]] = []

        def on_plane_events(self, events: list[tuple[int, int, int, int]]) -> None:
            self.events += events

        def close_after_bug(self) -> None:
            raise AssertionError("no bug expected")

    reactor = Reactor()
    try:
        hub = PlaneHub(reactor)
        owners = [Owner(), Owner()]
        harnesses = []
        for owner in owners:
            h = Harness(hub.engine, sockets)
            hub.close_plane(h.plane)
            h.plane = hub.new_plane(h.tx, owner)
            harnesses.append(h)
        apps = []
        for index in range(5):  # streams of the two channels, interleaved: A B A B A
            _handle, app, _slot = harnesses[index % 2].stream(2 * index + 1)
            apps.append(app)
        for app in apps:
            app.sendall(b"x")
            app.shutdown(socket.SHUT_WR)
        for _ in range(10):
            hub.pump()
        for owner, h in zip(owners, harnesses, strict=True):
            assert owner.events and {tag for _kind, tag, _id, _value in owner.events} == {
                h.plane.tag
            }
            ids = {stream_id for kind, _tag, stream_id, _value in owner.events if kind == READ_EOF}
            assert ids == {2 * index + 1 for index in range(5) if index % 2 == owners.index(owner)}
        for h in harnesses:
            hub.close_plane(h.plane)
    finally:
        reactor.close()


def test_the_plane_reads_the_channel_and_leaves_commands_to_python(engine, sockets):
    from reactor_mux.codec._c import InboundDecoder
    from reactor_mux.io.plane import CHANNEL_EOF, CHANNEL_INPUT, CHANNEL_READABLE

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1)
    mine, peer = tcp_pair()  # the channel: the plane reads ``mine``, the peer writes
    sockets += [mine, peer]
    decoder = InboundDecoder(65536, 1024, 262144)
    decoder.writable()  # Python gives the buffer its first size
    h.plane.set_input(decoder.rx, mine.fileno())
    frame = codec.encode_header(5, 1, codec.KIND_DATA) + b"hello"
    peer.sendall(frame * 3)
    assert engine.pump() == []  # all data, all delivered in C
    assert read_exactly(app, 15) == b"hello" * 3
    assert (decoder.rx.start, decoder.rx.end) == (0, 0) and h.plane.channel_reads == 1
    # A command in the read: the data before it is delivered, the command waits after
    # rx.end for Python, reported as a read of its own.
    command = codec.encode_header(3, 1, codec.KIND_COMMAND) + b"FIN"
    peer.sendall(frame + command + frame)
    assert engine.pump() == [(CHANNEL_INPUT, 7, 0, len(command + frame))]
    assert decoder.rx.start == decoder.rx.end == len(frame)
    assert read_exactly(app, 5) == b"hello"
    records, error = decoder.advance(len(command + frame))  # what Python's read does
    assert error == codec.OK
    assert [record[0] for record in records] == [codec.RECORD_COMMAND, codec.RECORD_DATA]
    app.setblocking(False)
    with pytest.raises(BlockingIOError):  # the data after the command is Python's record
        app.recv(1)
    app.setblocking(True)
    peer.sendall(frame)
    assert engine.pump() == []  # parked until Python has handled its input
    h.plane.wake_input()
    assert engine.pump() == []
    assert read_exactly(app, 5) == b"hello"
    # A buffer that must grow first: Python reads.
    decoder.rx.filled = 1
    decoder.rx.capacity = 1 << 20
    peer.sendall(frame)
    h.plane.wake_input()
    assert engine.pump() == [(CHANNEL_READABLE, 7, 0, 0)]
    decoder.rx.filled = 0
    h.plane.wake_input()
    assert engine.pump() == []
    assert read_exactly(app, 5) == b"hello"
    peer.shutdown(socket.SHUT_WR)
    assert engine.pump() == [(CHANNEL_EOF, 7, 0, 0)]
    h.plane.set_input(None, -1)


def test_interleaved_frames_of_one_read_reach_each_stream_whole_and_in_order(engine, sockets):
    """A round-robin sender interleaves its streams frame by frame; the plane gathers
    each stream's frames of a read for one sendmsg (more than DELIVERY_PARTS of them
    too), so every stream must still get exactly its bytes, in order."""
    from reactor_mux.codec._c import InboundDecoder

    h = Harness(engine, sockets)
    apps = {stream_id: h.stream(stream_id)[1] for stream_id in (1, 3, 5)}
    mine, peer = tcp_pair()
    sockets += [mine, peer]
    decoder = InboundDecoder(65536, 1024, 262144)
    decoder._resize(16384)  # a busy channel's buffer (it starts at 2 KiB)
    decoder.writable()
    h.plane.set_input(decoder.rx, mine.fileno())
    sent: dict[int, bytearray] = {stream_id: bytearray() for stream_id in apps}
    wire = bytearray()
    for round_ in range(80):  # 80 frames a stream: past the 64 parts of one sendmsg
        for stream_id in apps:
            body = os.urandom(20 + round_ % 16)
            sent[stream_id] += body
            wire += codec.encode_header(len(body), stream_id, codec.KIND_DATA) + body
    assert len(wire) < 16384  # one read, within the decoder's first buffer
    peer.sendall(wire)
    events = engine.pump()
    assert [event for event in events if event[0] not in (ACK,)] == []
    for stream_id, app in apps.items():
        got = read_exactly(app, len(sent[stream_id]))
        assert hashlib.sha256(got).digest() == hashlib.sha256(sent[stream_id]).digest()
    assert h.plane.channel_reads == 1 and (decoder.rx.start, decoder.rx.end) == (0, 0)
    h.plane.set_input(None, -1)


def test_the_plane_moves_a_partial_frame_to_the_front_itself(engine, sockets):
    """A read that ends inside a frame leaves it at the end of the buffer; the plane
    moves it to the front (writable()'s rule) instead of handing the read to Python,
    and asks Python only when the buffer is too small for the frame."""
    from reactor_mux.codec._c import InboundDecoder
    from reactor_mux.io.plane import CHANNEL_READABLE

    def pump_acks_only() -> None:
        assert {event[0] for event in engine.pump()} <= {ACK}

    def pump_until(done) -> None:  # type: ignore[no-untyped-def]
        """Until the plane has read what was sent (a read that filled the buffer
        leaves no edge to say the socket drained: wake it each time)."""
        deadline = time.monotonic() + 10
        while not done():
            assert time.monotonic() < deadline, "the channel's bytes never all arrived"
            h.plane.wake_input()  # a read that filled the buffer: no edge says it drained
            pump_acks_only()

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1, receive_window=1 << 20)
    mine, peer = socket.socketpair()  # a write is all there when sendall returns
    mine.setblocking(False)
    sockets += [mine, peer]
    decoder = InboundDecoder(65536, 1024, 262144)
    decoder.writable()
    size = decoder.rx.buffer_length
    decoder.rx.capacity = size  # full grown: a read that fills it asks for no growth
    h.plane.set_input(decoder.rx, mine.fileno())
    body = os.urandom(1000)
    frame = codec.encode_header(len(body), 1, codec.KIND_DATA) + body
    stream = frame * 64
    first = size - 5  # all but a few bytes of the buffer, ending inside a frame
    assert first % len(frame)
    peer.sendall(stream[:first])
    pump_until(lambda: decoder.rx.end == first)
    assert decoder.rx.start  # the partial frame waits at the end
    reads = h.plane.channel_reads
    peer.sendall(stream[first:])
    pump_until(lambda: decoder.rx.start == decoder.rx.end == 0)
    assert h.plane.channel_reads > reads  # read in C, after moving the partial frame
    assert read_exactly(app, len(body) * 64) == body * 64
    # A partial frame larger than the buffer: growing it is Python's.
    big = codec.encode_header(65536, 1, codec.KIND_DATA) + bytes(65536)
    decoder.rx.buffer_length = 32768  # as if the buffer were still small
    peer.sendall(big[:100])
    pump_until(lambda: decoder.rx.end - decoder.rx.start == 100)  # a header: nothing to deliver
    h.plane.wake_input()  # the grow check comes before any read: a wake is enough
    assert engine.pump() == [(CHANNEL_READABLE, 7, 0, 0)]
    decoder.rx.buffer_length = size
    h.plane.set_input(None, -1)


def test_a_read_python_made_gives_its_leading_data_to_the_plane(engine, sockets):
    """A TLS channel's plaintext (or any read Python made) goes through the plane
    too: the leading data frames are written in place, and only the rest (from the
    first command) is left for Python's decoder."""
    from reactor_mux.codec._c import InboundDecoder

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1)
    decoder = InboundDecoder(65536, 1024, 262144)
    frame = codec.encode_header(5, 1, codec.KIND_DATA) + b"hello"
    command = codec.encode_header(3, 1, codec.KIND_COMMAND) + b"FIN"

    def python_reads(data: bytes) -> tuple[int, list]:
        view = decoder.writable()
        view[: len(data)] = data
        return h.plane.take_input(decoder.rx, len(data))

    assert python_reads(frame * 2 + frame[:7]) == (0, [])  # a partial frame waits
    assert read_exactly(app, 10) == b"hello" * 2
    assert decoder.rx.end - decoder.rx.start == 7
    left, events = python_reads(frame[7:] + command + frame)
    assert (left, events) == (len(command + frame), [])
    assert read_exactly(app, 5) == b"hello"
    records, error = decoder.advance(left)  # Python's decoder takes the rest
    assert error == codec.OK
    assert [record[0] for record in records] == [codec.RECORD_COMMAND, codec.RECORD_DATA]
    assert decoder.rx.start == decoder.rx.end


def test_the_plane_takes_the_acks_and_blocked_the_session_would_only_count(engine, sockets):
    """A bulk stream's ACKs (and BLOCKED at the largest window) are applied in C as
    Session._on_stream_command applies them; every other case stays Python's read,
    so the session still judges each violation with its own message."""
    from reactor_mux.codec._c import InboundDecoder
    from reactor_mux.protocol.limits import MAX_WINDOW, MIN_WINDOW
    from reactor_mux.protocol.resumelog import BARRIER_TOKEN

    lib = plane_module.lib
    assert (lib.RMUX_PLANE_MIN_WINDOW, lib.RMUX_PLANE_MAX_WINDOW) == (MIN_WINDOW, MAX_WINDOW)
    assert lib.RMUX_PLANE_BARRIER_TOKEN == BARRIER_TOKEN
    h = Harness(engine, sockets)
    h.tx.set_retain(True)  # resume on: an ACK frees what the peer now has
    handle, app, slot = h.stream(1, send_window=4096, receive_window=4096)
    flow = h.plane.flow(handle)
    decoder = InboundDecoder(65536, 1024, 262144)

    def command(text: str, stream_id: int = 1) -> bytes:
        return codec.encode_header(len(text), stream_id, codec.KIND_COMMAND) + text.encode()

    def python_reads(data: bytes) -> int:
        view = decoder.writable()
        view[: len(data)] = data
        left, events = h.plane.take_input(decoder.rx, len(data))
        assert events == []
        if left:  # what Python's decoder would take: the test only checks the split
            decoder.advance(left)
        return left

    app.sendall(bytes(4096))
    assert (BLOCKED, 7, 1, 4096) in engine.pump()  # the window is full
    flow.blocked_reported = 1
    assert bytes(h.frames()[1]) == bytes(4096)  # sent, and retained until acknowledged
    assert h.tx.retained(slot) == 4096
    assert python_reads(command("ACK 1000") + command("ACK 24")) == 0
    assert (flow.send_unacked, flow.acked, flow.released) == (3072, 1024, 1024)
    assert h.tx.retained(slot) == 3072 and flow.blocked_reported == 0
    assert h.plane.take_commands() == 2 and h.plane.take_commands() == 0
    # Each of these is the session's to judge: the whole read from it on is Python's.
    for odd in ("ACK 3073", "ACK 0100", "ACK +100", "ACK 1 2", "ACK", "ACK 99999999999"):
        frame = command(odd)
        assert python_reads(frame) == len(frame), odd
    assert python_reads(command("ACK 72", stream_id=3)) > 0  # a stream the plane does not hold
    assert flow.send_unacked == 3072 and h.plane.take_commands() == 0
    # BLOCKED: taken when the session would grow nothing (stale, at --max-window, or
    # past the channel's growth budget).
    assert python_reads(command("BLOCKED 4096")) > 0  # the window may still grow
    assert python_reads(command("BLOCKED 2048")) == 0  # not the window: crossed a WINDOW
    h.plane.set_max_window(4096)
    assert python_reads(command("BLOCKED 4096")) == 0
    assert python_reads(command("BLOCKED 1000")) > 0  # below MIN_WINDOW: a violation
    h.plane.set_max_window(1 << 20)
    h.plane.set_growth_left(4096)  # doubling fits in what the channel may still grant
    assert python_reads(command("BLOCKED 4096")) > 0
    h.plane.set_growth_left(4095)  # it does not: grow_window would refuse
    assert python_reads(command("BLOCKED 4096")) == 0
    assert h.plane.take_commands() == 3
    # A paused plane (the outbound cap) leaves ACKs to Python, which may resume it.
    h.plane.set_paused(True)
    assert python_reads(command("ACK 72")) > 0
    h.plane.set_paused(False)
    h.plane.set_sending(handle, False)
    h.plane.set_receiving(handle, False)  # CLOSED, or not open yet: no ACK is valid
    assert python_reads(command("ACK 72")) > 0
    assert flow.send_unacked == 3072 and h.plane.take_commands() == 0
    # A keepalive's PONG: taken, timed, not a logged command; a barrier's, or one
    # the session must judge, is Python's.
    before = time.monotonic()
    assert h.plane.take_pong() is None
    assert python_reads(command("PONG 7", stream_id=0) + command("PONG 8", stream_id=0)) == 0
    token, at = h.plane.take_pong() or (0, 0.0)
    assert token == 8 and before <= at <= time.monotonic()
    assert h.plane.take_pong() is None and h.plane.take_commands() == 0
    for odd in (f"PONG {BARRIER_TOKEN | 3}", "PONG 0", "PONG 07", "PONG 9 9", "PONG",
                "PONG 99999999999"):  # fmt: skip
        frame = command(odd, stream_id=0)
        assert python_reads(frame) == len(frame), odd
    assert python_reads(command("PING 7", stream_id=0)) > 0  # answered by the session
    assert h.plane.take_pong() is None


def test_the_plane_answers_a_keepalive_ping_itself(engine, sockets):
    """A peer's keepalive PING, read in the pump, is answered PONG by the plane
    with no event for Python (an idle fleet's keepalives cost Python nothing);
    a barrier's PING, or one while Python has output of its own first, is Python's."""
    from reactor_mux.codec._c import InboundDecoder
    from reactor_mux.io.plane import CHANNEL_INPUT
    from reactor_mux.protocol.resumelog import BARRIER_TOKEN

    h = Harness(engine, sockets)
    mine, peer = tcp_pair()  # the channel: the plane reads and sends on ``mine``
    sockets += [mine, peer]
    decoder = InboundDecoder(65536, 1024, 262144)
    decoder.writable()
    h.plane.set_input(decoder.rx, mine.fileno())
    h.plane.set_channel(mine.fileno())
    h.plane.set_send_ok(True)

    def ping(token: int) -> bytes:
        body = f"PING {token}".encode()
        return codec.encode_header(len(body), 0, codec.KIND_COMMAND) + body

    def pong(token: int) -> bytes:
        body = f"PONG {token}".encode()
        return codec.encode_header(len(body), 0, codec.KIND_COMMAND) + body

    peer.sendall(ping(41) + ping(4294967))
    assert engine.pump() == []
    assert read_exactly(peer, len(pong(41) + pong(4294967))) == pong(41) + pong(4294967)
    assert (decoder.rx.start, decoder.rx.end) == (0, 0)
    assert h.plane.take_commands() == 0 and h.plane.take_pong() is None  # not logged
    # A barrier's PING: the session answers it (its PONG orders the resume log).
    barrier = ping(BARRIER_TOKEN | 5)
    peer.sendall(barrier)
    assert engine.pump() == [(CHANNEL_INPUT, 7, 0, len(barrier))]
    records, error = decoder.advance(len(barrier))
    assert error == codec.OK and len(records) == 1
    h.plane.wake_input()
    # Python has output of its own to send first: the answer waits behind it.
    h.plane.set_send_ok(False)
    peer.sendall(ping(9))
    deadline = time.monotonic() + 5
    while not (events := engine.pump()) and time.monotonic() < deadline:
        time.sleep(0.001)  # the bytes are on their way through loopback
    assert events == [(CHANNEL_INPUT, 7, 0, len(ping(9)))]
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(64)


def test_the_pump_reports_its_sends_at_the_pace_python_sets(engine, sockets):
    """SENT comes once the sends Python allowed between reports are made (the resume
    log's barrier count), or once the send rings hold the outbound cap; the tick
    takes what is unreported."""
    from reactor_mux.io.plane import SENT

    h = Harness(engine, sockets)
    _handle, app, _slot = h.stream(1)
    channel, peer = tcp_pair()
    sockets += [channel, peer]
    h.plane.set_channel(channel.fileno())
    h.plane.set_send_ok(True)
    h.plane.set_send_reports(3, 0)

    def one_send() -> list[int]:
        app.sendall(b"x")
        kinds = [e[0] for e in engine.pump()]
        assert read_exactly(peer, codec.HEADER_SIZE + 1)[-1:] == b"x"  # sent, reported or not
        return kinds

    assert one_send() == [] and one_send() == []
    assert one_send() == [SENT]
    assert [e for e in engine.pump() if e[0] == SENT] == []
    one_send()
    assert h.plane.take_sends() == 1 and h.plane.take_sends() == 0
    # The rings holding the cap's bytes report at once (retained for resume here:
    # nothing acknowledges them).
    h.plane.set_send_reports(1000, 1)
    assert one_send() == [SENT]
