"""Authentication in the sans-I/O core: the documented vectors, and every way a
handshake can go wrong, with two sessions wired back to back."""

from __future__ import annotations

import itertools
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reactor_mux.protocol import auth
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.events import (
    ChannelFailed,
    HelloReceived,
    MappingAccepted,
    MappingKind,
    MappingRequested,
)
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.session import AUTH_FAILED, Session
from reactor_mux.protocol.verbs import ChannelState, Role

VECTORS = json.loads((pathlib.Path(__file__).parent / "vectors" / "auth.json").read_text())
SECRET = b"correct horse battery staple"
CLIENT_ID = "c0ffee0123456789"


class Book:
    """A clients file in miniature."""

    def __init__(self, **secrets: bytes) -> None:
        self._secrets = secrets

    def secret_for(self, name: str) -> bytes | None:
        return self._secrets.get(name)


def counting_bytes(start: int):  # type: ignore[no-untyped-def]
    """A predictable nonce source: 00 01 02 ..., then 01 02 03 ..., ..."""
    counter = itertools.count(start)

    def random_bytes(n: int) -> bytes:
        base = next(counter)
        return bytes((base + i) % 256 for i in range(n))

    return random_bytes


def client(credentials: auth.Credentials | None = None, seed: int = 0) -> Session:
    config = SessionConfig(credentials=credentials, random_bytes=counting_bytes(seed))
    return Session(Role.CLIENT, config, client_id=CLIENT_ID)


def server(book: auth.SecretBook | None = None, seed: int = 100) -> Session:
    return Session(Role.SERVER, SessionConfig(secret_book=book, random_bytes=counting_bytes(seed)))


def exchange(a: Session, b: Session) -> tuple[list, list]:  # type: ignore[type-arg]
    a_events: list = []  # type: ignore[type-arg]
    b_events: list = []  # type: ignore[type-arg]
    for _ in range(100):
        ab, ba = a.data_to_send(), b.data_to_send()
        if not ab and not ba:
            return a_events, b_events
        b_events += b.receive_data(ab)
        a_events += a.receive_data(ba)
    raise AssertionError("never quiet")


def commands(wire: bytes) -> list[str]:
    frames, consumed, error = split_frames(wire)
    assert error is None and consumed == len(wire)
    return [bytes(body).decode() for _sid, kind, body in frames if kind == 1]


def failures(events: list) -> list[ChannelFailed]:  # type: ignore[type-arg]
    return [event for event in events if isinstance(event, ChannelFailed)]


# ---------------------------------------------------------------- vectors


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["role"] + "/" + v["name"])
def test_documented_vectors(vector):
    secret = bytes.fromhex(vector["secret_hex"])
    args = (vector["role"], vector["name"], vector["client_id"],
            vector["client_nonce"], vector["server_nonce"])  # fmt: skip
    assert auth.transcript(*args).hex() == vector["transcript_hex"]
    assert auth.proof(secret, *args) == vector["proof"]


def test_a_full_handshake_matches_the_vectors_on_the_wire():
    """Two sessions whose nonces are the vectors' exchange exactly the documented proofs."""
    vector_client, vector_server = VECTORS[0], VECTORS[1]
    secret = bytes.fromhex(vector_client["secret_hex"])
    c = client(auth.Credentials(secret, "alice"), seed=0)  # nonce 000102...1f
    s = server(Book(alice=secret), seed=32)  # nonce 202122...3f
    assert vector_client["client_id"] == CLIENT_ID
    c.receive_data(s.data_to_send())
    sent = commands(c.data_to_send())
    assert sent[1] == f"AUTH alice {vector_client['client_nonce']} {vector_client['proof']}"
    s.receive_data(encode_frame(0, 1, sent[0].encode()) + encode_frame(0, 1, sent[1].encode()))
    assert commands(s.data_to_send()) == [f"AUTH OK {vector_server['proof']}"]
    assert s.ready


# ------------------------------------------------------------ the handshake


