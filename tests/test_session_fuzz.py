"""Fuzzing the server's channel handling without sockets.

A valid client conversation is mutated (bit flips, inserted and deleted
bytes, duplicated, dropped and reordered frames, frames from nowhere) and fed
to a server Session in random reads, while a driver answers its events the
way the channel does: a SYN at once (refused while the peer is leaving, or
for a rule; accepted for a local service) or later (a connect finishing),
without looking at the stream's state first, so a SYN whose stream the same
read also resets, or whose read also fails the channel, is answered anyway.
The conversation goes on after BYE.  The only outcomes allowed: everything
handled, or one ChannelFailed after which the session sends nothing but its
ERROR frame.  Any other exception escaping the session is a bug.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor_mux.protocol.errors import LocalProtocolError
from reactor_mux.protocol.events import (
    ChannelFailed,
    DataReceived,
    MappingKind,
    MappingRequested,
    PeerLeaving,
    StreamEnded,
    StreamRequested,
)
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.streamstate import StreamState
from reactor_mux.protocol.verbs import Role


def opening() -> list[bytes]:
    """A well-behaved client's first flight: handshake, two mappings, two SYNs, a PING."""
    return [
        encode_frame(0, 1, b"HELLO 1 262144 65536 0123456789abcdef"),
        encode_frame(1, 1, b"CONNECT 127.0.0.1:80"),
        encode_frame(2, 1, b"BIND 127.0.0.1:0"),
        encode_frame(1, 1, b"SYN 1"),
        encode_frame(3, 1, b"SYN 1"),
        encode_frame(0, 1, b"PING 5"),
    ]


def using() -> list[bytes]:
    """What it sends once its streams are open: data, FIN, RST, another SYN, a PING."""
    frames = [encode_frame(1, 0, bytes([i]) * 700) for i in range(4)]
    frames += [encode_frame(3, 0, b"x" * 9000), encode_frame(1, 1, b"FIN")]
    frames += [encode_frame(3, 1, b"RST bye"), encode_frame(5, 1, b"SYN 1")]
    frames += [encode_frame(0, 1, b"PING 6")]
    return frames


def leaving() -> list[bytes]:
    """It says BYE, then (a misbehaving peer) opens and resets streams anyway."""
    return [
        encode_frame(0, 1, b"BYE"),
        encode_frame(7, 1, b"SYN 1"),
        encode_frame(7, 1, b"RST changed my mind"),
        encode_frame(9, 1, b"SYN 1"),
        encode_frame(5, 1, b"RST gone"),
        encode_frame(0, 1, b"PING 7"),
    ]


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=20)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 20)),
    st.tuples(st.just("duplicate"), st.integers(0, 100)),
    st.tuples(st.just("drop"), st.integers(0, 100)),
    st.tuples(st.just("swap"), st.integers(0, 100), st.integers(0, 100)),
    st.tuples(st.just("foreign"), st.integers(0, 100), st.integers(0, 2**32 - 1),
              st.integers(0, 1), st.binary(max_size=40)),
)  # fmt: skip


def mutate(frames: list[bytes], mutations: list[tuple]) -> bytes:
    frames = list(frames)
    for m in mutations:
        if not frames:
            break
        if m[0] == "duplicate":
            i = m[1] % len(frames)
            frames.insert(i, frames[i])
        elif m[0] == "drop":
            frames.pop(m[1] % len(frames))
        elif m[0] == "swap":
            i, j = m[1] % len(frames), m[2] % len(frames)
            frames[i], frames[j] = frames[j], frames[i]
        elif m[0] == "foreign":
            frames.insert(m[1] % len(frames), encode_frame(m[2], m[3], m[4]))
    wire = bytearray(b"".join(frames))
    for m in mutations:
        if not wire:
            break
        if m[0] == "flip":
            wire[m[1] % len(wire)] ^= 1 << m[2]
        elif m[0] == "insert":
            at = m[1] % len(wire)
            wire[at:at] = m[2]
        elif m[0] == "delete":
            at = m[1] % len(wire)
            del wire[at : at + m[2]]
    return bytes(wire)


ANSWERS = ("later", "accept now", "refuse now")
"""How the driver answers a SYN: when a connect finishes (a later read, and only
if the stream still waits, as PeerConnects does), or at once, as the channel
does for a local service (accept), a refused target or a leaving peer (refuse)."""


