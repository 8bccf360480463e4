"""The session without a network: two sessions wired back to back, and raw frames."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor_mux.codec._python import INITIAL_RECEIVE
from reactor_mux.protocol import auth
from reactor_mux.protocol.commands import parse_command
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.errors import LocalProtocolError
from reactor_mux.protocol.events import (
    ChannelFailed,
    CreditGranted,
    DatagramReceived,
    DataReceived,
    HelloReceived,
    MappingAccepted,
    MappingCancelled,
    MappingKind,
    MappingRefused,
    MappingRequested,
    PeerBlocked,
    PeerLeaving,
    PongReceived,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.frames import KIND_DATAGRAM, encode_frame, split_frames
from reactor_mux.protocol.limits import (
    DATA_FRAME_SIZE,
    DATAGRAM_QUEUE_LIMIT,
    DEFAULT_WINDOW,
    HANDSHAKE_RECEIVE_SIZE,
    HANDSHAKE_REPLY_BACKLOG,
    MAX_DATA_BODY,
    MAX_MAPPINGS,
    MAX_WINDOW,
    MIN_WINDOW,
)
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.streamstate import TRANSITIONS, StreamInput, StreamState
from reactor_mux.protocol.verbs import Role

WINDOW = 64 * 1024


def command(stream_id, text):
    return encode_frame(stream_id, 1, text.encode())


def data(stream_id, payload):
    return encode_frame(stream_id, 0, payload)


def decode(wire):
    frames, consumed, error = split_frames(wire)
    assert error is None and consumed == len(wire)
    return frames


def commands_in(wire):
    return [(sid, bytes(body).decode()) for sid, kind, body in decode(wire) if kind == 1]


def exchange(a, b):
    """Move output both ways until both sides are quiet; return (a_events, b_events)."""
    a_events, b_events = [], []
    for _ in range(1000):
        wire_ab, wire_ba = a.data_to_send(), b.data_to_send()
        if not wire_ab and not wire_ba:
            return a_events, b_events
        b_events += b.receive_data(wire_ab)
        a_events += a.receive_data(wire_ba)
    raise AssertionError("sessions never went quiet")


def types(events):
    return [type(e) for e in events]


@pytest.fixture
def pair():
    client, server = (
        Session(Role.CLIENT, SessionConfig(WINDOW)),
        Session(Role.SERVER, SessionConfig(WINDOW)),
    )
    c_events, s_events = exchange(client, server)
    assert c_events == [HelloReceived(WINDOW)] and s_events == [HelloReceived(WINDOW)]
    return client, server


def open_l_stream(client, server, mapping=1):
    client.request_connect(mapping, "127.0.0.1", 80)
    sid = client.open_stream(mapping)
    _, s_events = exchange(client, server)
    assert types(s_events) == [MappingRequested, StreamRequested]
    server.accept_connect(mapping)
    server.accept_stream(sid)
    c_events, _ = exchange(client, server)
    assert types(c_events) == [MappingAccepted, StreamAccepted]
    return sid


def test_handshake_announces_windows():
    client, server = (
        Session(Role.CLIENT, SessionConfig(8192)),
        Session(Role.SERVER, SessionConfig(16384)),
    )
    assert not client.ready
    exchange(client, server)
    assert client.ready and server.ready
    assert client.peer_window == 16384 and server.peer_window == 8192


def test_bind_reports_the_bound_address(pair):
    client, server = pair
    client.request_bind(2, "127.0.0.1", 0)
    _, s_events = exchange(client, server)
    assert s_events == [MappingRequested(2, MappingKind.BIND, "127.0.0.1", 0)]
    server.accept_bind(2, "127.0.0.1", 40123)
    c_events, _ = exchange(client, server)
    assert c_events == [MappingAccepted(2, MappingKind.BIND, "127.0.0.1", 40123)]
    sid = server.open_stream(2)
    assert sid % 2 == 0, "server-opened streams have even ids"
    c_events, _ = exchange(client, server)
    assert c_events == [StreamRequested(sid, 2)]
    client.accept_stream(sid)
    _, s_events = exchange(client, server)
    assert s_events == [StreamAccepted(sid)]


def test_unix_socket_paths_in_connect_and_bind(pair):
    """A path travels as its own word (``%XX`` for bytes outside printable ASCII and
    for ``%``), and comes out as it went in."""
    client, server = pair
    odd = "/tmp/with space/%и.sock"
    client.request_connect_unix(1, "/run/redis/redis.sock")
    client.request_bind_unix(2, odd)
    wire = client.data_to_send()
    assert commands_in(wire) == [
        (1, "CONNECT /run/redis/redis.sock"),
        (2, "BIND /tmp/with%20space/%25%D0%B8.sock"),
    ]
    s_events = server.receive_data(wire)
    assert s_events == [
        MappingRequested(1, MappingKind.CONNECT, path="/run/redis/redis.sock"),
        MappingRequested(2, MappingKind.BIND, path=odd),
    ]
    server.accept_connect(1)
    server.accept_bind_unix(2, odd)
    c_events, _ = exchange(client, server)
    assert c_events == [
        MappingAccepted(1, MappingKind.CONNECT),
        MappingAccepted(2, MappingKind.BIND, path=odd),
    ]


@pytest.mark.parametrize(
    ("word", "why"),
    [
        ("/a%2fb", "one spelling"),  # lower-case hex
        ("/a%41", "one spelling"),  # an escape where none is needed
        ("/a%00", "NUL"),
        ("/" + "x" * 107, "longer than 107"),
        ("/a%", "one spelling"),  # a lone %
    ],
)
def test_a_socket_path_word_that_is_not_canonical_is_a_violation(pair, word, why):
    _client, server = pair
    fails(server, command(1, f"CONNECT {word}"), why)


def test_refusals(pair):
    client, server = pair
    client.request_bind(1, "0.0.0.0", 22)
    client.request_connect(2, "10.0.0.1", 80)
    exchange(client, server)
    server.refuse_bind(1, "address already in use")
    server.refuse_connect(2, "not allowed")
    c_events, _ = exchange(client, server)
    assert c_events == [
        MappingRefused(1, MappingKind.BIND, "address already in use"),
        MappingRefused(2, MappingKind.CONNECT, "not allowed"),
    ]


def test_data_both_ways_then_half_close_both_ways(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.send_data(sid, b"request")
    client.end_stream(sid)
    _, s_events = exchange(client, server)
    assert [(type(e), getattr(e, "data", None)) for e in s_events] == [
        (DataReceived, memoryview(b"request")),
        (StreamEnded, None),
    ]
    assert client.stream_state(sid) is StreamState.HALF_CLOSED_LOCAL
    assert server.stream_state(sid) is StreamState.HALF_CLOSED_REMOTE
    server.send_data(sid, b"reply")
    server.end_stream(sid)
    c_events, _ = exchange(client, server)
    assert types(c_events) == [DataReceived, StreamEnded]
    assert client.stream_state(sid) is StreamState.CLOSED
    assert server.stream_state(sid) is StreamState.CLOSED
    assert client.stream_count == server.stream_count == 0


def test_fin_waits_for_buffered_data():
    client = Session(Role.CLIENT, SessionConfig(4 * WINDOW))
    server = Session(Role.SERVER, SessionConfig(4 * WINDOW))
    exchange(client, server)
    sid = open_l_stream(client, server)
    size = DATA_FRAME_SIZE + 1000  # two data frames, the second short
    client.send_data(sid, b"x" * size)
    client.end_stream(sid)
    frames = decode(client.data_to_send())
    assert [(kind, len(body)) for _, kind, body in frames] == [
        (0, DATA_FRAME_SIZE),
        (0, 1000),
        (1, 3),
    ]
    assert frames[-1][2] == b"FIN"


def test_syn_error_closes_the_stream(pair):
    client, server = pair
    client.request_connect(1, "127.0.0.1", 9)
    sid = client.open_stream(1)
    exchange(client, server)
    server.accept_connect(1)
    server.refuse_stream(sid, "connection refused")
    c_events, _ = exchange(client, server)
    assert c_events[-1] == StreamRefused(sid, "connection refused")
    assert client.stream_count == 0 and server.stream_count == 0


def test_reset_and_late_frames_are_ignored(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    server.send_data(sid, b"in flight")
    in_flight = server.data_to_send()
    client.reset_stream(sid, "local connection failed")
    assert client.stream_count == 0
    assert client.receive_data(in_flight) == []  # data after our RST: dropped quietly
    _, s_events = exchange(client, server)
    assert s_events == [StreamReset(sid, "local connection failed")]
    assert server.stream_count == 0


def test_flow_control_stops_at_the_window_and_resumes_on_ack(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    assert client.outbound_space(sid) == WINDOW
    client.send_data(sid, b"a" * WINDOW)
    assert client.outbound_space(sid) == 0
    _, s_events = exchange(client, server)
    assert s_events[0] == PeerBlocked(sid, WINDOW)  # BLOCKED: a control frame, ahead of data
    assert sum(len(e.data) for e in s_events[1:]) == WINDOW
    # Receiving is not consuming: no ACK until bytes reach the local socket.
    assert client.outbound_space(sid) == 0
    server.inbound_delivered(sid, WINDOW // 4 - 1)
    assert server.data_to_send() == b""
    server.inbound_delivered(sid, 1)
    wire = server.data_to_send()
    assert commands_in(wire) == [(sid, f"ACK {WINDOW // 4}")]
    assert client.receive_data(wire) == [CreditGranted(sid)]
    assert client.outbound_space(sid) == WINDOW // 4


def test_control_frames_go_ahead_of_queued_data(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.send_data(sid, b"d" * WINDOW)
    client.request_connect(5, "127.0.0.1", 81)
    frames = decode(b"".join(bytes(v) for v in client.output_views()))
    # BLOCKED (the data filled the window) and CONNECT, in the order queued.
    assert frames[:2] == [(sid, 1, f"BLOCKED {WINDOW}".encode()), (5, 1, b"CONNECT 127.0.0.1:81")]
    assert all(kind == 0 for _, kind, _ in frames[2:])


def test_round_robin_lets_a_small_frame_through_early(pair):
    client, server = pair
    bulk = open_l_stream(client, server, mapping=1)
    small = open_l_stream(client, server, mapping=2)
    client.send_data(bulk, b"B" * WINDOW)
    client.send_data(small, b"interactive")
    frames = decode(b"".join(bytes(v) for v in client.output_views()))
    order = [sid for sid, kind, _ in frames if kind == 0]
    assert order.index(small) <= 1, order


def test_partial_frame_is_finished_before_anything_else(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.send_data(sid, b"p" * 1000)
    views = client.output_views()
    client.output_sent(5)  # half a header
    client.request_connect(9, "127.0.0.1", 99)  # a control frame arrives meanwhile
    rest = b"".join(bytes(v) for v in client.output_views())
    wire = b"".join(bytes(v) for v in views)[:5] + rest
    frames = decode(wire)
    assert frames[0] == (sid, 0, b"p" * 1000)
    assert frames[1][2] == b"CONNECT 127.0.0.1:99"


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=0, max_size=70000), min_size=1, max_size=4),
    sends=st.lists(st.integers(1, 100000), min_size=1, max_size=200),
)
def test_any_sequence_of_partial_sends_yields_the_same_streams(payloads, sends):
    client, server = (
        Session(Role.CLIENT, SessionConfig(256 * 1024)),
        Session(Role.SERVER, SessionConfig(256 * 1024)),
    )
    exchange(client, server)
    ids = []
    for mapping in range(1, len(payloads) + 1):
        client.request_connect(mapping, "127.0.0.1", 80)
        sid = client.open_stream(mapping)
        exchange(client, server)
        server.accept_connect(mapping)
        server.accept_stream(sid)
        exchange(client, server)
        ids.append(sid)
    for sid, payload in zip(ids, payloads, strict=False):
        client.send_data(sid, payload)
        client.end_stream(sid)
    wire = bytearray()
    sizes = iter(sends)
    while client.has_output():
        views = client.output_views()
        total = sum(len(v) for v in views)
        n = min(total, next(sizes, total))
        wire += b"".join(bytes(v) for v in views)[:n]
        client.output_sent(n)
    received = {sid: bytearray() for sid in ids}
    ended = []
    for event in server.receive_data(bytes(wire)):
        if isinstance(event, DataReceived):
            assert event.stream_id not in ended, "data after FIN"
            received[event.stream_id] += event.data
        elif isinstance(event, StreamEnded):
            ended.append(event.stream_id)
    assert sorted(ended) == sorted(ids)
    for sid, payload in zip(ids, payloads, strict=False):
        assert received[sid] == payload


def test_dynamic_streams_name_their_targets(pair):
    client, server = pair
    client.request_dynamic(3)
    _, s_events = exchange(client, server)
    assert s_events == [MappingRequested(3, MappingKind.DYNAMIC)]
    server.accept_dynamic(3)
    c_events, _ = exchange(client, server)
    assert c_events == [MappingAccepted(3, MappingKind.DYNAMIC)]
    first = client.open_stream(3, ("example.org", 443))
    second = client.open_stream(3, ("::1", 22))
    wire = client.data_to_send()
    assert commands_in(wire) == [(first, "SYN 3 example.org:443"), (second, "SYN 3 [::1]:22")]
    s_events = server.receive_data(wire)
    assert s_events == [
        StreamRequested(first, 3, ("example.org", 443)),
        StreamRequested(second, 3, ("::1", 22)),
    ]
    server.accept_stream(first)
    server.refuse_stream(second, "refused: connect to [::1]:22 failed: connection refused")
    c_events, _ = exchange(client, server)
    assert c_events == [
        StreamAccepted(first),
        StreamRefused(second, "refused: connect to [::1]:22 failed: connection refused"),
    ]


def test_a_dynamic_stream_must_name_a_target_and_others_must_not(pair):
    client, server = pair
    client.request_dynamic(1)
    client.request_connect(2, "127.0.0.1", 80)
    exchange(client, server)
    with pytest.raises(LocalProtocolError):
        client.open_stream(1)
    with pytest.raises(LocalProtocolError):
        client.open_stream(2, ("127.0.0.1", 80))
    with pytest.raises(LocalProtocolError):
        server.open_stream(1)
    with pytest.raises(LocalProtocolError, match="not a host:port"):
        client.open_stream(1, ("fe80::1%eth0", 80))  # the server would fail the channel


def test_a_refused_dynamic_mapping_is_reported(pair):
    client, server = pair
    client.request_dynamic(4)
    exchange(client, server)
    server.refuse_dynamic(4, "not allowed here")
    c_events, _ = exchange(client, server)
    assert c_events == [MappingRefused(4, MappingKind.DYNAMIC, "not allowed here")]


def test_dynamic_syn_violations(pair):
    client, server = pair
    client.request_dynamic(1)
    client.request_connect(2, "127.0.0.1", 80)
    exchange(client, server)
    fails(server, command(1, "SYN 1"), "names no target")


def test_a_syn_naming_a_target_on_a_fixed_mapping_is_a_violation(pair):
    client, server = pair
    client.request_connect(2, "127.0.0.1", 80)
    exchange(client, server)
    fails(server, command(1, "SYN 2 10.0.0.1:22"), "names a target on CONNECT")


def test_a_dynamic_syn_with_a_bad_target_is_a_violation(pair):
    client, server = pair
    client.request_dynamic(1)
    exchange(client, server)
    fails(server, command(1, "SYN 1 example.org:0"), "port")


# --------------------------------------------------------------- violations


def fails(session, wire, match):
    events = session.receive_data(wire)
    assert events and isinstance(events[-1], ChannelFailed), events
    assert not events[-1].by_peer
    assert match in events[-1].reason
    assert session.failed
    out = commands_in(session.data_to_send())
    assert out[-1][0] == 0 and out[-1][1].startswith("ERROR "), out
    return events[-1]


VIOLATIONS = [
    ("data on a never-opened stream", data(5, b"x"), "never opened"),
    ("data on stream 0", data(0, b"x"), "stream 0"),
    ("SYN with the server's parity", command(2, "SYN 1"), "this side allocates"),
    ("SYN for an undeclared mapping", command(1, "SYN 7"), "never declared"),
    ("unknown command", command(0, "TELEPORT 1"), "unknown command"),
    ("duplicate HELLO", command(0, "HELLO 1 65536 65536"), "duplicate HELLO"),
    ("CONNECT OK sent to a server", command(1, "CONNECT OK"), "servers only"),
    ("DYNAMIC OK sent to a server", command(1, "DYNAMIC OK"), "servers only"),
    ("DYNAMIC with an address", command(1, "DYNAMIC 127.0.0.1:80"), "DYNAMIC"),
    ("HELLO on a stream id", command(3, "HELLO 1 65536 65536"), "id 0"),
    ("SYN on id 0", command(0, "SYN 1"), "needs a stream id"),
    ("ACK for a never-opened stream", command(9, "ACK 1"), "never opened"),
    ("oversized data frame", bytes.fromhex("000100010000000100"), "maximum frame size"),
    ("bad kind byte", bytes.fromhex("000000000000000107"), "kind byte"),
]


@pytest.mark.parametrize("name,wire,match", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_violations_fail_the_channel_with_an_error_frame(pair, name, wire, match):
    _client, server = pair
    fails(server, wire, match)


def test_frames_before_hello_are_refused():
    server = Session(Role.SERVER)
    fails(server, command(1, "CONNECT 127.0.0.1:80"), "expected HELLO")
    server = Session(Role.SERVER)
    fails(server, data(1, b"x"), "expected HELLO")


def test_wrong_version_and_bad_window():
    fails(Session(Role.SERVER), command(0, "HELLO 2 65536 65536"), "unsupported protocol version 2")
    fails(Session(Role.SERVER), command(0, f"HELLO 1 {MIN_WINDOW - 1} 65536"), "window")


def test_window_above_the_maximum_is_refused():
    fails(Session(Role.SERVER), command(0, f"HELLO 1 {MAX_WINDOW + 1} 65536"), "window")


def test_mappings_beyond_the_limit_are_refused_gracefully(pair):
    client, server = pair
    for mapping in range(1, MAX_MAPPINGS + 2):
        client.request_connect(mapping, "127.0.0.1", 80)
    c_events, s_events = exchange(client, server)
    assert len(s_events) == MAX_MAPPINGS
    assert c_events == [
        MappingRefused(
            MAX_MAPPINGS + 1,
            MappingKind.CONNECT,
            f"limit: too many mappings (limit {MAX_MAPPINGS})",
        )
    ]
    assert not server.failed
    assert server.mapping_limit_refusals == 1  # counted for the metrics (review)


def test_refused_binds_are_forgotten_and_do_not_count_toward_the_limit(pair):
    """A client retries a refused -R under new numbers for as long as the channel
    lives: neither side may keep them, and the limit must not fill up with them."""
    client, server = pair
    for mapping in range(1, MAX_MAPPINGS + 11):
        client.request_bind(mapping, "127.0.0.1", 2222)
        _, s_events = exchange(client, server)
        assert s_events == [MappingRequested(mapping, MappingKind.BIND, "127.0.0.1", 2222)]
        server.refuse_bind(mapping, "address already in use")
        c_events, _ = exchange(client, server)
        assert c_events == [MappingRefused(mapping, MappingKind.BIND, "address already in use")]
    client.request_bind(MAX_MAPPINGS + 20, "127.0.0.1", 2222)
    _, s_events = exchange(client, server)
    server.accept_bind(MAX_MAPPINGS + 20, "127.0.0.1", 2222)
    c_events, _ = exchange(client, server)
    assert c_events == [MappingAccepted(MAX_MAPPINGS + 20, MappingKind.BIND, "127.0.0.1", 2222)]
    # A SYN can never name a refused BIND: it is unknown, a violation.
    fails(client, command(2, "SYN 1"), "never declared")


def test_duplicate_syn_and_id_reuse(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    fails(server, command(sid, "SYN 1"), "reuses stream id")


def test_data_beyond_the_window(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    assert server.receive_data(data(sid, b"x" * 60000)) != []
    fails(server, data(sid, b"x" * (WINDOW - 60000 + 1)), "beyond its window")


def test_ack_for_more_than_was_sent(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.send_data(sid, b"x" * 100)
    client.data_to_send()
    fails(client, command(sid, "ACK 101"), "more than")


def test_data_after_fin(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.end_stream(sid)
    exchange(client, server)
    fails(server, data(sid, b"late"), "cannot receive data in state half-closed-remote")


def test_peer_error_is_reported_without_a_reply(pair):
    client, _server = pair
    events = client.receive_data(command(0, "ERROR shutdown: shutting down"))
    assert events == [
        ChannelFailed("shutdown: shutting down", by_peer=True, code=ErrorCode.SHUTDOWN)
    ]
    assert client.data_to_send() == b""


def test_an_older_peers_error_is_understood_by_its_words(pair):
    """An older peer writes no code word: its few reasons that matter are read in
    errorcodes.code_of, the one place that knows its phrases."""
    client, _server = pair
    events = client.receive_data(command(0, "ERROR client shutting down"))
    assert events == [ChannelFailed("client shutting down", by_peer=True, code=ErrorCode.SHUTDOWN)]
    client2, _ = Session(Role.CLIENT), None
    events = client2.receive_data(command(0, "ERROR something nobody knows"))
    assert events == [ChannelFailed("something nobody knows", by_peer=True, code=None)]


def test_a_peer_that_never_reads_replies_is_cut_off(pair):
    _client, server = pair
    # Each SYN for a refused mapping makes the server queue a SYN ERROR reply.
    server.receive_data(command(1, "CONNECT 127.0.0.1:80"))
    server.refuse_connect(1, "no")
    wire = b"".join(command(sid, "SYN 1") for sid in range(1, 60001, 2))
    events = server.receive_data(wire)
    assert isinstance(events[-1], ChannelFailed) and "not reading" in events[-1].reason


class _Book:
    def secret_for(self, name: str) -> bytes | None:
        return b"correct horse battery staple"


def test_a_stranger_that_never_reads_replies_is_cut_off_sooner():
    """Before the peer proved itself, HANDSHAKE_REPLY_BACKLOG bounds its unsent
    replies (PONGs to its PINGs); an open channel tolerates MAX_CONTROL_BACKLOG."""
    hello = Session(Role.CLIENT, client_id="backlog-test-1").data_to_send()
    pong = len(command(0, "PONG 4294967295"))
    pings = command(0, "PING 4294967295") * (HANDSHAKE_REPLY_BACKLOG // pong + 2)
    stranger = Session(Role.SERVER, SessionConfig(secret_book=_Book()))
    events = stranger.receive_data(hello + pings)
    assert isinstance(events[-1], ChannelFailed)
    assert events[-1].reason == (
        f"peer is not reading: over {HANDSHAKE_REPLY_BACKLOG} bytes of replies queued"
    )
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    exchange(client, server)
    assert not [e for e in server.receive_data(pings * 4) if isinstance(e, ChannelFailed)]
    assert server.ready


def test_too_many_streams_are_refused_gracefully():
    client, server = Session(Role.CLIENT), Session(Role.SERVER, SessionConfig(max_streams=2))
    exchange(client, server)
    client.request_connect(1, "127.0.0.1", 80)
    ids = [client.open_stream(1) for _ in range(3)]
    c_events, s_events = exchange(client, server)
    assert [e.stream_id for e in s_events if isinstance(e, StreamRequested)] == ids[:2]
    assert c_events[-1] == StreamRefused(ids[2], "limit: too many streams (limit 2)")
    assert not server.failed


# ------------------------------------------------ every (state, input) pair

PEER_INPUTS = {
    StreamInput.RECV_SYN_OK: lambda sid: command(sid, "SYN OK"),
    StreamInput.RECV_SYN_ERROR: lambda sid: command(sid, "SYN ERROR refused"),
    StreamInput.RECV_DATA: lambda sid: data(sid, b"z"),
    StreamInput.RECV_FIN: lambda sid: command(sid, "FIN"),
    StreamInput.RECV_ACK: lambda sid: command(sid, "ACK 1"),
    StreamInput.RECV_RST: lambda sid: command(sid, "RST gone"),
    StreamInput.RECV_BLOCKED: lambda sid: command(sid, f"BLOCKED {DEFAULT_WINDOW}"),
    StreamInput.RECV_WINDOW: lambda sid: command(sid, f"WINDOW {MAX_WINDOW}"),
}


def session_in_state(state):
    """A server session holding one stream in ``state``; returns (session, stream id)."""
    client, server = Session(Role.CLIENT), Session(Role.SERVER)
    exchange(client, server)
    client.request_bind(2, "127.0.0.1", 0)
    client.request_connect(1, "127.0.0.1", 80)
    exchange(client, server)
    server.accept_bind(2, "127.0.0.1", 5000)
    server.accept_connect(1)
    exchange(client, server)
    if state is StreamState.SYN_SENT:
        return server, server.open_stream(2)
    sid = client.open_stream(1)
    exchange(client, server)
    if state is StreamState.SYN_RECEIVED:
        return server, sid
    server.accept_stream(sid)
    exchange(client, server)
    server.send_data(sid, b"q")  # so that ACK 1 is within what was sent
    exchange(client, server)
    if state is StreamState.HALF_CLOSED_LOCAL:
        server.end_stream(sid)
    elif state is StreamState.HALF_CLOSED_REMOTE:
        client.end_stream(sid)
        exchange(client, server)
    server.data_to_send()
    return server, sid


LIVE = [s for s in StreamState if s is not StreamState.CLOSED]


@pytest.mark.parametrize("state", LIVE, ids=lambda s: s.value)
@pytest.mark.parametrize("event", list(PEER_INPUTS), ids=lambda i: i.value)
def test_every_state_input_pair_is_legal_or_closes(state, event):
    server, sid = session_in_state(state)
    assert server.stream_state(sid) is state
    events = server.receive_data(PEER_INPUTS[event](sid))
    if (state, event) in TRANSITIONS:
        assert not any(isinstance(e, ChannelFailed) for e in events), events
        assert server.stream_state(sid) is TRANSITIONS[(state, event)]
    else:
        assert isinstance(events[-1], ChannelFailed), events
        assert server.stream_state(sid) is StreamState.CLOSED
        assert server.stream_count == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list(PEER_INPUTS)), max_size=8), st.sampled_from(LIVE))
def test_random_peer_input_sequences_never_escape_the_error_boundary(inputs, state):
    server, sid = session_in_state(state)
    for event in inputs:
        events = server.receive_data(PEER_INPUTS[event](sid))
        for e in events:
            assert (
                not isinstance(e, ChannelFailed) or server.stream_state(sid) is StreamState.CLOSED
            )
        if server.failed:
            break


def test_every_error_frame_reason_parses():
    server = Session(Role.SERVER)
    server.receive_data(b"\x00\x00\x00\x05\x00\x00\x00\x00\x01HELLO")
    _sid, text = commands_in(server.data_to_send())[-1]
    assert parse_command(text.encode()).verb.value == "ERROR"


# ------------------------------------------------ HELLO extensions, PING, limits


def test_ping_is_answered_with_pong_ahead_of_data(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    server.send_data(sid, b"d" * 60000)  # data waiting in the ring
    server.receive_data(command(0, "PING 42"))
    frames = decode(server.data_to_send())
    assert frames[0] == (0, 1, b"PONG 42")
    client.ping(7)
    assert server.receive_data(client.data_to_send()) == []
    pong = server.data_to_send()
    assert pong == command(0, "PONG 7")
    assert client.receive_data(pong) == [PongReceived(7)]


def test_client_id_travels_in_hello():
    client = Session(Role.CLIENT, client_id="abcdef0123456789")
    server = Session(Role.SERVER)
    _c_events, s_events = exchange(client, server)
    assert s_events == [HelloReceived(DEFAULT_WINDOW, MAX_DATA_BODY, "abcdef0123456789")]
    assert server.peer_client_id == "abcdef0123456789"
    with pytest.raises(ValueError):
        Session(Role.SERVER, client_id="abcdef0123456789")


def test_a_server_hello_whose_fourth_word_is_no_challenge_is_refused():
    fails(
        Session(Role.CLIENT),
        command(0, "HELLO 1 65536 65536 abcdef0123456789"),
        "authentication challenge",
    )


def test_bad_max_frame_or_client_id_in_hello():
    fails(Session(Role.SERVER), command(0, "HELLO 1 65536 1023"), "max frame")
    fails(Session(Role.SERVER), command(0, "HELLO 1 65536 65537"), "max frame")
    fails(Session(Role.SERVER), command(0, "HELLO 1 65536 65536 short"), "client id")


def test_sender_keeps_data_frames_within_the_peers_max_frame():
    client = Session(Role.CLIENT)
    server = Session(Role.SERVER, SessionConfig(max_frame=4096))
    exchange(client, server)
    assert client.peer_max_frame == 4096
    sid = open_l_stream(client, server)
    client.send_data(sid, b"x" * 20000)
    sizes = [len(body) for _, kind, body in decode(client.data_to_send()) if kind == 0]
    assert max(sizes) == 4096 and sum(sizes) == 20000


def test_pending_syns_beyond_the_limit_are_refused():
    client, server = Session(Role.CLIENT), Session(Role.SERVER, SessionConfig(max_pending_syns=2))
    exchange(client, server)
    client.request_connect(1, "127.0.0.1", 80)
    ids = [client.open_stream(1) for _ in range(3)]
    c_events, s_events = exchange(client, server)
    assert [e.stream_id for e in s_events if isinstance(e, StreamRequested)] == ids[:2]
    assert c_events[-1] == StreamRefused(ids[2], "limit: too many pending connections (limit 2)")
    server.accept_connect(1)
    server.accept_stream(ids[0])  # answered: no longer pending, so room for one more
    fourth = client.open_stream(1)
    _, s_events = exchange(client, server)
    assert s_events[-1] == StreamRequested(fourth, 1)


def test_nothing_follows_the_error_frame(pair):
    """Replies the driver makes for frames that preceded a violation are dropped."""
    _client, server = pair
    events = server.receive_data(command(1, "CONNECT 127.0.0.1:80") + data(9, b"x"))
    assert isinstance(events[0], MappingRequested) and isinstance(events[-1], ChannelFailed)
    server.accept_connect(1)  # the driver handles the events in order
    frames = decode(server.data_to_send())
    assert frames == [(0, 1, b"ERROR protocol: data frame for stream 9, which was never opened")]


# ------------------------------------------------------------ window growth


def fill_window(sender, receiver, sid):
    """Send exactly the sender's free window; return the receiver's events."""
    sender.send_data(sid, b"w" * sender.outbound_space(sid))
    _, events = exchange(sender, receiver)
    return events


def test_a_blocked_sender_gets_its_window_doubled_up_to_max_window():
    client = Session(Role.CLIENT, SessionConfig(WINDOW))
    server = Session(Role.SERVER, SessionConfig(WINDOW, max_window=4 * WINDOW))
    exchange(client, server)
    sid = open_l_stream(client, server)
    for window in (WINDOW, 2 * WINDOW, 4 * WINDOW):
        events = fill_window(client, server, sid)
        assert events[0] == PeerBlocked(sid, window)
        assert sum(len(e.data) for e in events if isinstance(e, DataReceived)) == window // (
            1 if window == WINDOW else 2
        )
        grown = server.grow_window(sid, window)
        if window == 4 * WINDOW:
            assert grown == 0 and server.data_to_send() == b""  # at max_window: no WINDOW
            break
        assert grown == 2 * window
        wire = server.data_to_send()
        assert commands_in(wire) == [(sid, f"WINDOW {2 * window}")]
        assert client.receive_data(wire) == [CreditGranted(sid)]
        assert client.outbound_space(sid) == window  # the new window less what is in flight
    assert server.window_growth == 3 * WINDOW
    # The receiver takes a whole grown window without ACKs, and not a byte more.
    assert not server.failed
    fails(server, data(sid, b"x"), "beyond its window of 262144")


def test_growth_stays_within_the_channel_budget_and_is_returned_on_close():
    client = Session(Role.CLIENT, SessionConfig(WINDOW))
    server = Session(Role.SERVER, SessionConfig(WINDOW, max_window=8 * WINDOW,
                                                window_budget=3 * WINDOW))  # fmt: skip
    exchange(client, server)
    first, second = open_l_stream(client, server, 1), open_l_stream(client, server, 2)
    assert server.grow_window(first, WINDOW) == 2 * WINDOW  # +1 window of the budget's 3
    assert server.grow_window(second, WINDOW) == 2 * WINDOW  # +1
    assert server.grow_window(first, 2 * WINDOW) == 0  # 4 windows would be +2: over budget
    assert server.window_growth == 2 * WINDOW
    client.reset_stream(first, "done")
    exchange(client, server)
    assert server.window_growth == WINDOW  # the closed stream gave its growth back
    assert server.grow_window(second, 2 * WINDOW) == 4 * WINDOW


class GrowthWatcher:
    """A data plane that delivers nothing itself and records the growth the
    session says is left."""

    def __init__(self) -> None:
        self.growth_left: list[int] = []

    def deliver(self, staging, staging_length, records, count, index):  # type: ignore[no-untyped-def]
        return index, []

    def hold_output(self) -> None:
        pass

    def take_sends(self) -> int:
        return 0

    def pace_sends(self, every: int) -> None:
        pass

    def take_commands(self) -> int:
        return 0

    def take_acks(self) -> list[tuple[int, int]]:
        return []

    def set_growth_left(self, growth_left: int) -> None:
        self.growth_left.append(growth_left)


def test_the_plane_always_knows_the_growth_left_in_the_budget():
    """The plane takes the BLOCKED that grow_window would refuse for the budget, so
    it is told what is left whenever growth is granted or given back."""
    client = Session(Role.CLIENT, SessionConfig(WINDOW))
    server = Session(Role.SERVER, SessionConfig(WINDOW, max_window=8 * WINDOW,
                                                window_budget=2 * WINDOW))  # fmt: skip
    plane = GrowthWatcher()
    server.use_plane(plane)  # type: ignore[arg-type]
    exchange(client, server)
    first = open_l_stream(client, server, 1)
    assert server.grow_window(first, WINDOW) == 2 * WINDOW
    assert server.grow_window(first, 2 * WINDOW) == 0  # +2 windows: over what is left
    client.reset_stream(first, "done")
    exchange(client, server)
    assert plane.growth_left == [2 * WINDOW, WINDOW, 2 * WINDOW]


def test_blocked_is_reported_once_per_ack_and_a_stale_one_is_ignored(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.send_data(sid, b"a" * WINDOW)
    assert commands_in(client.data_to_send())[0] == (sid, f"BLOCKED {WINDOW}")
    server.receive_data(data(sid, b"a" * WINDOW))  # what the client sent, as one frame
    assert server.receive_data(command(sid, "BLOCKED 1024")) == []  # not our window: stale
    server.inbound_delivered(sid, WINDOW // 4)
    client.receive_data(server.data_to_send())  # ACK
    client.send_data(sid, b"b" * (WINDOW // 4))
    assert commands_in(client.data_to_send())[0] == (sid, f"BLOCKED {WINDOW}")


@pytest.mark.parametrize(
    "text,match",
    [
        ("WINDOW 1024", "does not grow"),
        (f"WINDOW {WINDOW}", "does not grow"),
        (f"WINDOW {MAX_WINDOW + 1}", "WINDOW size"),
        ("WINDOW lots", "WINDOW size"),
        ("BLOCKED 0", "BLOCKED window"),
        ("WINDOW", "argument"),
    ],
)
def test_bad_window_commands_fail_the_channel(pair, text, match):
    client, server = pair
    sid = open_l_stream(client, server)
    fails(client, command(sid, text), match)


def test_window_and_blocked_on_stream_zero_fail(pair):
    _client, server = pair
    fails(server, command(0, "WINDOW 131072"), "needs a stream id")
    fails(Session(Role.SERVER), command(0, "BLOCKED 65536"), "needs a stream id")
    fails(Session(Role.SERVER), command(1, "BLOCKED 65536"), "expected HELLO")


def test_grow_window_is_a_no_op_for_streams_we_no_longer_receive_on(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.end_stream(sid)
    exchange(client, server)  # FIN: nothing more will come
    assert server.grow_window(sid, WINDOW) == 0
    assert server.grow_window(999, WINDOW) == 0


def test_bye_tells_the_peer_to_close_once_its_streams_are_done(pair):
    client, server = pair
    client.say_bye()
    wire = client.data_to_send()
    assert commands_in(wire) == [(0, "BYE")]
    assert server.receive_data(wire) == [PeerLeaving()]
    assert not server.failed  # closing is the peer's call, after its streams
    fails(server, command(0, "BYE now"), "argument")
    fails(Session(Role.SERVER), command(0, "BYE"), "expected HELLO")
    idle = Session(Role.CLIENT)
    idle.data_to_send()  # HELLO
    idle.say_bye()  # not open yet: nothing to say
    assert idle.data_to_send() == b""


def test_a_second_blocked_in_the_same_batch_is_stale_once_the_first_grew(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    events = server.receive_data(command(sid, f"BLOCKED {WINDOW}") * 2)
    assert events == [PeerBlocked(sid, WINDOW), PeerBlocked(sid, WINDOW)]
    assert server.grow_window(sid, WINDOW) == 2 * WINDOW
    assert server.grow_window(sid, WINDOW) == 0  # already grown past what it was blocked at
    assert server.window_growth == WINDOW


def test_the_data_fast_path_agrees_with_the_state_table():
    """Data frames skip the table lookup in the states where data keeps the state;
    those states must be exactly the table's."""
    from reactor_mux.protocol import stream

    for data_input, states in ((StreamInput.RECV_DATA, stream.RECEIVING_STATES),
                               (StreamInput.SEND_DATA, stream.SENDING_STATES)):  # fmt: skip
        legal = {state for state, event in TRANSITIONS if event is data_input}
        assert legal == set(states)
        assert all(TRANSITIONS[(state, data_input)] is state for state in states)


