"""The -L/-R spec parser and the option converters, as plain functions."""

from __future__ import annotations

import argparse

import pytest

from reactor_mux.cli import SizeType, build_parser, count_type, format_size, seconds
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.roles.backoff import DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN
from reactor_mux.roles.specs import (
    ForwardKind,
    SpecError,
    parse_dynamic,
    parse_endpoint,
    parse_forward,
)
from reactor_mux.tunnel.settings import DEFAULT_MAX_BUFFER, ChannelSettings

L, R = ForwardKind.LOCAL, ForwardKind.REMOTE

pytestmark = pytest.mark.codec_independent


@pytest.mark.parametrize(
    ("kind", "text", "bind", "target"),
    [
        (L, "8080:db:5432", ("localhost", 8080), ("db", 5432)),
        (L, "0:db:5432", ("localhost", 0), ("db", 5432)),
        (R, "*:2222:127.0.0.1:22", ("::", 2222), ("127.0.0.1", 22)),
        (R, ":2222:127.0.0.1:22", ("::", 2222), ("127.0.0.1", 22)),
        (L, "localhost:80:web:80", ("localhost", 80), ("web", 80)),
        (L, "10.0.0.1:80:web:80", ("10.0.0.1", 80), ("web", 80)),
        (L, "[::1]:8080:[2001:db8::5]:80", ("::1", 8080), ("2001:db8::5", 80)),
        (L, "8080:intranet.example.com:443", ("localhost", 8080), ("intranet.example.com", 443)),
    ],
)
def test_forward_specs_mean_what_they_mean_to_ssh(kind, text, bind, target):
    spec = parse_forward(kind, text)
    assert (spec.kind, (spec.bind_host, spec.bind_port)) == (kind, bind)
    assert (spec.target_host, spec.target_port) == target
    assert spec.flag == f"-{kind.value} {text}"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("8080", "wrong number of"),
        ("a:b:c:d:e", "wrong number of"),
        ("x:8080:h:80", "bind address 'x' must be an IP address"),
        ("8080:h:0", "host port 0 is outside 1..65535"),
        ("8080:h:65536", "host port 65536 is outside 1..65535"),
        ("70000:h:80", "port 70000 is outside 0..65535"),
        ("80a:h:80", "port is not a decimal number: '80a'"),
        ("8080:bad host:80", "is not a valid host name"),
        ("[::1:8080:h:80", "unbalanced '['"),
        ("8080:[nothex]:80", "is not an IPv6 address"),
        ("8080:h]:80", "unbalanced ']'"),
    ],
)
def test_bad_forward_specs_say_what_is_wrong(text, why):
    with pytest.raises(SpecError) as raised:
        parse_forward(L, text)
    message = str(raised.value)
    assert message.startswith(f"bad -L {text!r}: ") and why in message
    assert message.endswith("expected [BIND:]PORT:HOST:HOSTPORT")


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("1080", ("localhost", 1080)),
        ("0", ("localhost", 0)),
        ("*:1080", ("::", 1080)),
        ("[::1]:1080", ("::1", 1080)),
        ("localhost:1080", ("localhost", 1080)),
    ],
)
def test_dynamic_specs_have_a_listening_address_and_no_target(text, bind):
    for spec in (parse_dynamic(text), parse_forward(R, text)):
        assert (spec.bind_host, spec.bind_port) == bind
        assert spec.dynamic and spec.target_port == 0
    assert parse_dynamic(text).kind is ForwardKind.DYNAMIC
    assert not parse_forward(L, "1:h:2").dynamic


@pytest.mark.parametrize(
    ("text", "why"),
    [("a:b:c:d:e", "wrong number of"), ("x:1080", "bind address 'x'"), ("99999", "outside"),
     ("", "not a decimal"), ("1080:host:80", "wrong number of")],
)  # fmt: skip
def test_bad_dynamic_specs_say_what_is_wrong(text, why):
    with pytest.raises(SpecError) as raised:
        parse_dynamic(text)
    message = str(raised.value)
    assert message.startswith(f"bad -D {text!r}: ") and why in message
    assert message.endswith("expected [BIND:]PORT")


