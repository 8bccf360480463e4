"""The codec (whichever backend is active) against the golden vectors, and its properties.

Every vector is fed three ways (whole, one byte at a time, and followed by the
start of another frame), as h11 does with its readers.  Expected decoder
records are derived from the vector's frames by an independent model of the
splicing rule (``expected_records``).
"""

from __future__ import annotations

import json
import pathlib
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import feed_decoder

from reactor_mux import codec
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.limits import (
    DATA_FRAME_SIZE,
    MAX_COMMAND_BODY,
    MAX_DATA_BODY,
    OUTPUT_BUDGET,
    OUTPUT_CAPACITY,
    RECEIVE_BUFFER_SIZE,
)

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "frames.json").read_text())
ERRORS = {
    "data-too-large": codec.ERR_DATA_TOO_LARGE,
    "command-too-large": codec.ERR_COMMAND_TOO_LARGE,
    "bad-kind": codec.ERR_BAD_KIND,
    "datagram-too-large": codec.ERR_DATAGRAM_TOO_LARGE,
}
TRAILER = bytes.fromhex("0000000100")  # the first 5 bytes of a further frame


def expected_frames(vector):
    return [(sid, kind, bytes.fromhex(body)) for sid, kind, body in vector["frames"]]


def canonical(items):
    """Commands in order, and between them each stream's data concatenated.

    This is what any correct decoder must deliver, however the input was split
    into reads and however a run of data frames was grouped.
    """
    out: list = []
    for kind, sid, body in items:
        if kind == "command":
            out.append(("command", sid, body))
            continue
        if not out or out[-1][0] != "data":
            out.append(("data", {}))
        region = out[-1][1]
        region[sid] = region.get(sid, b"") + body
    return out


def frames_as_items(frames):
    return [("command" if kind else "data", sid, body) for sid, kind, body in frames]


def decode_reads(reads):
    """Feed reads to a fresh InboundDecoder; return (items, error, pending)."""
    decoder = codec.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, RECEIVE_BUFFER_SIZE)
    items, error = [], 0
    for _n, records, step_error in feed_decoder(decoder, reads):
        error = step_error  # the last receive's: an error ends the feed
        items += [("data" if kind == codec.RECORD_DATA else "command", sid, body)
                  for kind, sid, _offset, _length, body in records]  # fmt: skip
    return items, error, decoder.pending


def expected_records(frames):
    """The splicing rule, modelled independently: a run of data frames becomes one
    record per stream (in order of first appearance), commands stay single."""
    records, run = [], {}
    for sid, kind, body in [*frames, (None, 1, None)]:
        if kind == 0:
            run[sid] = run.get(sid, b"") + body
            continue
        records += [("data", s, b) for s, b in run.items()]
        run = {}
        if sid is not None:
            records.append(("command", sid, body))
    return records


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
@pytest.mark.parametrize("how", ["whole", "bytewise", "trailing"])
def test_vector(vector, how):
    wire = bytes.fromhex(vector["hex"])
    frames = expected_frames(vector)
    complete = sum(9 + len(body) for _, _, body in frames)
    if how == "whole":
        reads = [wire]
    elif how == "bytewise":
        reads = [wire[i : i + 1] for i in range(len(wire))]
    else:
        if "error" not in vector and complete != len(wire):
            pytest.skip("trailing bytes would complete this incomplete vector")
        reads = [wire + TRAILER]
    items, error, pending = decode_reads(reads)
    if how == "whole":
        assert items == expected_records(frames)
    assert canonical(items) == canonical(frames_as_items(frames))
    if "error" in vector:
        assert error == ERRORS[vector["error"]]
    else:
        assert error == codec.OK
        assert pending == len(wire) - complete + (len(TRAILER) if how == "trailing" else 0)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_scan_frames_reports_offsets_and_consumption(vector):
    wire = bytes.fromhex(vector["hex"])
    frames, next_start, error = codec.scan_frames(
        wire, 0, len(wire), MAX_DATA_BODY, MAX_COMMAND_BODY
    )
    bodies = [(sid, kind, wire[off : off + length]) for sid, kind, off, length in frames]
    assert bodies == expected_frames(vector)
    assert error == ERRORS.get(vector.get("error"), codec.OK)
    assert next_start == sum(9 + length for _, _, _, length in frames)


def test_scan_frames_stops_at_max_frames_and_resumes():
    wire = encode_frame(1, 0, b"ab") * 10
    frames, next_start, error = codec.scan_frames(wire, 0, len(wire), 100, 100, 4)
    assert (len(frames), next_start, error) == (4, 44, codec.OK)
    rest, end, _ = codec.scan_frames(wire, next_start, len(wire), 100, 100, 100)
    assert len(rest) == 6 and end == len(wire)