@pytest.mark.parametrize(
    "first,what",
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "not a reactor-mux server (it sent an SSH banner)"),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            "not a reactor-mux server (it sent an HTTP response)",
        ),
        (bytes.fromhex("15030300020246"), "not a reactor-mux server (it sent a TLS alert"),
        (b"-ERR unknown command\r\n", "not a reactor-mux server (it sent a Redis error)"),
        (
            b"hello there, friend\n",
            "not a reactor-mux server (it sent text: 'hello there, friend')",
        ),
        (
            bytes(range(200, 216)),
            "not a reactor-mux server (it sent bytes c8 c9 ca cb cc cd ce cf)",
        ),
    ],
)
def test_a_server_that_speaks_another_protocol_is_named(first, what):
    client = Session(Role.CLIENT)
    events = client.receive_data(first)
    if len(first) < 9:  # not even a frame header: the peer closes after it
        assert events == []
        assert what in client.receive_eof()
        return
    assert isinstance(events[-1], ChannelFailed) and what in events[-1].reason


# ------------------------------------------------------------- UNMAP (reload)


def test_unmap_ends_a_mapping_and_leaves_its_open_streams_alone(pair):
    client, server = pair
    sid = open_l_stream(client, server)
    client.cancel_mapping(1)
    _, s_events = exchange(client, server)
    assert s_events == [MappingCancelled(1, MappingKind.CONNECT)]
    with pytest.raises(LocalProtocolError):
        client.open_stream(1)  # no new stream on a removed forward
    client.send_data(sid, b"still here")
    server.send_data(sid, b"and here")
    c_events, s_events = exchange(client, server)
    assert [bytes(e.data) for e in s_events if isinstance(e, DataReceived)] == [b"still here"]
    assert [bytes(e.data) for e in c_events if isinstance(e, DataReceived)] == [b"and here"]
    # UNMAP OK came back: the mapping is gone on both sides, a SYN for it is a violation.
    fails(server, command(sid + 2, "SYN 1"), "never declared")