@pytest.mark.parametrize(
    ("kind", "text", "bind", "bind_path", "target", "target_path"),
    [
        (L, "/tmp/l.sock:db:5432", ("", 0), "/tmp/l.sock", ("db", 5432), None),
        (L, "8080:/run/r.sock", ("localhost", 8080), None, ("", 0), "/run/r.sock"),
        (L, "*:8080:/run/r.sock", ("::", 8080), None, ("", 0), "/run/r.sock"),
        (L, "/tmp/l.sock:/run/r.sock", ("", 0), "/tmp/l.sock", ("", 0), "/run/r.sock"),
        (R, "/run/r.sock:127.0.0.1:80", ("", 0), "/run/r.sock", ("127.0.0.1", 80), None),
        (R, "0:/tmp/l.sock", ("localhost", 0), None, ("", 0), "/tmp/l.sock"),
        (R, "/run/r.sock:/tmp/l.sock", ("", 0), "/run/r.sock", ("", 0), "/tmp/l.sock"),
    ],
)
def test_unix_socket_forms_are_openssh_s(kind, text, bind, bind_path, target, target_path):
    """Either end a path: the listening end of ``-L`` and the target of ``-R`` are
    this side's, the other two the server's."""
    spec = parse_forward(kind, text)
    assert ((spec.bind_host, spec.bind_port), spec.bind_path) == (bind, bind_path)
    assert ((spec.target_host, spec.target_port), spec.target_path) == (target, target_path)
    assert not spec.dynamic
    assert spec.bind == (bind_path or spec.bind)


@pytest.mark.parametrize(
    ("kind", "text", "why"),
    [
        (L, "/tmp/l.sock", "after /PATH comes HOST:HOSTPORT or another /PATH"),
        (L, "/tmp/l.sock:db", "after /PATH comes HOST:HOSTPORT or another /PATH"),
        (R, "/run/r.sock:h:80:90", "after /PATH comes HOST:HOSTPORT or another /PATH"),
        (L, "8080:/a.sock:/b.sock", "bind address '8080' must be an IP address"),
        (L, "1:2:3:/x.sock", "a socket path is a whole field at either end"),
        (L, "/" + "x" * 107 + ":h:80", "at most 107 bytes"),
    ],
)
def test_bad_unix_socket_forms_say_what_is_wrong(kind, text, why):
    with pytest.raises(SpecError, match="either end may be a Unix socket") as info:
        parse_forward(kind, text)
    assert why in str(info.value)


def test_a_short_l_is_still_an_error_but_a_short_r_is_reverse_dynamic():
    with pytest.raises(SpecError, match=r"expected \[BIND:\]PORT:HOST:HOSTPORT$"):
        parse_forward(L, "8080")
    assert parse_forward(R, "8080").dynamic
    with pytest.raises(SpecError, match=r"or \[BIND:\]PORT$"):
        parse_forward(R, "a:b:c:d:e")


def test_endpoints():
    assert parse_endpoint("0.0.0.0:7000", listening=True) == ("0.0.0.0", 7000)
    assert parse_endpoint("*:0", listening=True) == ("::", 0)  # dual-stack
    assert parse_endpoint("localhost:7000", listening=True) == ("localhost", 7000)
    assert parse_endpoint("server.example:7000", listening=False) == ("server.example", 7000)
    assert parse_endpoint("[::1]:7000", listening=False) == ("::1", 7000)
    for text, listening in [("h:0", False), ("name:1", True), ("7000", False), ("h:x", False)]:
        with pytest.raises(SpecError):
            parse_endpoint(text, listening=listening)


