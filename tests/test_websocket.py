"""WebSocketTransport against a transport below and a channel above that are
stand-ins (no network: the order of bytes and of the end is what is tested)."""

from __future__ import annotations

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Request

from reactor_mux.io.reactor import Reactor
from reactor_mux.io.websocket import WebSocketTransport

pytestmark = pytest.mark.codec_independent


class Below:
    """The transport below: takes everything sent, remembers the interest asked."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.interest = (False, False)

    def attach(self, protocol: object) -> None:
        self.protocol = protocol

    def handover(self, protocol: object) -> None:
        self.protocol = protocol

    def set_interest(self, read: bool, write: bool) -> None:
        self.interest = (read, write)

    def send(self, views: list[memoryview]) -> int:
        data = b"".join(views)
        self.sent += data
        return len(data)

    def trust(self) -> None:
        pass

    def plane_socket(self) -> tuple[int, int]:
        return -1, 0

    def plane_failure(self, code: int) -> str:
        return str(code)

    def close(self) -> None:
        pass


class Channel:
    """The channel above: a small buffer, and it stops reading after the first read
    (a slow local socket reached its cap)."""

    def __init__(self) -> None:
        self.buffer = bytearray(4)
        self.received = bytearray()
        self.ends = 0
        self.transport: WebSocketTransport | None = None

    def get_buffer(self) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, count: int) -> None:
        self.received += self.buffer[:count]
        assert self.transport is not None
        self.transport.set_interest(False, False)

    def eof_received(self) -> None:
        self.ends += 1

    def transport_failed(self, reason: str, **_: object) -> None:
        raise AssertionError(reason)

    def write_ready(self) -> None:
        pass

    def close_after_bug(self) -> None:
        raise AssertionError("a callback raised")


def tick(reactor: Reactor) -> None:
    """Run what the reactor has for the end of this tick (its call_soon queue, as
    queued now: what those callbacks queue runs at the next tick)."""
    for _ in range(len(reactor._soon)):
        callback, _owner = reactor._soon.popleft()
        callback()


def feed(transport: WebSocketTransport, data: bytes) -> None:
    buffer = transport.get_buffer()
    buffer[: len(data)] = data
    transport.buffer_updated(len(data))


def test_the_end_waits_for_the_bytes_before_it_without_spinning():
    """The peer's last message and its close frame in one read, while the channel
    pauses: the end is told once, after every byte, and nothing runs meanwhile."""
    reactor = Reactor()
    below, channel = Below(), Channel()
    transport = WebSocketTransport(reactor, below, client=True, host="h", path="/p")  # type: ignore[arg-type]
    channel.transport = transport
    transport.attach(channel)  # type: ignore[arg-type]
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(bytes(below.sent))
    assert any(isinstance(event, Request) for event in server.events())
    feed(transport, server.send(AcceptConnection()))
    transport.set_interest(True, False)
    feed(transport, server.send(BytesMessage(data=b"abcdefghij")) +
         server.send(CloseConnection(code=1000)))  # fmt: skip
    assert bytes(channel.received) == b"abcd" and channel.ends == 0
    assert below.interest[0] is False  # nothing more read after the end
    for _ in range(3):  # while the channel is paused: nothing left to run
        tick(reactor)
    assert not reactor._soon  # no callback rescheduling itself (it spun here once)
    transport.set_interest(True, False)
    for _ in range(3):
        tick(reactor)
        transport.set_interest(True, False)
    assert bytes(channel.received) == b"abcdefghij" and channel.ends == 1
    feed(transport, b"\x82\x01z")  # bytes after the close: dropped, no traceback
    assert channel.ends == 1
    reactor.close()
