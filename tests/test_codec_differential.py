"""Differential tests: the compiled codec and the pure-Python one, fed the same input,
must return the same frames, records, bytes, errors and consumption.

Inputs are hypothesis-generated frame sequences split into reads at random
points, malformed streams (oversized lengths, bad kind bytes, truncated
headers, garbage), and random operation sequences on the outbound queue.
"""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import feed_decoder, payload

from reactor_mux.codec import _python
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.limits import (
    DATA_FRAME_SIZE,
    MAX_COMMAND_BODY,
    MAX_DATA_BODY,
    OUTPUT_BUDGET,
    OUTPUT_CAPACITY,
    RECEIVE_BUFFER_SIZE,
)

_c = pytest.importorskip("reactor_mux.codec._c", reason="compiled codec not built")

pytestmark = pytest.mark.codec_independent

CORPUS = pathlib.Path(__file__).parent / "fuzz_corpus"

frame = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.just(0), st.binary(max_size=3000)),
    st.tuples(st.integers(1, 6), st.just(0), st.binary(max_size=200)),
    st.tuples(st.integers(0, 2**32 - 1), st.just(1), st.binary(max_size=MAX_COMMAND_BODY)),
)
malformed_header = st.one_of(
    st.builds(lambda n, sid: n.to_bytes(4, "big") + sid.to_bytes(4, "big") + b"\x00",
              st.integers(MAX_DATA_BODY + 1, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda n, sid: n.to_bytes(4, "big") + sid.to_bytes(4, "big") + b"\x01",
              st.integers(MAX_COMMAND_BODY + 1, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda head, kind: head + bytes([kind]), st.binary(min_size=8, max_size=8),
              st.integers(2, 255)),
    st.binary(min_size=1, max_size=8),  # a truncated header
    st.binary(max_size=600),  # garbage
)  # fmt: skip


def wire_of(frames):
    return b"".join(encode_frame(sid, kind, body) for sid, kind, body in frames)


def run_decoder(module, reads):
    """Everything observable from an InboundDecoder, read by read."""
    decoder = module.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, RECEIVE_BUFFER_SIZE)
    return [(n, records, error, decoder.pending)
            for n, records, error in feed_decoder(decoder, reads)]  # fmt: skip


def splits(data, wire):
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=12)))
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frame, max_size=40), tail=st.one_of(st.just(b""), malformed_header),
       data=st.data())  # fmt: skip
def test_decoders_agree(frames, tail, data):
    wire = wire_of(frames) + tail
    reads = splits(data, wire)
    assert run_decoder(_c, reads) == run_decoder(_python, reads)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(frame, max_size=30), tail=malformed_header,
       start=st.integers(0, 50), limit=st.integers(1, 40))  # fmt: skip
def test_scan_frames_agree(frames, tail, start, limit):
    wire = bytes(start) + wire_of(frames) + tail
    start = min(start, len(wire))
    args = (wire, start, len(wire), MAX_DATA_BODY, MAX_COMMAND_BODY, limit)
    assert _c.scan_frames(*args) == _python.scan_frames(*args)


@settings(max_examples=100, deadline=None)
@given(garbage=st.binary(max_size=4000))
def test_garbage_agrees(garbage):
    assert run_decoder(_c, [garbage]) == run_decoder(_python, [garbage])


def program_ops(program: bytes) -> list[tuple]:
    """An OUTBOUND fuzz input as run_queue operations (3 bytes each, as fuzz_codec.c)."""
    ops: list[tuple] = []
    for i in range(0, len(program) - 2, 3):
        op, arg = program[i] % 8, program[i + 1] << 8 | program[i + 2]
        ops.append(
            [
                ("open", arg * 7 + 1, (arg % 64 + 1) * 4096),
                ("write", arg, arg * 2),
                ("finish", arg),
                ("close", arg),
                ("control", bytes([4]) * (arg % 1033 + 1)),
                ("fill",),
                ("sent", arg),
                ("release",) if arg % 2 else ("drop",),
            ][op]
        )
    return ops


