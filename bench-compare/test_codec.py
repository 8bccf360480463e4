"""Codec micro-benchmarks: the pure-Python backend against the compiled one, same run.

Run: ``python -m pytest bench/test_codec.py --benchmark-columns=median``.
Each test records frames/s and MB/s in ``extra_info``; compare a ``[c]`` test
with its ``[python]`` twin.  Paths:

* ``scan``: ``scan_frames`` over a whole 256 KiB receive buffer (parse only);
* ``decode``: ``InboundDecoder.advance`` on that buffer: parse, then splice the
  data frames per stream, which is what one ``recv`` costs the channel;
* ``gather``: ``OutboundQueue``: 64 streams each with data in its ring, one
  ``fill`` + ``sent`` round trip to assemble a 256 KiB output batch.
"""

from __future__ import annotations

import random

import pytest

from reactor_mux.codec import _python
from reactor_mux.protocol.frames import encode_frame
from reactor_mux.protocol.limits import (
    DATA_FRAME_SIZE,
    MAX_COMMAND_BODY,
    MAX_DATA_BODY,
    OUTPUT_BUDGET,
    OUTPUT_CAPACITY,
    RECEIVE_BUFFER_SIZE,
)

try:
    from reactor_mux.codec import _c
except ImportError:  # no compiler at install time: only the Python rows run
    _c = None

BACKENDS = {"python": _python, "c": _c}
FILL = RECEIVE_BUFFER_SIZE - 2 * (9 + MAX_DATA_BODY)  # what one recv can bring


def workload(kind: str) -> bytes:
    """Frames filling most of a receive buffer, round-robin over 16 streams
    (``64B-each-new``: every frame on a stream of its own, the worst case)."""
    rng = random.Random(1)
    frames, size, index = [], 0, 0
    while True:
        index += 1
        sid = 2 * index + 1 if kind == "64B-each-new" else 2 * (index % 16) + 1
        if kind.startswith("64B"):
            body = bytes(64)
        elif kind == "16KiB":
            body = bytes(16 * 1024)
        else:  # mix: interactive, bulk and an occasional ACK
            choice = rng.random()
            if choice < 0.1:
                frame = encode_frame(sid, 1, b"ACK 65536")
                body = None
            else:
                body = bytes(rng.choice([40, 200, 1400, 4096, 32768]))
        if body is not None:
            frame = encode_frame(sid, 0, body)
        if size + len(frame) > FILL:
            return b"".join(frames)
        frames.append(frame)
        size += len(frame)


def backend(name: str):  # type: ignore[no-untyped-def]
    module = BACKENDS[name]
    if module is None:
        pytest.skip("compiled codec not built")
    return module


def record(benchmark, frames: int, size: int) -> None:  # type: ignore[no-untyped-def]
    median = benchmark.stats.stats.median
    benchmark.extra_info["frames/s"] = round(frames / median)
    benchmark.extra_info["MB/s"] = round(size / median / 1e6, 1)


@pytest.mark.parametrize("name", ["python", "c"])
@pytest.mark.parametrize("kind", ["64B", "16KiB", "mix"])
def test_scan(benchmark, name, kind):
    module = backend(name)
    wire = bytearray(workload(kind))

    def scan() -> int:
        total, start = 0, 0
        while True:
            frames, start, _error = module.scan_frames(
                wire, start, len(wire), MAX_DATA_BODY, MAX_COMMAND_BODY
            )
            total += len(frames)
            if len(frames) < _python.MAX_FRAMES_PER_SCAN:
                return total

    frames = scan()
    benchmark(scan)
    record(benchmark, frames, len(wire))


@pytest.mark.parametrize("name", ["python", "c"])
@pytest.mark.parametrize("kind", ["64B", "64B-each-new", "16KiB", "mix"])
def test_decode(benchmark, name, kind):
    module = backend(name)
    wire = workload(kind)
    decoder = module.InboundDecoder(MAX_DATA_BODY, MAX_COMMAND_BODY, RECEIVE_BUFFER_SIZE)
    frames = len(_python.scan_frames(wire, 0, len(wire), MAX_DATA_BODY, MAX_COMMAND_BODY, 10**6)[0])

    def decode() -> int:
        target = decoder.writable()
        target[: len(wire)] = wire
        records, error = decoder.advance(len(wire))
        assert not error
        return len(records)

    benchmark(decode)
    record(benchmark, frames, len(wire))


@pytest.mark.parametrize("name", ["python", "c"])
@pytest.mark.parametrize("size", [64, 16 * 1024])
def test_gather(benchmark, name, size):
    """64 streams with ``size`` bytes buffered each: assemble one output batch."""
    module = backend(name)
    queue = module.OutboundQueue(DATA_FRAME_SIZE, OUTPUT_BUDGET, OUTPUT_CAPACITY)
    slots = [queue.open(2 * i + 1, 1 << 20) for i in range(64)]
    payload = bytes(size)

    def gather() -> int:
        for slot in slots:
            views = queue.reserve(slot, size)
            views[0][:] = payload[: len(views[0])]
            if len(views) > 1:
                views[1][:] = payload[len(views[0]) :]
            queue.commit(slot, size)
        moved = 0
        while queue.has_output():
            queue.fill()
            pending = queue.pending()
            moved += len(pending)
            queue.sent(len(pending))
        return moved

    moved = gather()
    benchmark(gather)
    record(benchmark, 64 * (-(-size // DATA_FRAME_SIZE)), moved)