def test_many_small_frames_need_more_than_one_scan():
    """More frames than MAX_FRAMES_PER_SCAN in one read are all delivered, in order."""
    count = codec.MAX_FRAMES_PER_SCAN * 2 + 7
    frames = [(i % 5 + 1, 0, bytes([i % 251])) for i in range(count)]
    frames += [(0, 1, b"HELLO 1 65536")]
    wire = b"".join(encode_frame(*f) for f in frames)
    items, error, _ = decode_reads([wire])
    assert error == codec.OK
    assert canonical(items) == canonical(frames_as_items(frames))


def test_encode_header_golden():
    assert codec.encode_header(14, 0, 1).hex() == "0000000e0000000001"
    assert codec.encode_header(0, 0xFFFFFFFF, 0).hex() == "00000000ffffffff00"


frame_strategy = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.just(0), st.binary(max_size=2000)),
    st.tuples(st.integers(1, 8), st.just(0), st.binary(max_size=300)),
    st.tuples(st.integers(0, 2**32 - 1), st.just(1), st.binary(max_size=MAX_COMMAND_BODY)),
)


@settings(deadline=None)
@given(frames=st.lists(frame_strategy, max_size=40), data=st.data())
def test_any_split_decodes_to_the_same_streams(frames, data):
    wire = b"".join(encode_frame(sid, kind, body) for sid, kind, body in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    reads = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    items, error, pending = decode_reads(reads)
    assert error == codec.OK and pending == 0
    assert canonical(items) == canonical(frames_as_items(frames))
    assert split_frames(wire)[0] == frames  # encode -> decode round trip


@given(st.binary(max_size=400))
def test_garbage_decodes_or_reports_the_first_violation(garbage):
    """Fuzz invariant: any input decodes, waits for more, or reports one codec error."""
    items, error, _pending = decode_reads([garbage])
    assert error in (codec.OK, *ERRORS.values())
    for kind, _sid, body in items:
        assert len(body) <= (MAX_COMMAND_BODY if kind == "command" else len(garbage))


def test_decoder_survives_many_buffer_cycles():
    """Frames straddling the buffer's end are compacted, not lost."""
    payload = bytes(range(256)) * 200  # 51200 bytes
    wire = encode_frame(9, 0, payload) * 40
    step = 70001  # aligned with neither frames nor the buffer
    reads = [wire[i : i + step] for i in range(0, len(wire), step)]
    items, error, _ = decode_reads(reads)
    assert error == codec.OK
    assert b"".join(body for _k, _s, body in items) == payload * 40


# ------------------------------------------------------------- outbound


def new_queue():
    return codec.OutboundQueue(DATA_FRAME_SIZE, OUTPUT_BUDGET, OUTPUT_CAPACITY)


def write(queue, slot, data):
    offset = 0
    while offset < len(data):
        written = 0
        for view in queue.reserve(slot, len(data) - offset):
            view[:] = data[offset : offset + len(view)]
            offset += len(view)
            written += len(view)
        queue.commit(slot, written)


def drain(queue, sizes=()):
    sizes = deque(sizes)
    out = bytearray()
    fins = []
    while queue.has_output():
        fins += queue.fill()
        pending = queue.pending()
        if not len(pending):
            break
        n = min(len(pending), sizes.popleft() if sizes else len(pending))
        out += pending[:n]
        queue.sent(n)
    return bytes(out), fins


def test_control_first_then_round_robin_then_fin():
    queue = new_queue()
    bulk, small = queue.open(1, 1 << 20), queue.open(3, 1 << 20)
    write(queue, bulk, b"B" * (3 * DATA_FRAME_SIZE))
    write(queue, small, b"hello")
    queue.finish(small)
    queue.queue_control(encode_frame(0, 1, b"HELLO 1 65536"))
    wire, fins = drain(queue)
    frames = split_frames(wire)[0]
    assert frames[0] == (0, 1, b"HELLO 1 65536")
    assert frames[1] == (1, 0, b"B" * DATA_FRAME_SIZE)
    assert frames[2] == (3, 0, b"hello")
    assert frames[3] == (3, 1, b"FIN")
    assert frames[4:] == [(1, 0, b"B" * DATA_FRAME_SIZE)] * 2
    assert fins == [3]


def test_closing_a_stream_drops_its_data_and_fin():
    queue = new_queue()
    slot = queue.open(5, 1000)
    write(queue, slot, b"x" * 100)
    queue.finish(slot)
    queue.close(slot)
    assert not queue.has_output()
    assert drain(queue) == (b"", [])


def test_ring_limit_is_enforced():
    queue = new_queue()
    slot = queue.open(1, 100)
    write(queue, slot, b"a" * 100)
    with pytest.raises(ValueError):
        queue.reserve(slot, 1)


@settings(max_examples=80, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=80000), min_size=1, max_size=5),
    sends=st.lists(st.integers(1, 70000), max_size=100),
    chunks=st.integers(1, 50000),
)
def test_any_partial_sends_deliver_every_stream_intact(payloads, sends, chunks):
    queue = new_queue()
    slots = [queue.open(2 * i + 1, 1 << 20) for i in range(len(payloads))]
    out = bytearray()
    sizes = deque(sends)
    # Interleave writing (in chunks) with filling and partial sends.
    offsets = [0] * len(payloads)
    finished = [False] * len(payloads)
    while not all(finished):
        for i, payload in enumerate(payloads):
            if finished[i]:
                continue
            piece = payload[offsets[i] : offsets[i] + chunks]
            write(queue, slots[i], piece)
            offsets[i] += len(piece)
            if offsets[i] == len(payload):
                queue.finish(slots[i])
                finished[i] = True
        queue.fill()
        pending = queue.pending()
        n = min(len(pending), sizes.popleft() if sizes else len(pending))
        out += pending[:n]
        queue.sent(n)
    rest, _ = drain(queue)
    frames, consumed, error = split_frames(bytes(out) + rest)
    assert error is None and consumed == len(out) + len(rest)
    for i, payload in enumerate(payloads):
        sid = 2 * i + 1
        mine = [(kind, body) for s, kind, body in frames if s == sid]
        assert b"".join(body for kind, body in mine if kind == 0) == payload
        assert mine[-1] == (1, b"FIN") and [k for k, _ in mine].count(1) == 1
        assert all(len(body) <= DATA_FRAME_SIZE for kind, body in mine if kind == 0)