def test_corpus_agrees():
    """The fuzzing corpus (tests/fuzz_corpus/, see docs/fuzzing.md) replayed on both:
    DECODE inputs whole, in 7-byte and in 1-byte reads; OUTBOUND inputs as queue programs."""
    files = sorted(CORPUS.glob("*"))
    assert len(files) > 100, "the fuzz corpus is missing"
    for path in files:
        data = path.read_bytes()
        if not data:
            continue
        body = data[1:]
        if data[0] % 2:
            ops = program_ops(body)
            assert run_queue(_c, ops) == run_queue(_python, ops), path.name
            continue
        for step in (len(body) or 1, 7, 1):
            reads = [body[i : i + step] for i in range(0, len(body), step)]
            assert run_decoder(_c, reads) == run_decoder(_python, reads), path.name


def test_a_build_from_other_sources_is_refused(monkeypatch):
    """_c.py checks the compiled constants and struct layouts against _python.py at import."""
    _c._check_build()
    monkeypatch.setitem(_c._SHARED, "RMUX_ERR_BAD_KIND", _python.ERR_BAD_KIND + 1)
    monkeypatch.setitem(_c._LAYOUTS, "rmux_record", ["stream_id", "kind", "offset", "length"])
    with pytest.raises(ImportError, match="RMUX_ERR_BAD_KIND, rmux_record"):
        _c._check_build()


# ----------------------------------------------------------------- outbound

write = st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, 40000))
fill = st.tuples(st.just("fill"))
operation = st.one_of(
    write,
    fill,
    write,
    fill,  # listed twice: the interesting states need several write/fill rounds
    st.tuples(st.just("open"), st.integers(1, 2**32 - 1), st.integers(1, 300000)),
    st.tuples(st.just("write"), st.integers(0, 7), st.integers(0, 70000)),
    st.tuples(st.just("finish"), st.integers(0, 7)),
    st.tuples(st.just("close"), st.integers(0, 7)),
    st.tuples(st.just("control"), st.binary(min_size=1, max_size=MAX_COMMAND_BODY + 9)),
    st.tuples(st.just("fill")),
    st.tuples(st.just("sent"), st.integers(0, 400000)),
    st.tuples(st.just("drop")),
    st.tuples(st.just("release")),
    st.tuples(st.just("limit"), st.integers(0, 7), st.integers(0, 400000)),
    st.tuples(st.just("ack"), st.integers(0, 7), st.integers(0, 300000)),
    st.tuples(st.just("rewind"), st.integers(0, 7), st.integers(0, 300000)),
    st.tuples(st.just("cut")),
)


def run_queue(module, operations, retain=False):
    """Apply operations; record every result and every error, by type."""
    queue = module.OutboundQueue(DATA_FRAME_SIZE, OUTPUT_BUDGET, OUTPUT_CAPACITY, retain=retain)
    slots: list[int] = []
    trace = []
    counter = 0
    for op in operations:
        try:
            if op[0] == "open":
                slots.append(queue.open(op[1], op[2]))
                trace.append(("open", slots[-1]))
            elif op[0] == "write" and slots:
                slot = slots[op[1] % len(slots)]
                views = queue.reserve(slot, op[2])
                trace.append(("reserve", [len(v) for v in views]))
                for view in views:
                    counter += 1
                    view[:] = bytes([counter % 256]) * len(view)
                queue.commit(slot, sum(len(v) for v in views))
            elif op[0] == "finish" and slots:
                queue.finish(slots[op[1] % len(slots)])
            elif op[0] == "close" and slots:
                queue.close(slots[op[1] % len(slots)])
            elif op[0] == "control":
                queue.queue_control(op[1])
            elif op[0] == "fill":
                trace.append(("fill", queue.fill(), bytes(queue.pending())))
            elif op[0] == "sent":
                pending = len(queue.pending())
                queue.sent(min(op[1], pending))
            elif op[0] == "cut":
                queue.drop_output()
            elif op[0] == "drop":
                queue.drop_streams()
                slots.clear()
            elif op[0] == "release":
                trace.append(("released", queue.release_idle()))
            elif op[0] == "limit" and slots:
                queue.set_limit(slots[op[1] % len(slots)], op[2])
            elif op[0] in ("ack", "rewind") and slots:
                slot = slots[op[1] % len(slots)]
                retained = queue.retained(slot)
                trace.append(("retained", retained))
                count = op[2] % (retained + 2)  # mostly within what is retained; one beyond
                (queue.acknowledge if op[0] == "ack" else queue.rewind)(slot, count)
            trace.append(("state", queue.has_output(), queue.control_bytes, queue.buffered_total(),
                          queue.held_total()))  # fmt: skip
        except (ValueError, MemoryError) as exc:
            trace.append(("error", type(exc).__name__))
    while queue.has_output():
        fins = queue.fill()
        pending = bytes(queue.pending())
        trace.append(("drain", fins, pending))
        if not pending:
            break
        queue.sent(len(pending))
    return trace