@pytest.mark.parametrize(
    ("text", "value"),
    [("262144", 262144), ("256K", 262144), ("256k", 262144), ("1M", 1 << 20), ("1MiB", 1 << 20)],
)
def test_sizes(text, value):
    assert SizeType("window", 1024, 16 << 20)(text) == value


@pytest.mark.parametrize("text", ["12", "lots", "17M", "-1K", "1.5M", ""])
def test_bad_sizes(text):
    with pytest.raises(argparse.ArgumentTypeError):
        SizeType("window", 1024, 16 << 20)(text)


def test_counts_and_seconds():
    assert count_type("n", 1, 10)("7") == 7
    for text in ["0", "11", "x", "-1", "1e3"]:
        with pytest.raises(argparse.ArgumentTypeError):
            count_type("n", 1, 10)(text)
    assert seconds("0.25") == 0.25
    for text in ["0", "-1", "nan", "abc", "86401"]:
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(text)


def test_format_size_spells_what_size_type_reads():
    for value in [1024, 65536, 262144, 16 << 20, 1 << 30, 1000, 1536]:
        assert SizeType("x", 1, 1 << 40)(format_size(value)) == value
    assert format_size(262144) == "256K" and format_size(16 << 20) == "16M"


def test_the_option_defaults_are_the_settings_defaults():
    """Each default is declared once: a bare command line gives the defaults of
    SessionConfig and ChannelSettings, and the help text names them."""
    parser = build_parser()
    server = parser.parse_args(["server", "--listen", "127.0.0.1:0"])
    client = parser.parse_args(["client", "--server", "h:1", "-L", "1:h:2"])
    session, channel = SessionConfig(), ChannelSettings()
    for args in (server, client):
        assert args.window == session.window and args.max_frame == session.max_frame
        assert args.max_streams == session.max_streams
        assert args.max_pending_syns == session.max_pending_syns
        assert args.connect_timeout == channel.connect_timeout
        assert args.handshake_timeout == channel.handshake_timeout
        assert args.keepalive_interval == channel.keepalive_interval
        assert args.max_buffer == channel.max_buffer == DEFAULT_MAX_BUFFER
    assert server.max_mappings == session.max_mappings
    assert (client.reconnect_min, client.reconnect_max) == (
        DEFAULT_RECONNECT_MIN,
        DEFAULT_RECONNECT_MAX,
    )
    help_text = parser._subparsers._group_actions[0].choices["client"].format_help()  # type: ignore[union-attr]
    assert f"(default {format_size(session.window)})" in help_text
    assert f"(default {format_size(channel.max_buffer)})" in help_text


@pytest.mark.parametrize(
    ("kind", "text", "bind", "target"),
    [
        (L, "udp:5353:127.0.0.1:53", ("localhost", 5353), ("127.0.0.1", 53)),
        (R, "UDP:*:0:dns.internal:53", ("::", 0), ("dns.internal", 53)),
        (L, "udp:[::1]:5353:[2001:db8::53]:53", ("::1", 5353), ("2001:db8::53", 53)),
    ],
)
def test_udp_forwards(kind, text, bind, target):
    spec = parse_forward(kind, text)
    assert spec.udp and not spec.dynamic
    assert ((spec.bind_host, spec.bind_port), (spec.target_host, spec.target_port)) == (
        bind,
        target,
    )
    assert spec.flag == f"-{kind.value} {text}"


@pytest.mark.parametrize("text", ["udp:5353", "udp:5353:h", "udp:/tmp/x.sock:h:53", "udp:0:/x"])
def test_bad_udp_forwards(text):
    with pytest.raises(SpecError, match="expected udp:"):
        parse_forward(L, text)


@pytest.mark.parametrize("text", ["5353:127.0.0.1:53/udp", "udp/5353:127.0.0.1:53"])
def test_udp_spelled_as_chisel_or_the_log_does_is_pointed_to_ours(text):
    with pytest.raises(SpecError, match="a UDP forward is written udp:"):
        parse_forward(L, text)