def test_shared_secret_both_sides_prove_it_and_mappings_wait_for_that():
    c = client(auth.Credentials(SECRET))
    s = server(auth.SharedSecret(SECRET))
    c.request_connect(1, "db.internal", 5432)
    first_flight = commands(c.data_to_send())
    assert first_flight == [f"HELLO 1 262144 65536 {CLIENT_ID}"], "a mapping left before auth"
    s.receive_data(encode_frame(0, 1, first_flight[0].encode()))
    assert s.state is ChannelState.AUTHENTICATING
    c_events, s_events = exchange(c, s)
    hello = [e for e in s_events if isinstance(e, HelloReceived)]
    assert hello == [HelloReceived(262144, 65536, CLIENT_ID, "-")]
    assert [e for e in s_events if isinstance(e, MappingRequested)] == [
        MappingRequested(1, MappingKind.CONNECT, "db.internal", 5432)
    ]
    assert c.ready and s.ready and s.client_name == "-"
    s.accept_connect(1)
    c_events, _ = exchange(c, s)
    assert MappingAccepted(1, MappingKind.CONNECT) in c_events


@pytest.mark.parametrize("after_replies", [True, False])
def test_a_refusal_after_authentication_follows_auth_ok(after_replies):
    """Found in review (issue 20): a full server dropped its queued AUTH OK, so an
    older client (which decides by the state it is in) read "full" as a failed AUTH.
    Refusals made after authenticating (full, resume refused) now follow AUTH OK."""
    c, s = client(auth.Credentials(SECRET)), server(auth.SharedSecret(SECRET))
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())  # AUTH: the server queues AUTH OK
    s.fail("too many channels (limit 1)", ErrorCode.FULL, after_replies=after_replies)
    wire = commands(s.data_to_send())
    assert wire[-1] == "ERROR full: too many channels (limit 1)"
    assert any(word.startswith("AUTH OK ") for word in wire) is after_replies
    events = [e for command in wire for e in c.receive_data(encode_frame(0, 1, command.encode()))]
    assert isinstance(events[-1], ChannelFailed) and events[-1].code is ErrorCode.FULL
    assert any(isinstance(e, HelloReceived) for e in events) is after_replies


def test_named_clients_authenticate_with_their_own_secret():
    book = Book(alice=b"a" * 20, bob=b"b" * 20)
    c = client(auth.Credentials(b"b" * 20, "bob"))
    s = server(book)
    exchange(c, s)
    assert c.ready and s.ready and s.client_name == "bob"


@pytest.mark.parametrize(
    ("credentials", "book", "server_log"),
    [
        (auth.Credentials(b"x" * 20, "alice"), Book(alice=b"a" * 20), "wrong proof from 'alice'"),
        (auth.Credentials(b"a" * 20, "mallory"), Book(alice=b"a" * 20), "unknown client name"),
    ],
    ids=["wrong secret", "unknown name"],
)
def test_a_failed_authentication_tells_the_client_nothing_more(credentials, book, server_log):
    c, s = client(credentials), server(book)
    c.request_bind(1, "127.0.0.1", 0)
    c_events, s_events = exchange(c, s)
    (s_failed,) = failures(s_events)
    assert s_failed.authentication and server_log in s_failed.reason
    (c_failed,) = failures(c_events)
    assert c_failed.by_peer and c_failed.authentication
    assert c_failed.reason == f"auth: {AUTH_FAILED}"  # the code, and nothing more
    assert not any(isinstance(e, MappingRequested) for e in s_events), "acted on a BIND"


def test_no_secret_against_a_server_that_requires_one():
    c, s = client(None), server(auth.SharedSecret(SECRET))
    c.request_connect(1, "db", 1)  # pipelined: the server must not act on it
    c_events, s_events = exchange(c, s)
    (c_failed,) = failures(c_events)
    assert "requires authentication" in c_failed.reason and c_failed.authentication
    assert not any(isinstance(e, MappingRequested) for e in s_events)
    assert s.failed


def test_a_pipelined_connect_before_auth_is_a_violation():
    s = server(auth.SharedSecret(SECRET))
    events = s.receive_data(encode_frame(0, 1, f"HELLO 1 65536 65536 {CLIENT_ID}".encode())
                            + encode_frame(1, 1, b"CONNECT db:1"))  # fmt: skip
    (failed,) = failures(events)
    assert "expected AUTH, got CONNECT" in failed.reason
    assert not any(isinstance(e, MappingRequested) for e in events)


def test_a_client_with_a_secret_refuses_a_server_that_asks_for_none():
    """A server that does not ask cannot prove it knows the secret: it may be an impostor."""
    c, s = client(auth.Credentials(SECRET)), server(None)
    c.request_bind(1, "127.0.0.1", 0)
    c_events, s_events = exchange(c, s)
    (failed,) = failures(c_events)
    assert "did not ask this client to authenticate" in failed.reason
    assert not any(isinstance(e, MappingRequested) for e in s_events), "sent a BIND anyway"


