"""The proxy dialogues without a network (io/proxy.py): what is sent, how each
answer is taken, and that credentials never print."""

from __future__ import annotations

import pytest

from reactor_mux.io.proxy import (
    Dialogue,
    ProxyError,
    Verdict,
    parse_proxy,
    proxy_from_environment,
)

pytestmark = pytest.mark.codec_independent


def test_a_proxy_url_prints_without_its_credentials():
    proxy = parse_proxy("http://al%40ice:pa%3Ass@proxy.example:3128")
    assert (proxy.user, proxy.password) == ("al@ice", "pa:ss")
    assert str(proxy) == "http://proxy.example:3128"
    assert "pa:ss" not in repr(proxy) and "al@ice" not in repr(proxy)
    assert parse_proxy("socks5://[::1]").port == 1080
    bare = parse_proxy("alice:secret@proxy.example:3128")  # no scheme: http, as curl reads it
    assert (bare.scheme, bare.user, str(bare)) == ("http", "alice", "http://proxy.example:3128")
    for bad in ("ftp://u:secret@x", "http://:secret@x", "http://u:secret@x:99999",
                "u:secret@x:99999", "u:secret@"):  # fmt: skip
        with pytest.raises(ProxyError) as raised:
            parse_proxy(bad)
        assert "secret" not in str(raised.value)


def test_http_connect_and_its_answers():
    dialogue = Dialogue(parse_proxy("http://u:p@h:1"), "tunnel.example", 7000)
    assert dialogue.start() == (b"CONNECT tunnel.example:7000 HTTP/1.1\r\nHost: tunnel.example:7000"
                                b"\r\nProxy-Authorization: Basic dTpw\r\n\r\n")  # fmt: skip
    assert dialogue.receive(b"HTTP/1.1 200 Connection established\r\n") == b""
    assert not dialogue.done
    dialogue.receive(b"\r\n")
    assert dialogue.done and dialogue.failure is None
    for answer, verdict, words in [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", Verdict.REFUSED, "credentials"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", Verdict.REFUSED, "refused CONNECT"),
        (b"HTTP/1.1 502 Bad Gateway\r\n\r\n", Verdict.UNAVAILABLE, "cannot reach"),
        # tinyproxy's answer while the server restarts (found by a new-user trial):
        (b"HTTP/1.1 500 Unable to connect\r\n\r\n", Verdict.UNAVAILABLE, "cannot reach"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", Verdict.REFUSED, "not an HTTP proxy"),
    ]:
        dialogue = Dialogue(parse_proxy("http://h:1"), "t", 7000)
        dialogue.start()
        dialogue.receive(answer)
        assert dialogue.failure is not None and dialogue.failure.verdict is verdict
        assert words in dialogue.failure.text


def test_socks5_with_a_password_reads_exactly_its_answers():
    dialogue = Dialogue(parse_proxy("socks5://alice:pw@h:1"), "tunnel.example", 7000)
    assert dialogue.start() == b"\x05\x02\x00\x02"
    assert dialogue.wanted() == 2
    assert dialogue.receive(b"\x05\x02") == b"\x01\x05alice\x02pw"
    assert dialogue.receive(b"\x01\x00") == b"\x05\x01\x00\x03\x0etunnel.example\x1b\x58"
    assert dialogue.wanted() == 5
    dialogue.receive(b"\x05\x00\x00\x03\x04")
    assert dialogue.wanted() == 4 + 5 + 2 - 5  # the name's bytes and the port, no more
    dialogue.receive(b"abcd\x00\x50")
    assert dialogue.done and dialogue.early == b""


@pytest.mark.parametrize(
    ("answer", "verdict", "words"),
    [(b"\x05\x02\x00\x01", Verdict.REFUSED, "not allowed"),
     (b"\x05\x05\x00\x01", Verdict.UNAVAILABLE, "connection refused")],
)  # fmt: skip
def test_socks5_refusals(answer, verdict, words):
    dialogue = Dialogue(parse_proxy("socks5://h:1"), "10.0.0.1", 7000)
    dialogue.start()
    assert dialogue.receive(b"\x05\x00") == b"\x05\x01\x00\x01\x0a\x00\x00\x01\x1b\x58"
    dialogue.receive(answer + bytes(6))
    assert dialogue.failure is not None and dialogue.failure.verdict is verdict
    assert words in dialogue.failure.text


def test_the_environment_as_curl_reads_it():
    env = {"HTTPS_PROXY": "proxy:3128", "http_proxy": "http://web:80", "ALL_PROXY": "socks5://s",
           "NO_PROXY": "localhost,.internal,10.0.0.0/8"}  # fmt: skip
    assert str(proxy_from_environment(env, "tunnel.example", False)) == "http://proxy:3128"
    assert str(proxy_from_environment(env, "tunnel.example", True)) == "http://web:80"
    for direct in ("db.internal", "internal", "10.1.2.3", "localhost"):
        assert proxy_from_environment(env, direct, False) is None
    assert str(proxy_from_environment({"all_proxy": "socks5://s:9"}, "x", False)) == "socks5://s:9"
    assert proxy_from_environment({"NO_PROXY": "*", "HTTPS_PROXY": "p:1"}, "x", False) is None


def test_a_server_name_socks5_cannot_carry_is_a_refusal_not_a_crash():
    for name in ("a" * 64 + ".example", "x." * 130 + "example"):
        dialogue = Dialogue(parse_proxy("socks5://h:1"), name, 7000)
        dialogue.start()
        assert dialogue.receive(b"\x05\x00") == b""
        assert dialogue.failure is not None and dialogue.failure.verdict is Verdict.REFUSED
        assert "cannot be sent through SOCKS5" in dialogue.failure.text