def test_backend_is_reported():
    assert codec.BACKEND in ("c", "python")


def test_send_rings_grow_only_when_reads_fill_them():
    """An idle stream keeps a small ring; a busy one doubles toward its limit."""
    queue = new_queue()
    slot = queue.open(1, 256 * 1024)
    offered = [sum(len(v) for v in queue.reserve(slot, 128 * 1024))]
    queue.commit(slot, 10)  # a small read: no growth
    drain(queue)
    offered.append(sum(len(v) for v in queue.reserve(slot, 128 * 1024)))
    for _ in range(4):  # reads that fill what was offered
        views = queue.reserve(slot, 128 * 1024)
        size = sum(len(v) for v in views)
        offered.append(size)
        queue.commit(slot, size)
        drain(queue)
    assert offered == [16384, 16384, 16384, 32768, 65536, 128 * 1024]


def test_send_rings_keep_their_storage_until_it_is_released():
    """held_total counts ring storage (what --max-buffer bounds): an emptied ring
    keeps it for the next read (no allocation per burst) until release_idle."""
    queue = new_queue()
    busy, idle, fresh = (queue.open(sid, 1 << 20) for sid in (1, 3, 5))
    write(queue, busy, b"x" * 300_000)
    write(queue, idle, b"y" * 10)
    assert queue.held_total() >= 300_000 + 10
    drain(queue)
    assert queue.buffered_total() == 0
    held = queue.held_total()
    assert held >= 300_000 + 16 * 1024  # emptied, but still held
    assert sum(len(v) for v in queue.reserve(busy, 1 << 20)) > 16 * 1024
    write(queue, idle, b"z" * 5)  # not empty: keeps its storage
    assert queue.release_idle() == held - 16 * 1024
    assert queue.held_total() == 16 * 1024
    assert queue.release_idle() == 0
    # A released ring starts small again, and still carries data intact.
    assert sum(len(v) for v in queue.reserve(busy, 1 << 20)) == 16 * 1024
    write(queue, busy, b"w" * 40_000)
    out = drain(queue)[0]
    frames, _consumed, error = split_frames(out)
    assert error is None
    assert b"".join(body for sid, _kind, body in frames if sid == 1) == b"w" * 40_000
    assert b"".join(body for sid, _kind, body in frames if sid == 3) == b"z" * 5
    queue.close(busy)
    queue.close(idle)
    queue.close(fresh)
    assert queue.held_total() == 0
