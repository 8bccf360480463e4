"""The PROXY protocol header parser (protocol/proxyheader.py): versions 1 and 2 as
HAProxy writes them, every split point, and the strict refusals."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux.protocol.proxyheader import (
    MAX_V1_LINE,
    MAX_V2_BODY,
    V2_SIGNATURE,
    ProxyHeaderError,
    parse,
    unmapped,
)

pytestmark = pytest.mark.codec_independent


def v2(command: int, family: int, body: bytes, version: int = 2) -> bytes:
    return (
        V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", len(body)) + body
    )


def v2_tcp4(source: str, port: int, tlvs: bytes = b"") -> bytes:
    addresses = ipaddress.IPv4Address(source).packed + ipaddress.IPv4Address("127.0.0.1").packed
    return v2(1, 0x11, addresses + struct.pack("!HH", port, 8080) + tlvs)


def test_version_2_names_the_client_and_its_length():
    header = v2_tcp4("127.0.0.9", 4242)
    parsed = parse(header + b"\x00\x00\x00\x14HELLO")
    assert parsed is not None
    assert (parsed.version, parsed.source, parsed.length) == (2, ("127.0.0.9", 4242), 28)


def test_version_2_over_ipv6_and_a_mapped_address():
    body = ipaddress.IPv6Address("::1").packed * 2 + struct.pack("!HH", 5000, 80)
    assert parse(v2(1, 0x21, body)).source == ("::1", 5000)  # type: ignore[union-attr]
    mapped = ipaddress.IPv6Address("::ffff:127.0.0.7").packed
    body = mapped + ipaddress.IPv6Address("::1").packed + struct.pack("!HH", 5001, 80)
    assert parse(v2(1, 0x21, body)).source == ("127.0.0.7", 5001)  # type: ignore[union-attr]


def test_tlvs_are_skipped_within_the_bound():
    tlvs = bytes([0x05, 0, 4]) + b"abcd"  # PP2_TYPE_UNIQUE_ID
    header = v2_tcp4("127.0.0.5", 1, tlvs)
    parsed = parse(header + b"rest")
    assert parsed is not None and parsed.length == len(header)


def test_local_and_unknown_are_the_balancer_itself():
    local = parse(v2(0, 0x00, b""))
    assert local is not None and local.local and local.source is None and local.length == 16
    # No source named, but not the balancer's health check: counted as any connection.
    unknown = parse(b"PROXY UNKNOWN\r\nrest")
    assert unknown is not None and not unknown.local and unknown.source is None
    assert unknown.length == 15
    assert parse(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n").source is None  # type: ignore[union-attr]
    unspec = parse(v2(1, 0x00, b""))
    assert unspec is not None and not unspec.local and unspec.source is None


def test_a_mapped_address_is_its_ipv4_self():
    """A dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d; a header names them
    as a.b.c.d: the server compares the two unmapped."""
    assert unmapped("::ffff:127.0.0.1") == "127.0.0.1"
    assert unmapped("::1") == "::1" and unmapped("127.0.0.1") == "127.0.0.1"


def test_version_1_tcp4_and_tcp6():
    line = b"PROXY TCP4 127.0.0.3 127.0.0.1 56324 443\r\n"
    parsed = parse(line + b"\x16\x03\x01")
    assert parsed is not None and parsed.source == ("127.0.0.3", 56324)
    assert parsed.length == len(line) and parsed.version == 1
    assert parse(b"PROXY TCP6 ::1 ::1 1 2\r\n").source == ("::1", 1)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"HELLO", "expected a PROXY protocol header"),
        (b"\x16\x03\x01\x02\x00", "expected a PROXY protocol header"),
        (b"PROXY TCP4 127.0.0.1 127.0.0.1 1\r\n", "is not 'PROXY"),
        (b"PROXY UDP4 127.0.0.1 127.0.0.1 1 2\r\n", "is not 'PROXY"),
        (b"PROXY TCP4 ::1 127.0.0.1 1 2\r\n", "are not TCP4"),
        (b"PROXY TCP4 127.0.0.1 127.0.0.1 65536 2\r\n", "is not 0..65535"),
        (b"PROXY TCP4 127.0.0.1 127.0.0.1 01 2\r\n", "is not 0..65535"),
        (b"PROXY TCP4 127.0.0.1 127.0.0.1 +1 2\r\n", "is not 0..65535"),
        (b"PROXY TCP4 127.0.0.1\n", "without CRLF"),
        (b"PROXY " + b"x" * MAX_V1_LINE, "longer than"),
        (b"PROXY TCP4 \xff\r\n", "not ASCII"),
        (v2(1, 0x11, b"\x00" * 12, version=1), "version 1 is not supported"),
        (v2(2, 0x11, b"\x00" * 12), "unknown PROXY protocol command 2"),
        (v2(1, 0x12, b"\x00" * 12), "family 0x12"),
        (v2(1, 0x31, b"\x00" * 216), "family 0x31"),
        (v2(1, 0x11, b"\x00" * 8), "too short"),
        (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_BODY + 1), "at most"),
    ],
)
def test_malformed_headers_are_refused(data, why):
    with pytest.raises(ProxyHeaderError, match=why):
        parse(data)


def test_a_header_too_long_is_refused_before_its_body_arrives():
    """The length word alone refuses it: nothing is buffered toward 64 KiB."""
    with pytest.raises(ProxyHeaderError, match="at most"):
        parse(V2_SIGNATURE + b"\x21\x11\xff\xff")


@given(
    st.sampled_from(
        [
            v2_tcp4("127.0.0.9", 4242),
            v2_tcp4("127.0.0.1", 0, bytes([0x04, 0, 1, 0])),
            v2(0, 0x00, b""),
            b"PROXY TCP4 127.0.0.3 127.0.0.1 56324 443\r\n",
            b"PROXY UNKNOWN\r\n",
        ]
    ),
    st.data(),
)
def test_every_prefix_asks_for_more_and_the_whole_parses(header, data):
    """A balancer's header may arrive a byte at a time: no prefix is refused or
    mistaken for the whole, and the bytes after it are never counted in it."""
    cut = data.draw(st.integers(0, len(header) - 1))
    assert parse(header[:cut]) is None
    trailer = data.draw(st.binary(max_size=40))
    parsed = parse(header + trailer)
    assert parsed is not None and parsed.length == len(header)
