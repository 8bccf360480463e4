"""The frame codec against the golden vectors, and its properties.

Every vector is fed three ways (whole, one byte at a time, and followed by
the start of another frame), as h11 does with its readers.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux import codec
from reactor_mux.protocol.frames import FrameDecoder, encode_frame
from reactor_mux.protocol.limits import MAX_COMMAND_BODY, MAX_DATA_BODY

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "frames.json").read_text())
ERRORS = {
    "data-too-large": codec.ERR_DATA_TOO_LARGE,
    "command-too-large": codec.ERR_COMMAND_TOO_LARGE,
    "bad-kind": codec.ERR_BAD_KIND,
}
TRAILER = bytes.fromhex("0000000100")  # the first 5 bytes of a further frame


def expected_frames(vector):
    return [(sid, kind, bytes.fromhex(body)) for sid, kind, body in vector["frames"]]


def decode_chunks(chunks):
    decoder = FrameDecoder()
    frames, error = [], None
    for chunk in chunks:
        decoded, error = decoder.feed(chunk)
        frames += [(sid, kind, bytes(body)) for sid, kind, body in decoded]
        if error:
            break
    return frames, error, decoder


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
@pytest.mark.parametrize("how", ["whole", "bytewise", "trailing"])
def test_vector(vector, how):
    wire = bytes.fromhex(vector["hex"])
    if how == "whole":
        chunks = [wire]
    elif how == "bytewise":
        chunks = [wire[i : i + 1] for i in range(len(wire))]
    else:
        complete = sum(9 + len(body) for _, _, body in expected_frames(vector))
        if "error" not in vector and complete != len(wire):
            pytest.skip("trailing bytes would complete this incomplete vector")
        chunks = [wire + TRAILER]
    frames, error, decoder = decode_chunks(chunks)
    assert frames == expected_frames(vector)
    if "error" in vector:
        assert error == codec.ERROR_MESSAGES[ERRORS[vector["error"]]]
    else:
        assert error is None
        complete = sum(9 + len(body) for _, _, body in frames)
        leftover = len(wire) - complete + (len(TRAILER) if how == "trailing" else 0)
        assert decoder.pending == leftover


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_scan_frames_reports_offsets_and_consumption(vector):
    wire = bytes.fromhex(vector["hex"])
    frames, next_start, error = codec.scan_frames(
        wire, 0, len(wire), MAX_DATA_BODY, MAX_COMMAND_BODY
    )
    bodies = [(sid, kind, wire[off : off + length]) for sid, kind, off, length in frames]
    assert bodies == expected_frames(vector)
    assert error == ERRORS.get(vector.get("error"), codec.OK)
    consumed = sum(9 + length for _, _, _, length in frames)
    assert next_start == consumed


def test_encode_header_golden():
    assert codec.encode_header(14, 0, 1).hex() == "0000000e0000000001"
    assert codec.encode_header(0, 0xFFFFFFFF, 0).hex() == "00000000ffffffff00"


frame_strategy = st.one_of(
    st.tuples(st.integers(0, 2**32 - 1), st.just(0), st.binary(max_size=2000)),
    st.tuples(st.integers(0, 2**32 - 1), st.just(1), st.binary(max_size=MAX_COMMAND_BODY)),
)


@given(frames=st.lists(frame_strategy, max_size=30), data=st.data())
def test_any_split_decodes_to_the_same_frames(frames, data):
    wire = b"".join(encode_frame(sid, kind, body) for sid, kind, body in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=20)))
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=False)]
    decoded, error, decoder = decode_chunks(chunks)
    assert error is None
    assert decoded == [(sid, kind, bytes(body)) for sid, kind, body in frames]
    assert decoder.pending == 0


@given(st.binary(max_size=300))
def test_garbage_decodes_or_raises_the_protocol_error(garbage):
    """Fuzz invariant: any input decodes, waits for more, or raises ProtocolError."""
    decoder = FrameDecoder()
    frames, error = decoder.feed(garbage)
    for _sid, kind, body in frames:
        assert kind in (0, 1)
        assert len(body) <= (MAX_DATA_BODY if kind == 0 else MAX_COMMAND_BODY)
    assert error is None or error in codec.ERROR_MESSAGES.values()


def test_decoder_survives_many_buffer_cycles():
    """Frames straddling the buffer's end are compacted, not lost."""
    payload = bytes(range(256)) * 200  # 51200 bytes
    wire = encode_frame(9, 0, payload) * 40
    decoder = FrameDecoder()
    out = []
    view = memoryview(wire)
    step = 70001  # not aligned with frames or the buffer
    while view:
        target = decoder.writable()
        n = min(len(target), len(view), step)
        target[:n] = view[:n]
        view = view[n:]
        frames, error = decoder.advance(n)
        assert error is None
        out += [bytes(body) for _, _, body in frames]
    assert out == [payload] * 40


def test_backend_is_reported():
    assert codec.BACKEND == "python"