def test_an_impostor_server_cannot_forge_its_proof():
    """A server with another secret answers the client's AUTH as if it were fine."""
    wrong_secret = b"not the secret, but long"
    c, impostor = client(auth.Credentials(SECRET)), server(auth.SharedSecret(wrong_secret))
    c.request_connect(1, "db", 1)
    c.receive_data(impostor.data_to_send())  # its HELLO, with a challenge
    c.data_to_send()  # our HELLO and AUTH
    forged = auth.proof(wrong_secret, "server", "-", CLIENT_ID, c._handshake.nonce,
                        impostor._handshake.nonce)  # fmt: skip
    events = c.receive_data(encode_frame(0, 1, f"AUTH OK {forged}".encode()))
    (failed,) = failures(events)
    assert "server's proof is wrong" in failed.reason and not c.ready
    assert "CONNECT" not in " ".join(commands(c.data_to_send())), "told the impostor a target"


def test_a_recorded_handshake_cannot_be_replayed():
    """An attacker who recorded a good client's AUTH sends it to a new channel:
    the server's nonce differs, so the proof does not verify."""
    c, s = client(auth.Credentials(SECRET), seed=1), server(auth.SharedSecret(SECRET), seed=50)
    s_hello = s.data_to_send()
    c.receive_data(s_hello)
    recorded = c.data_to_send()  # HELLO + AUTH, signed over s's nonce
    fresh = server(auth.SharedSecret(SECRET), seed=51)
    events = fresh.receive_data(recorded)
    (failed,) = failures(events)
    assert failed.authentication and "wrong proof" in failed.reason


def test_a_reflected_proof_is_refused():
    """A man in the middle sends the client's own AUTH proof back as AUTH OK: the
    roles in the transcript differ, so it does not verify."""
    c = client(auth.Credentials(SECRET))
    s = server(auth.SharedSecret(SECRET))
    c.receive_data(s.data_to_send())
    sent = commands(c.data_to_send())
    client_proof = sent[-1].split()[-1]
    events = c.receive_data(encode_frame(0, 1, f"AUTH OK {client_proof}".encode()))
    (failed,) = failures(events)
    assert "server's proof is wrong" in failed.reason


@pytest.mark.parametrize(
    "frame",
    [
        "AUTH alice zz 00",
        "AUTH OK deadbeef",
        "AUTH " + "n" * 65 + " " + "0" * 64 + " " + "0" * 64,
        "AUTH OK " + "0" * 64 + " extra",
    ],
)
def test_malformed_auth_frames_fail_the_channel(frame):
    s = server(auth.SharedSecret(SECRET))
    s.receive_data(encode_frame(0, 1, f"HELLO 1 65536 65536 {CLIENT_ID}".encode()))
    events = s.receive_data(encode_frame(0, 1, frame.encode()))
    assert len(failures(events)) == 1 and s.failed


def test_credentials_and_names_are_checked():
    with pytest.raises(ValueError):
        auth.Credentials(b"short")
    with pytest.raises(ValueError):
        auth.Credentials(SECRET, "OK")  # would read as the verb AUTH OK
    with pytest.raises(ValueError):
        auth.Credentials(SECRET, "has space")
    assert "correct horse" not in repr(auth.Credentials(SECRET))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=400), st.integers(0, 3))
def test_fuzzed_handshake_bytes_open_the_channel_only_with_a_good_proof(garbage, cut):
    """Whatever follows a good HELLO, the server either fails the channel with its
    one protocol error or stays waiting; it never opens without a valid AUTH."""
    s = server(auth.SharedSecret(SECRET))
    hello = encode_frame(0, 1, f"HELLO 1 65536 65536 {CLIENT_ID}".encode())
    events = s.receive_data(hello[: len(hello) - cut] + garbage if cut else hello + garbage)
    assert not any(isinstance(e, HelloReceived) for e in events)
    assert not s.ready


def test_a_tls_client_hello_at_a_plaintext_server_is_named_as_such():
    """The first bytes of any TLS handshake (0x16 0x03) where a HELLO frame belongs."""
    s = server()
    client_hello = bytes.fromhex("160301012d0100012903031a2b3c") + bytes(300)
    (failed,) = failures(s.receive_data(client_hello))
    assert failed.reason.startswith("peer started a TLS handshake")