def drive(
    phases: list[bytes], cuts: list[int], answers: list[int] | None = None
) -> ChannelFailed | None:
    """Feed each phase in reads cut at ``cuts``, answering events the way the channel
    does (``answers`` picks from ANSWERS for each SYN in turn); mappings are answered
    at once."""
    server = Session(Role.SERVER)
    failed = None
    leaving_seen = False
    choices = iter(answers or [])
    later: list[tuple[str, int]] = []
    for wire in phases:
        pieces = sorted(c % (len(wire) + 1) for c in cuts)
        for a, b in zip([0, *pieces], [*pieces, len(wire)], strict=True):
            for event in server.receive_data(wire[a:b]):
                assert failed is None, "events after the channel failed"
                if isinstance(event, ChannelFailed):
                    failed = event
                elif isinstance(event, MappingRequested):
                    if event.kind is MappingKind.CONNECT:
                        server.accept_connect(event.mapping)
                    else:
                        server.accept_bind(event.mapping, "127.0.0.1", 40000)
                elif isinstance(event, PeerLeaving):
                    leaving_seen = True
                elif isinstance(event, StreamRequested):
                    answer = "refuse now" if leaving_seen else ANSWERS[next(choices, 0) % 3]
                    if answer == "accept now":
                        server.accept_stream(event.stream_id)  # False if reset meanwhile
                    elif answer == "refuse now":
                        server.refuse_stream(event.stream_id, "refused")
                    else:
                        later.append(("accept", event.stream_id))
                elif isinstance(event, DataReceived):
                    server.inbound_delivered(event.stream_id, len(event.data))
                elif isinstance(event, StreamEnded):
                    later.append(("end", event.stream_id))
            if failed is None:
                for action, sid in later:
                    state = server.stream_state(sid)
                    if action == "accept" and state is StreamState.SYN_RECEIVED:
                        server.accept_stream(sid)
                    elif action == "end" and state is StreamState.HALF_CLOSED_REMOTE:
                        server.end_stream(sid)
                later.clear()
            out = server.data_to_send()
            frames, consumed, error = split_frames(out)
            assert error is None and consumed == len(out), "the session sent a malformed frame"
            if failed is not None:
                assert frames[-1][2].startswith(b"ERROR "), frames[-1]
                assert server.data_to_send() == b""
                return failed
    return None


@settings(max_examples=400, deadline=None)
@given(
    st.lists(mutation, max_size=4),
    st.lists(mutation, max_size=4),
    st.lists(mutation, max_size=3),
    st.lists(st.integers(0, 10**6), max_size=6),
    st.lists(st.integers(0, 2), max_size=8),
)
def test_mutated_conversations_are_handled_or_fail_the_channel(first, second, third, cuts,
                                                               answers):  # fmt: skip
    phases = [mutate(opening(), first), mutate(using(), second), mutate(leaving(), third)]
    drive(phases, cuts, answers)


def test_the_unmutated_conversation_is_handled():
    phases = [mutate(opening(), []), mutate(using(), []), mutate(leaving(), [])]
    assert drive(phases, []) is None
    assert drive(phases, [3, 77, 500, 9000]) is None
    for answer in range(3):  # every way of answering the SYNs, all in one read each
        assert drive(phases, [], [answer] * 8) is None


def test_a_syn_reset_in_the_same_read_after_bye_is_answered_without_error():
    """Found in review (issue 20): BYE, then SYN and RST on a new stream in one write
    made the server answer ``ERROR internal error``; the SYN's answer finds the
    stream already gone, and nothing is sent for it."""
    server = Session(Role.SERVER)
    server.receive_data(opening()[0] + opening()[1])
    server.accept_connect(1)
    server.data_to_send()
    events = server.receive_data(
        encode_frame(0, 1, b"BYE") + encode_frame(7, 1, b"SYN 1") + encode_frame(7, 1, b"RST no")
    )
    assert [type(event).__name__ for event in events] == [
        "PeerLeaving", "StreamRequested", "StreamReset"]  # fmt: skip
    assert server.refuse_stream(7, "shutting down") is False
    assert server.accept_stream(7) is False
    assert server.data_to_send() == b""
    assert not server.failed


def test_answering_a_stream_that_was_never_reset_is_still_a_bug():
    """``accept_stream`` forgives only a stream the peer reset in the same read: a
    driver that answers twice, or names a stream that never was, still hears of it."""
    server = Session(Role.SERVER)
    server.receive_data(opening()[0] + opening()[1] + encode_frame(1, 1, b"SYN 1"))
    server.accept_connect(1)
    assert server.accept_stream(1) is True
    server.receive_data(encode_frame(0, 1, b"PING 1"))
    with pytest.raises(LocalProtocolError):
        server.refuse_stream(1, "answered twice")  # open: SYN ERROR is out of turn
    with pytest.raises(LocalProtocolError):
        server.accept_stream(99)