def test_a_syn_crossing_unmap_is_refused_and_unmap_ok_ends_the_mapping(pair):
    client, server = pair
    client.request_bind(3, "127.0.0.1", 0)
    exchange(client, server)
    server.accept_bind(3, "127.0.0.1", 40000)
    exchange(client, server)
    client.cancel_mapping(3)  # UNMAP in flight ...
    sid = server.open_stream(3)  # ... while the server accepts a connection
    wire_to_server, wire_to_client = client.data_to_send(), server.data_to_send()
    assert client.receive_data(wire_to_client) == []  # the SYN: refused, no event
    assert commands_in(client.data_to_send()) == [(sid, "SYN ERROR failed: mapping 3 was removed")]
    s_events = server.receive_data(wire_to_server)
    assert s_events == [MappingCancelled(3, MappingKind.BIND)]
    assert commands_in(server.data_to_send()) == [(3, "UNMAP OK")]
    client.receive_data(command(3, "UNMAP OK"))
    fails(client, command(sid + 2, "SYN 3"), "never declared")


def test_unmap_crossing_a_refusal_or_a_reply_is_harmless(pair):
    client, server = pair
    client.request_bind(4, "127.0.0.1", 2222)
    client.request_connect(5, "127.0.0.1", 80)
    exchange(client, server)
    client.cancel_mapping(4)
    client.cancel_mapping(5)
    server.refuse_bind(4, "address already in use")  # forgotten by the server at once
    server.accept_connect(5)
    c_events, s_events = exchange(client, server)
    assert c_events == []  # answers to cancelled requests are dropped
    assert s_events == [MappingCancelled(5, MappingKind.CONNECT)]
    assert client.ready and server.ready


