"""The SOCKS parser of ``-D``, without sockets: requests, replies, malformed input."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux.io.netutil import connect_failure
from reactor_mux.protocol.failures import Failure, FailureClass, class_of, text_of
from reactor_mux.roles.socks import (
    MAX_HANDSHAKE_BYTES,
    Socks5Reply,
    SocksError,
    SocksHandshake,
    SocksRequest,
    failure_reply,
    success_reply,
)

pytestmark = pytest.mark.codec_independent

GREETING = b"\x05\x01\x00"


def socks5_request(address_type: int, address: bytes, port: int, command: int = 1) -> bytes:
    return bytes((5, command, 0, address_type)) + address + struct.pack(">H", port)


def socks5_domain(name: bytes, port: int) -> bytes:
    return socks5_request(3, bytes((len(name),)) + name, port)


def socks4(address: str, port: int, user: bytes = b"", name: bytes | None = None) -> bytes:
    packed = socket.inet_aton(address)
    tail = user + b"\0" + (name + b"\0" if name is not None else b"")
    return b"\x04\x01" + struct.pack(">H", port) + packed + tail


CASES = [
    (GREETING + socks5_request(1, bytes((10, 1, 2, 3)), 8080), SocksRequest(5, "10.1.2.3", 8080)),
    (GREETING + socks5_request(4, socket.inet_pton(socket.AF_INET6, "::1"), 22),
     SocksRequest(5, "::1", 22)),
    (GREETING + socks5_domain(b"example.org", 443), SocksRequest(5, "example.org", 443)),
    (GREETING + socks5_domain(b"fe80::1", 80), SocksRequest(5, "fe80::1", 80)),
    (socks4("127.0.0.1", 6379, b"alice"), SocksRequest(4, "127.0.0.1", 6379)),
    (socks4("0.0.0.1", 80, b"", b"db.internal"), SocksRequest(4, "db.internal", 80)),
]  # fmt: skip


def feed(chunks: list[bytes]) -> tuple[SocksHandshake, bytes]:
    handshake = SocksHandshake()
    replies = b""
    for chunk in chunks:
        replies += handshake.receive(chunk)
    return handshake, replies


@pytest.mark.parametrize("wire,expected", CASES)
def test_requests_are_read_whole(wire, expected):
    handshake, replies = feed([wire])
    assert handshake.request == expected
    assert replies == (b"\x05\x00" if expected.version == 5 else b"")
    assert handshake.early_data == b""


@given(st.sampled_from(CASES), st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_any_split_of_a_request_reads_the_same(case, cuts):
    wire, expected = case
    chunks, offset = [], 0
    for cut in cuts:
        if offset >= len(wire):
            break
        chunks.append(wire[offset : offset + cut])
        offset += cut
    chunks.append(wire[offset:])
    handshake, replies = feed([chunk for chunk in chunks if chunk])
    assert handshake.request == expected
    assert replies == (b"\x05\x00" if expected.version == 5 else b"")


def test_bytes_after_the_request_are_kept_for_the_stream():
    handshake, _ = feed([GREETING + socks5_domain(b"a.example", 80) + b"GET / HTTP/1.0\r\n"])
    assert handshake.request == SocksRequest(5, "a.example", 80)
    assert handshake.early_data == b"GET / HTTP/1.0\r\n"
    handshake, _ = feed([socks4("0.0.0.9", 80, b"u", b"b.example") + b"hello"])
    assert handshake.early_data == b"hello"


BAD = [
    ("not SOCKS", b"GET / HTTP/1.1\r\n", "not a SOCKS request", b""),
    ("no acceptable method", b"\x05\x01\x02", "no method without authentication", b"\x05\xff"),
    ("BIND command", GREETING + socks5_request(1, b"\x7f\0\0\1", 80, command=2),
     "command 2 is not supported", bytes((5, Socks5Reply.COMMAND_NOT_SUPPORTED, 0, 1)) + bytes(6)),
    ("UDP ASSOCIATE", GREETING + socks5_request(1, b"\x7f\0\0\1", 80, command=3),
     "command 3 is not supported", bytes((5, Socks5Reply.COMMAND_NOT_SUPPORTED, 0, 1)) + bytes(6)),
    ("unknown address type", GREETING + b"\x05\x01\x00\x07rest",
     "address type 7", bytes((5, Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED, 0, 1)) + bytes(6)),
    ("bad version in the request", GREETING + b"\x04\x01\x00\x01\x7f\0\0\1\0\x50",
     "version 4", bytes((5, 1, 0, 1)) + bytes(6)),
    ("port 0", GREETING + socks5_request(1, b"\x7f\0\0\1", 0), "port 0",
     bytes((5, 1, 0, 1)) + bytes(6)),
    ("name with a space", GREETING + socks5_domain(b"a b", 80), "not a valid name",
     bytes((5, 1, 0, 1)) + bytes(6)),
    ("empty name", GREETING + socks5_domain(b"", 80), "not a valid name",
     bytes((5, 1, 0, 1)) + bytes(6)),
    ("SOCKS4 BIND", b"\x04\x02\x00\x50\x7f\0\0\1\0", "command 2", bytes((0, 91)) + bytes(6)),
    ("SOCKS4 endless user id", b"\x04\x01\x00\x50\x7f\0\0\1" + b"u" * 300, "user id",
     bytes((0, 91)) + bytes(6)),
    ("SOCKS4a endless name", b"\x04\x01\x00\x50\0\0\0\1\0" + b"n" * 300, "host name",
     bytes((0, 91)) + bytes(6)),
]  # fmt: skip


@pytest.mark.parametrize("name,wire,match,reply", BAD, ids=[case[0] for case in BAD])
def test_malformed_requests_get_the_right_reply(name, wire, match, reply):
    with pytest.raises(SocksError, match=match) as caught:
        feed([wire])
    # A greeting in the same read is answered first, then the request's failure.
    greeted = wire.startswith(GREETING)
    assert caught.value.reply == (b"\x05\x00" if greeted else b"") + reply
    if greeted:  # the same request after a separate greeting: only the failure
        handshake = SocksHandshake()
        assert handshake.receive(GREETING) == b"\x05\x00"
        with pytest.raises(SocksError, match=match) as caught:
            handshake.receive(wire[len(GREETING) :])
        assert caught.value.reply == reply


def test_a_handshake_that_never_ends_is_cut_at_the_limit():
    handshake = SocksHandshake()
    handshake.receive(b"\x04\x01\x00\x50\x7f\0\0\1")
    with pytest.raises(SocksError, match="longer than"):
        handshake.receive(b"u" * MAX_HANDSHAKE_BYTES)


def test_replies_carry_the_code_of_the_failure_class():
    assert success_reply(5) == bytes((5, 0, 0, 1, 0, 0, 0, 0, 0, 0))
    assert success_reply(4) == bytes((0, 90, 0, 0, 0, 0, 0, 0))
    codes = {failure: failure_reply(5, failure)[1] for failure in FailureClass}
    assert codes == {
        FailureClass.REFUSED: 5,
        FailureClass.UNREACHABLE: 4,
        FailureClass.UNRESOLVED: 4,
        FailureClass.NETWORK: 3,
        FailureClass.TIMEOUT: 6,
        FailureClass.FORBIDDEN: 2,
        FailureClass.LIMIT: 1,
        FailureClass.UNAVAILABLE: 1,
        FailureClass.SHUTDOWN: 1,
        FailureClass.FAILED: 1,
    }
    assert {failure_reply(4, failure) for failure in FailureClass} == {bytes((0, 91)) + bytes(6)}


@pytest.mark.parametrize(
    ("error", "failure"),
    [
        (errno.ECONNREFUSED, FailureClass.REFUSED),
        (errno.EHOSTUNREACH, FailureClass.UNREACHABLE),
        (errno.ENETUNREACH, FailureClass.NETWORK),
        (errno.ETIMEDOUT, FailureClass.TIMEOUT),
        (errno.EMFILE, FailureClass.LIMIT),
        (errno.EACCES, FailureClass.FAILED),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), FailureClass.UNRESOLVED),
    ],
)
def test_connect_failures_are_classed_by_errno_not_words(error, failure):
    """The class a SOCKS reply code is chosen by comes from the errno the connect
    failed with (issue 21: never from the words describe_error makes of it)."""
    assert connect_failure(error).kind is failure


def test_failure_classes_travel_in_the_reason():
    for failure in FailureClass:
        refusal = Failure(failure, "connect to 10.0.0.1:80 failed: connection refused")
        assert class_of(refusal.wire) is failure
        assert text_of(refusal.wire) == "connect to 10.0.0.1:80 failed: connection refused"
    assert class_of("teapot: no such class") is FailureClass.FAILED
    assert text_of("teapot: no such class") == "teapot: no such class"
    # An older peer's reasons carry no class: its own words for the ones that matter.
    assert class_of("too many streams (limit 2)") is FailureClass.LIMIT
    assert class_of("10.0.0.1:22 is not allowed by the server's --allow-connect") is (
        FailureClass.FORBIDDEN
    )
    assert class_of("cannot listen on 127.0.0.1:22: address already in use") is (
        FailureClass.UNAVAILABLE
    )
    assert class_of("connect to 10.0.0.1:80 failed: connection refused") is FailureClass.FAILED
    assert FailureClass.UNAVAILABLE.passing and not FailureClass.FORBIDDEN.passing


@pytest.mark.parametrize("name", [b"a+b.example", b"fe80::1%eth0", b"under score!", b"semi;colon"])
def test_a_name_the_channel_cannot_carry_is_refused_here(name):
    wire = GREETING + socks5_domain(name, 80)
    with pytest.raises(SocksError, match="not a valid name") as caught:
        feed([wire])
    assert caught.value.reply == b"\x05\x00" + bytes((5, 1, 0, 1)) + bytes(6)


def test_early_data_beyond_the_handshake_limit_is_the_streams():
    early = b"x" * (3 * MAX_HANDSHAKE_BYTES)
    handshake, _ = feed([GREETING + socks5_domain(b"a.example", 80) + early])
    assert handshake.request == SocksRequest(5, "a.example", 80)
    assert handshake.early_data == early