WRAP_AFTER_DRAIN = [("write", 0, 10000), ("fill",), ("sent", 400000), ("write", 0, 10000)]


@settings(max_examples=500, deadline=None)
@given(st.lists(operation, max_size=80))
@example(WRAP_AFTER_DRAIN)  # an emptied ring restarts at offset 0 in both
def test_outbound_queues_agree(operations):
    operations = [("open", 1, 200000), ("open", 3, 50000), *operations]
    assert run_queue(_c, operations) == run_queue(_python, operations)


@settings(max_examples=500, deadline=None)
@given(st.lists(operation, max_size=80))
@example([*WRAP_AFTER_DRAIN, ("rewind", 0, 5000), ("fill",), ("ack", 0, 15000)])
def test_outbound_queues_that_retain_agree(operations):
    """The same with retention (resume): sent bytes stay until acknowledged and
    can be sent again, with the same bytes and errors in both backends."""
    operations = [("open", 1, 200000), ("open", 3, 50000), *operations]
    assert run_queue(_c, operations, retain=True) == run_queue(_python, operations, retain=True)


replay_step = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 70000)),
    st.tuples(st.just("fill")),
    st.tuples(st.just("send")),
    st.tuples(st.just("cut")),
    st.tuples(st.just("ack"), st.floats(0, 1)),
    st.tuples(st.just("rewind"), st.floats(0, 1)),
)


@pytest.mark.parametrize("module", [_c, _python], ids=["c", "python"])
@settings(max_examples=300, deadline=None)
@given(steps=st.lists(replay_step, max_size=60))
def test_a_rewind_sends_exactly_the_bytes_sent_last(module, steps):
    """Against a model of one stream's bytes: each data frame carries the next
    bytes from where sending stands; a cut loses the FIFO, and a rewind to what
    reached the peer sends exactly the rest again; an acknowledgement frees room
    without changing what is sent.  This crosses ring growth and wrap-around,
    which the retained bytes must survive."""
    limit = 150000
    queue = module.OutboundQueue(DATA_FRAME_SIZE, OUTPUT_BUDGET, OUTPUT_CAPACITY, retain=True)
    slot = queue.open(7, limit)
    written = bytearray()
    # Offsets into `written`: the next byte to put in the FIFO, the end of what
    # left the FIFO (what the peer has), the first byte not acknowledged.
    position = on_wire = acked = 0
    checked = 0  # FIFO bytes already compared with the model
    for step in steps:
        if step[0] == "write":
            for view in queue.reserve(slot, min(step[1], limit - (len(written) - acked))):
                view[:] = payload(len(written) + 1, len(view))
                written += view
                queue.commit(slot, len(view))
        elif step[0] == "fill":
            queue.fill()
            pending = bytes(queue.pending())
            for stream_id, kind, body in split_frames(pending[checked:])[0]:
                assert stream_id == 7 and kind == 0
                assert bytes(body) == written[position : position + len(body)]
                position += len(body)
            checked = len(pending)
        elif step[0] == "send":  # the whole FIFO reaches the peer
            queue.sent(len(queue.pending()))
            on_wire, checked = position, 0
        elif step[0] == "cut":  # the channel broke: the FIFO is lost, the peer has on_wire
            queue.drop_output()
            queue.rewind(slot, position - on_wire)
            position, checked = on_wire, 0
        elif step[0] == "ack":  # only what reached the peer can be acknowledged
            count = int(step[1] * (on_wire - acked))
            queue.acknowledge(slot, count)
            acked += count
        else:  # a cut, and the peer reports it lacks some of what it was sent
            queue.drop_output()
            count = int(step[1] * (on_wire - acked))
            queue.rewind(slot, position - on_wire + count)
            position = on_wire = on_wire - count
            checked = 0
        assert queue.retained(slot) == position - acked
        assert queue.buffered(slot) == len(written) - position


