"""The handshake part (protocol/handshake.py) on its own: HELLO words both ways,
what follows a HELLO for each combination of secrets, and AUTH / AUTH OK."""

from __future__ import annotations

import pytest

from reactor_mux.protocol import auth
from reactor_mux.protocol.errors import ProtocolError
from reactor_mux.protocol.handshake import (
    NEW_SESSION,
    NO_OFFER,
    AfterHello,
    Handshake,
    Hello,
    ResumeAsk,
    ResumeOffer,
    parse_hello,
)
from reactor_mux.protocol.verbs import Role

pytestmark = pytest.mark.codec_independent

SECRET = b"correct horse battery staple"
CLIENT_ID = "c0ffee0123456789"
SESSION_ID = "0123456789abcdef0123456789abcdef"


class Book:
    def secret_for(self, name: str) -> bytes | None:
        return SECRET if name == "alice" else None


def counting(start: int):  # type: ignore[no-untyped-def]
    state = [start]

    def random_bytes(n: int) -> bytes:
        state[0] += 1
        return bytes((state[0] + i) % 256 for i in range(n))

    return random_bytes


def client(credentials: auth.Credentials | None = None) -> Handshake:
    return Handshake(Role.CLIENT, CLIENT_ID, credentials, None, counting(0))


def server(book: auth.SecretBook | None = None) -> Handshake:
    return Handshake(Role.SERVER, "", None, book, counting(100))


def test_resume_offers_round_trip_and_refuse_anything_else():
    assert ResumeOffer.parse("resume") == NEW_SESSION
    offer = ResumeOffer.parse(f"resume:{SESSION_ID}")
    assert offer == ResumeOffer(ResumeAsk.RESUME, SESSION_ID)
    assert ResumeOffer.parse(offer.word) == offer
    for bad in ("resume:", "resume:xyz", "keep", f"resumes:{SESSION_ID}"):
        with pytest.raises(ProtocolError, match="unknown HELLO option"):
            ResumeOffer.parse(bad)


def test_a_client_hello_carries_its_id_and_offer_and_a_server_its_challenge():
    assert client().hello_words(NO_OFFER) == [CLIENT_ID]
    assert client().hello_words(NEW_SESSION) == [CLIENT_ID, "resume"]
    assert Handshake(Role.CLIENT, "", None, None, counting(0)).hello_words(NEW_SESSION) == []
    challenger = server(Book())
    assert challenger.hello_words(NO_OFFER) == [challenger.nonce]
    assert server().hello_words(NO_OFFER) == []


def test_parse_hello_reads_each_role_s_words():
    hello = parse_hello(Role.SERVER, ["1", "65536", "16384", CLIENT_ID, "resume"])
    assert hello == Hello(65536, 16384, CLIENT_ID, "", NEW_SESSION)
    challenge = "ab" * 32
    assert parse_hello(Role.CLIENT, ["1", "65536", "16384", challenge]).challenge == challenge
    with pytest.raises(ProtocolError, match="unsupported protocol version 2"):
        parse_hello(Role.SERVER, ["2", "65536", "16384"])
    with pytest.raises(ProtocolError, match="not an authentication challenge"):
        parse_hello(Role.CLIENT, ["1", "65536", "16384", "nope"])
    with pytest.raises(ProtocolError, match="window"):
        parse_hello(Role.SERVER, ["1", "1", "16384"])


@pytest.mark.parametrize(
    "has_secret,challenged,after",
    [(False, False, AfterHello.OPEN), (True, True, AfterHello.SEND_AUTH),
     (False, True, AfterHello.NEEDS_SECRET), (True, False, AfterHello.UNASKED_SECRET)],
)  # fmt: skip
def test_what_a_client_does_after_the_server_s_hello(has_secret, challenged, after):
    hs = client(auth.Credentials(SECRET) if has_secret else None)
    hello = Hello(65536, 16384, challenge="cd" * 32 if challenged else "")
    assert hs.after_hello(hello) is after


def test_a_server_awaits_auth_only_where_it_keeps_secrets():
    assert server(Book()).after_hello(Hello(65536, 16384, CLIENT_ID)) is AfterHello.AWAIT_AUTH
    open_server = server()
    assert open_server.after_hello(Hello(65536, 16384, CLIENT_ID)) is AfterHello.OPEN
    assert open_server.client_id == CLIENT_ID


def exchange(name: str, secret: bytes) -> tuple[Handshake, Handshake, str, str, str]:
    c = client(auth.Credentials(secret, name))
    s = server(Book())
    s.after_hello(Hello(65536, 16384, CLIENT_ID))
    c.after_hello(Hello(65536, 16384, challenge=s.nonce))
    return (c, s, *c.auth_words())


def test_a_good_auth_is_answered_with_the_server_s_proof_and_both_derive_one_key():
    c, s, name, nonce, proof = exchange("alice", SECRET)
    verdict = s.check_auth(name, nonce, proof)
    assert verdict.proof and not verdict.refusal
    assert s.client_name == "alice" and c.client_name == "alice"
    assert c.check_auth_ok(verdict.proof) is True
    assert c.key == s.key and len(c.key) == 32


def test_a_bad_auth_is_refused_with_a_reason_for_the_log_only():
    _c, s, _name, nonce, proof = exchange("bob", SECRET)
    assert s.check_auth("bob", nonce, proof).refusal == (
        "authentication failed: unknown client name 'bob'"
    )
    _c, s, name, nonce, proof = exchange("alice", b"another secret, just as long")
    verdict = s.check_auth(name, nonce, proof)
    assert verdict.refusal == "authentication failed: wrong proof from 'alice'"
    assert not verdict.proof and s.key == b"" and s.client_name is None


def test_a_wrong_server_proof_is_refused_and_malformed_words_are_violations():
    c, s, name, nonce, proof = exchange("alice", SECRET)
    assert c.check_auth_ok("00" * 32) is False and c.key == b""
    with pytest.raises(ProtocolError, match="64-hex-digit proof"):
        c.check_auth_ok("xyz")
    with pytest.raises(ProtocolError, match="not a client name"):
        s.check_auth("OK OK", nonce, proof)
    with pytest.raises(ProtocolError, match="64-hex-digit nonce"):
        s.check_auth(name, "short", proof)


def test_a_new_connection_has_a_new_nonce():
    hs = client()
    first = hs.nonce
    hs.server_nonce = "ab" * 32
    hs.renew()
    assert hs.nonce != first and hs.server_nonce == ""