def test_unmap_from_a_server_or_unmap_ok_unasked_fails_the_channel(pair):
    client, _server = pair
    fails(client, command(1, "UNMAP"), "sent by clients only")
    client2, server2 = (Session(Role.CLIENT, SessionConfig(WINDOW)),
                        Session(Role.SERVER, SessionConfig(WINDOW)))  # fmt: skip
    exchange(client2, server2)
    fails(client2, command(7, "UNMAP OK"), "was not cancelled")


def test_before_the_peer_proves_itself_it_can_send_no_data_and_grow_no_buffer():
    """Found in review (issue 20): a stranger's data header grew its receive buffers to
    128 KiB before the frame was refused.  Until HELLO (or AUTH) only commands are
    legal, so a data header is refused as soon as it is read, and the buffers stay at
    HANDSHAKE_RECEIVE_SIZE."""
    server = Session(Role.SERVER, SessionConfig(secret_book=auth.SharedSecret(b"s" * 20)))
    events = server.receive_data(data(1, b"x" * 100)[:9])  # only the header
    assert isinstance(events[-1], ChannelFailed)
    assert events[-1].reason == "expected HELLO, got a data frame"
    authenticating = Session(Role.SERVER, SessionConfig(secret_book=auth.SharedSecret(b"s" * 20)))
    events = authenticating.receive_data(command(0, "HELLO 1 262144 65536 0123456789abcdef")
                                         + data(1, bytes(65536))[:20])  # fmt: skip
    assert events[-1].reason.startswith("expected AUTH, got a data frame")  # type: ignore[union-attr]
    assert authenticating._decoder.size <= HANDSHAKE_RECEIVE_SIZE
    # Once it has proved itself (here: HELLO, no authentication), a whole maximum data
    # frame is read (and then refused for naming a stream it never opened).
    open_server = Session(Role.SERVER)
    open_server.receive_data(command(0, "HELLO 1 262144 65536 0123456789abcdef"))
    assert open_server.ready and not open_server.failed
    events = open_server.receive_data(data(1, bytes(MAX_DATA_BODY)))
    assert events[-1].reason == "data frame for stream 1, which was never opened"  # type: ignore[union-attr]