@pytest.mark.parametrize("module", [_c, _python], ids=["c", "python"])
def test_both_decoders_refuse_a_buffer_past_max_buffer(module):
    """The compiled codec's offsets are 32-bit (RMUX_MAX_BUFFER): both backends accept
    a buffer of up to MAX_BUFFER bytes and refuse a larger one, up front."""
    assert _python.MAX_BUFFER == 2**31
    decoder = module.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, _python.MAX_BUFFER)
    assert decoder.size == 0  # buffers come with the first read: nothing large was allocated
    with pytest.raises(ValueError, match="may not exceed"):
        module.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, _python.MAX_BUFFER + 1)
    with pytest.raises(ValueError, match="may not exceed"):
        decoder.limit(MAX_DATA_BODY, _python.MAX_BUFFER + 1)


@pytest.mark.parametrize("module", [_c, _python], ids=["c", "python"])
def test_both_scanners_refuse_a_buffer_past_max_buffer(module):
    """The same bound for scan_frames (found in review: only the C one checked).
    An anonymous mapping costs only the pages touched."""
    import mmap

    with (
        mmap.mmap(-1, _python.MAX_BUFFER + 1) as huge,
        pytest.raises(ValueError, match="larger than"),
    ):
        module.scan_frames(huge, 0, 9, MAX_DATA_BODY, MAX_COMMAND_BODY)
    frames, next_start, error = module.scan_frames(bytes(9), 0, 9, MAX_DATA_BODY,
                                                   MAX_COMMAND_BODY)  # fmt: skip
    assert (len(frames), next_start, error) == (1, 9, 0)


@pytest.mark.parametrize("module", [_c, _python], ids=["c", "python"])
def test_a_decoder_starts_small_grows_as_needed_and_gives_its_buffers_back(module):
    """A handshake costs a small buffer; a frame larger than the buffer, or reads
    that fill all that was offered, grow it (up to its size); ``release`` gives it
    back unless a partial frame is held, and it comes again on demand."""
    decoder = module.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, RECEIVE_BUFFER_SIZE)
    assert decoder.size == 0
    hello = encode_frame(0, 1, b"HELLO 1 262144 65536")
    [(_n, records, error)] = list(feed_decoder(decoder, [hello]))
    assert error == 0 and [body for *_rest, body in records] == [b"HELLO 1 262144 65536"]
    assert decoder.size == _python.INITIAL_RECEIVE

    big = bytes(payload(5, MAX_DATA_BODY))  # one maximum frame, larger than the buffer
    delivered = b"".join(
        body for _n, records, _e in feed_decoder(decoder, [encode_frame(9, 0, big)])
        for *_rest, body in records
    )  # fmt: skip
    assert delivered == big and decoder.pending == 0
    assert _python.INITIAL_RECEIVE < decoder.size <= RECEIVE_BUFFER_SIZE

    bulk = [encode_frame(7, 0, bytes(payload(seed, 30_000))) for seed in range(40)]
    delivered = b"".join(
        body for _n, records, _e in feed_decoder(decoder, [b"".join(bulk)])
        for *_rest, body in records
    )  # fmt: skip
    assert delivered == b"".join(bytes(payload(seed, 30_000)) for seed in range(40))
    assert decoder.size == RECEIVE_BUFFER_SIZE  # full reads doubled it to the limit

    half = encode_frame(3, 0, b"abcdef")[:5]
    list(feed_decoder(decoder, [half]))
    decoder.release()
    assert decoder.size == RECEIVE_BUFFER_SIZE and decoder.pending == 5  # kept: mid-frame
    rest = list(feed_decoder(decoder, [encode_frame(3, 0, b"abcdef")[5:]]))
    assert [body for *_rest, body in rest[-1][1]] == [b"abcdef"]
    decoder.release()
    assert decoder.size == 0
    [(_n, records, error)] = list(feed_decoder(decoder, [hello]))
    assert error == 0 and len(records) == 1 and decoder.size == _python.INITIAL_RECEIVE


