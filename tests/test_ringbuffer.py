"""The ring buffer against a plain bytes model."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux.tunnel.ringbuffer import RingBuffer

pytestmark = pytest.mark.codec_independent

operations = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.binary(max_size=5000)),
        st.tuples(st.just("consume"), st.integers(0, 6000)),
        st.tuples(st.just("peek"), st.integers(0, 6000)),
    ),
    max_size=80,
)


@given(operations, st.integers(1, 70000))
def test_matches_a_bytes_model(ops, limit):
    ring, model = RingBuffer(limit), bytearray()
    for op, arg in ops:
        if op == "write":
            data = arg[: ring.limit - len(ring)]
            ring.write(data)
            model += data
        elif op == "consume":
            count = min(arg, len(model))
            ring.consume(count)
            del model[:count]
        else:
            offset = min(arg, len(model))
            assert b"".join(ring.peek(offset, len(model) - offset)) == model[offset:]
        assert len(ring) == len(model)
        assert ring.capacity <= limit
    assert contents(ring) == bytes(model)


def contents(ring: RingBuffer) -> bytes:
    return b"".join(ring.peek(0, len(ring)))


def test_overflow_is_refused():
    ring = RingBuffer(10)
    ring.write(b"x" * 10)
    with pytest.raises(ValueError):
        ring.write(b"y")
    assert contents(ring) == b"x" * 10


def test_storage_is_lazy_and_bounded():
    ring = RingBuffer(1 << 20)
    assert ring.capacity == 0
    ring.write(b"a")
    assert 0 < ring.capacity < (1 << 20)
    ring.write(b"b" * ((1 << 20) - 1))
    assert ring.capacity == 1 << 20


def test_views_survive_growth():
    ring = RingBuffer(1 << 20)
    ring.write(b"abc")
    held = ring.peek(0, 3)
    ring.write(b"z" * 100000)  # forces reallocation
    assert b"".join(held) == b"abc"


def test_a_ring_keeps_its_storage_until_released_empty():
    """Emptying keeps the storage for reuse; release() frees it, but only when empty."""
    ring = RingBuffer(1 << 20)
    ring.write(b"z" * 200_000)
    assert ring.capacity >= 200_000
    ring.consume(199_999)
    assert ring.release() == 0  # one byte left: kept
    ring.consume(1)
    capacity = ring.capacity
    assert capacity >= 200_000
    assert ring.release() == capacity
    assert ring.capacity == 0 and ring.release() == 0
    ring.write(b"after")
    assert contents(ring) == b"after"