# ----------------------------------------------------------------- datagrams


def udp_pair(pair):
    """A client with an accepted -L udp (mapping 1) and -R udp (mapping 2)."""
    client, server = pair
    client.request_udp_connect(1, "127.0.0.1", 53)
    client.request_udp_bind(2, "localhost", 0)
    _, s_events = exchange(client, server)
    assert s_events == [
        MappingRequested(1, MappingKind.UDP_CONNECT, "127.0.0.1", 53),
        MappingRequested(2, MappingKind.UDP_BIND, "localhost", 0),
    ]
    server.accept(1, MappingKind.UDP_CONNECT)
    server.accept_bind(2, "localhost", 5353, MappingKind.UDP_BIND)
    c_events, _ = exchange(client, server)
    assert c_events == [
        MappingAccepted(1, MappingKind.UDP_CONNECT),
        MappingAccepted(2, MappingKind.UDP_BIND, "localhost", 5353),
    ]
    return client, server


def test_datagrams_travel_both_ways_with_their_association(pair):
    client, server = udp_pair(pair)
    big = bytes(range(256)) * 255 + b"x" * 227  # 65,507 bytes: UDP's largest
    assert client.send_datagram(1, 7, b"query") and client.send_datagram(1, 8, big)
    assert server.send_datagram(2, 0xFFFFFFFF, b"")
    c_events, s_events = exchange(client, server)
    assert s_events == [DatagramReceived(1, 7, b"query"), DatagramReceived(1, 8, big)]
    assert c_events == [DatagramReceived(2, 0xFFFFFFFF, b"")]