# ------------------------------------------------------- gathered in place

gather_operation = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 3), st.integers(0, 70000)),
    st.tuples(st.just("send"), st.integers(0, 400000)),
    st.tuples(st.just("send"), st.integers(0, 400000)),
    st.tuples(st.just("finish"), st.integers(0, 3)),
    st.tuples(st.just("ack"), st.integers(0, 3), st.integers(0, 300000)),
    st.tuples(st.just("rewind"), st.integers(0, 3), st.integers(0, 300000)),
)


def run_sends(operations, *, gathered: bool, retain: bool):
    """The bytes that leave for the socket, and the queue's state after each step,
    when each send takes ``n`` bytes of what rmux_tx_fill copied (the Python
    flush) or of what rmux_tx_gather described in place (the data plane)."""
    ffi, lib = _c.ffi, _c.lib
    queue = _c.OutboundQueue(DATA_FRAME_SIZE, OUTPUT_BUDGET, OUTPUT_CAPACITY, retain=retain)
    slots = [queue.open(1, 200000), queue.open(3, 50000), queue.open(5, 300000)]
    gather = ffi.new("rmux_gather *")
    fins = ffi.new("uint32_t[]", 8)
    wire = bytearray()
    trace = []
    counter = 0
    for op in operations:
        if op[0] == "write":
            slot = slots[op[1] % len(slots)]
            try:
                views = queue.reserve(slot, op[2])
            except ValueError:
                trace.append("refused")
                continue
            for view in views:
                counter += 1
                view[:] = bytes([counter % 256]) * len(view)
            queue.commit(slot, sum(len(v) for v in views))
        elif op[0] == "send" and gathered:
            count = lib.rmux_tx_gather(queue._tx, fins, 8, gather)
            spans = [bytes(ffi.buffer(gather.spans[i].base, gather.spans[i].length))
                     for i in range(gather.nspans)]  # fmt: skip
            described = b"".join(spans)
            assert len(described) == gather.length
            taken = min(op[1], len(described))
            wire += described[:taken]
            lib.rmux_tx_gathered(queue._tx, gather, taken)
            trace.append(("fins", sorted(fins[i] for i in range(count))))
        elif op[0] == "send":
            count = lib.rmux_tx_fill(queue._tx, fins, 8)
            pending = bytes(queue.pending())
            taken = min(op[1], len(pending))
            wire += pending[:taken]
            queue.sent(taken)
            trace.append(("fins", sorted(fins[i] for i in range(count))))
        elif op[0] == "finish":
            try:
                queue.finish(slots[op[1] % len(slots)])
            except ValueError:
                trace.append("refused")
        elif retain:
            slot = slots[op[1] % len(slots)]
            count = op[2] % (queue.retained(slot) + 1)
            (queue.acknowledge if op[0] == "ack" else queue.rewind)(slot, count)
        trace.append((len(wire), queue.buffered_total(), queue.held_total(),
                      lib.rmux_tx_unsent(queue._tx),
                      [queue.retained(slot) for slot in slots] if retain else None))  # fmt: skip
    return bytes(wire), trace


@pytest.mark.parametrize("retain", [False, True], ids=["plain", "retain"])
@settings(max_examples=300, deadline=None)
@given(operations=st.lists(gather_operation, max_size=60))
@example(operations=[("write", 0, 70000), ("send", 70000), ("write", 0, 70000), ("send", 400000)])
def test_a_gathered_send_puts_the_same_bytes_on_the_wire_as_a_filled_one(operations, retain):
    """The data plane sends frames from the rings in place (rmux_tx_gather) and
    copies what the socket refused to the FIFO; whatever each send takes, the
    wire and the queue's state are those of the copying path.  (The example: a
    send that stops inside a frame's data, then the rest.)"""
    assert run_sends(operations, gathered=True, retain=retain) == run_sends(
        operations, gathered=False, retain=retain
    )
