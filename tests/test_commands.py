"""Command bodies against the golden vectors, and formatting round trips."""

from __future__ import annotations

import json
import pathlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactor_mux.protocol.commands import (
    Verb,
    format_command,
    parse_command,
    parse_decimal,
    parse_host_port,
)
from reactor_mux.protocol.errorcodes import ErrorCode, code_of, with_code
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.frames import KIND_COMMAND, encode_frame
from reactor_mux.protocol.limits import MAX_COMMAND_BODY
from reactor_mux.protocol.syntax import format_host_port

pytestmark = pytest.mark.codec_independent

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "commands.json").read_text())


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["body"])
def test_valid_commands(vector):
    command = parse_command(vector["body"].encode())
    assert command.verb.value == vector["verb"]
    assert command.args == vector["args"]
    assert format_command(command.verb, *command.args) == vector["body"].encode()


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda v: v["why"])
def test_invalid_commands(vector):
    body = bytes.fromhex(vector["body_hex"]) if "body_hex" in vector else vector["body"].encode()
    with pytest.raises(ProtocolError):
        parse_command(body)


@given(st.text(max_size=300))
def test_any_reason_formats_into_a_parseable_command(reason):
    body = format_command(Verb.RST, reason)
    assert len(body) <= MAX_COMMAND_BODY
    command = parse_command(body)
    assert command.verb is Verb.RST
    assert command.args


def test_long_reasons_are_truncated_to_the_limit():
    body = format_command(Verb.ERROR, "word " * 1000)
    assert len(body) <= MAX_COMMAND_BODY
    assert parse_command(body).verb is Verb.ERROR


@pytest.mark.parametrize(
    "word,expected",
    [
        ("127.0.0.1:80", ("127.0.0.1", 80)),
        ("[::1]:22", ("::1", 22)),
        ("a-b.example:1", ("a-b.example", 1)),
    ],
)
def test_host_port(word, expected):
    assert parse_host_port(word, allow_port_zero=False) == expected
    assert format_host_port(*expected) == word


@pytest.mark.parametrize(
    "word", ["127.0.0.1", "host:", ":80", "host:65536", "host:080x", "a b:1", "[zz]:1", "host:0"]
)
def test_bad_host_port(word):
    with pytest.raises(ProtocolError):
        parse_host_port(word, allow_port_zero=False)


@pytest.mark.parametrize("word", ["01", "-1", "+1", "1e3", "", "99999999999"])
def test_decimals_are_canonical(word):
    with pytest.raises(ProtocolError):
        parse_decimal(word, "n", 0, 2**32 - 1)


@pytest.mark.parametrize("vector", VECTORS["error_codes"], ids=lambda v: v["reason"])
def test_error_codes_are_the_first_word_and_a_colon(vector):
    code = code_of(vector["reason"])
    assert (code.value if code is not None else None) == vector["code"]
    if "frame_hex" in vector:
        frame = encode_frame(0, KIND_COMMAND, format_command(Verb.ERROR, vector["reason"]))
        assert frame.hex() == vector["frame_hex"]
        assert with_code(ErrorCode.BUSY, vector["reason"].split(": ", 1)[1]) == vector["reason"]