def test_a_datagram_is_dropped_not_queued_without_bound(pair):
    client, server = udp_pair(pair)
    sent = sum(client.send_datagram(1, 1, b"x" * 60_000) for _ in range(10))
    assert sent == DATAGRAM_QUEUE_LIMIT // 60_004  # the rest were dropped at once
    assert not client.send_datagram(1, 1, b"x" * (MAX_DATA_BODY - 3))  # over the peer's frame
    assert not client.send_datagram(5, 1, b"never declared")
    exchange(client, server)
    assert client.send_datagram(1, 1, b"room again")


def test_no_stream_opens_on_a_udp_mapping_and_no_datagram_on_a_tcp_one(pair):
    client, server = udp_pair(pair)
    client.request_connect(3, "127.0.0.1", 80)
    exchange(client, server)
    fails(server, encode_frame(3, KIND_DATAGRAM, b"\0\0\0\1x"), "never declared with UDP")
    client, server = udp_pair_fresh()
    fails(server, command(1, "SYN 1"), "never declared")


def udp_pair_fresh():
    client, server = (
        Session(Role.CLIENT, SessionConfig(WINDOW)),
        Session(Role.SERVER, SessionConfig(WINDOW)),
    )
    exchange(client, server)
    return udp_pair((client, server))


def test_a_short_datagram_frame_is_a_violation_and_a_crossing_one_is_dropped():
    client, server = udp_pair_fresh()
    fails(server, encode_frame(1, KIND_DATAGRAM, b"\0\0\1"), "shorter than its association")
    client, server = udp_pair_fresh()
    client.cancel_mapping(2)  # -R udp removed while the server sends on it
    server.send_datagram(2, 1, b"crossing")
    c_events, _ = exchange(client, server)
    assert not any(isinstance(event, DatagramReceived) for event in c_events)


def test_a_quiet_channel_gives_its_buffers_back_and_takes_small_ones_again(pair):
    """``release_idle_buffers``: a channel that grew its receive buffers for a burst
    gives them back; the next bytes take the small first buffer again (an idle
    channel's keepalives never grow it); part of a frame waiting in the buffer
    is kept, and completed by the next read."""
    client, server = pair
    sid = open_l_stream(client, server)
    burst = bytes(range(256)) * 64  # 16 KiB in one read: the buffers grow
    grown = server.receive_data(data(sid, burst))
    assert b"".join(bytes(e.data) for e in grown if isinstance(e, DataReceived)) == burst
    assert len(server.receive_buffer()) > INITIAL_RECEIVE
    server.release_idle_buffers()
    assert len(server.receive_buffer()) == INITIAL_RECEIVE
    frame = data(sid, b"x" * 1000)
    assert server.receive_data(frame[:500]) == []
    server.release_idle_buffers()  # a partial frame waits: nothing is given back
    [event] = server.receive_data(frame[500:])
    assert isinstance(event, DataReceived) and bytes(event.data) == b"x" * 1000
    client.send_data(sid, b"reply")
    client.release_idle_buffers()  # unsent output stays
    events, _ = exchange(server, client)
    assert [bytes(e.data) for e in events if isinstance(e, DataReceived)] == [b"reply"]
