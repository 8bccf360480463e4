"""The verb table (``protocol/verbs.py``) against the spec and against sessions.

Two checks: the table says what docs/protocol.md §2 says (who sends each
command, what its id names, how many arguments it takes), and a real session
in each state where bytes arrive (all but DISCONNECTED and FAILED, which read
none), of each role, fails the channel on exactly the commands the table
forbids there, with the reason the table's check gives.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable

import pytest

from reactor_mux.protocol import auth
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.events import ChannelFailed, Event, ResumeRequested
from reactor_mux.protocol.frames import KIND_COMMAND, encode_frame
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import MANY, VERBS, ChannelState, Role, Scope, Sender, Verb

pytestmark = pytest.mark.codec_independent

SPEC = pathlib.Path(__file__).parent.parent / "docs" / "protocol.md"
SECRET = b"correct horse battery staple"
CLIENT_ID = "verbs-test-client"


class Book:
    def secret_for(self, name: str) -> bytes | None:
        return SECRET if name == "alice" else None


def spec_rows() -> dict[Verb, tuple[str, str, str]]:
    """docs/protocol.md §2: verb -> (spelling with arguments, id column, sent by)."""
    rows: dict[Verb, tuple[str, str, str]] = {}
    by_spelling = sorted(Verb, key=lambda v: -len(v.value))  # "SYN OK" before "SYN"
    for line in SPEC.read_text().splitlines():
        match = re.match(r"\| `([A-Z][^`]*)` \| ([^|]+) \| ([^|]+) \|", line)
        if not match:
            continue
        spelling, id_column, sender = (part.strip() for part in match.groups())
        verb = next(v for v in by_spelling if f"{spelling} ".startswith(v.value + " "))
        rows[verb] = (spelling, id_column, sender)
    return rows


SPEC_ROWS = spec_rows()
SPEC_SENDER = {"client": Sender.CLIENT, "server": Sender.SERVER, "both": Sender.EITHER,
               "both, first": Sender.EITHER, "opener": Sender.EITHER,
               "acceptor": Sender.EITHER}  # fmt: skip


def spec_scope(id_column: str) -> Scope:
    if id_column == "0":
        return Scope.CHANNEL
    return Scope.MAPPING if id_column in ("mapping m", "m") else Scope.STREAM


SHORT_FORMS = {Verb.SESSION: 1}
"""Verbs whose row names a shorter form among its arguments (``SESSION -``)."""


def spec_arity(verb: Verb, spelling: str) -> tuple[int, int]:
    """Argument words in the spelling: ``[x]`` is optional, ``reason`` is free text."""
    words = spelling[len(verb.value) :].split()
    if words and words[-1] == "reason":
        return len(words), MANY
    required = [w for w in words if not w.startswith("[")]
    optional = " ".join(words).count("[")
    return SHORT_FORMS.get(verb, len(required)), len(required) + optional


def test_the_spec_lists_every_verb():
    assert set(SPEC_ROWS) == set(Verb)


@pytest.mark.parametrize("verb", list(Verb), ids=lambda v: v.value)
def test_the_table_matches_the_spec(verb: Verb) -> None:
    spelling, id_column, sender = SPEC_ROWS[verb]
    rule = VERBS[verb]
    assert rule.sender is SPEC_SENDER[sender]
    assert rule.scope is spec_scope(id_column)
    assert rule.arity == spec_arity(verb, spelling)


# -- sessions in every state -------------------------------------------------


def relay(source: Session, target: Session) -> list[Event]:
    return target.receive_data(source.data_to_send())


def awaiting_hello(role: Role) -> Session:
    return Session(role, SessionConfig(), client_id=CLIENT_ID if role is Role.CLIENT else None)


def authenticating(role: Role) -> Session:
    client = Session(Role.CLIENT, SessionConfig(credentials=auth.Credentials(SECRET, "alice")),
                     client_id=CLIENT_ID)  # fmt: skip
    server = Session(Role.SERVER, SessionConfig(secret_book=Book()))
    relay(client, server)  # the client's HELLO: the server waits for AUTH
    if role is Role.SERVER:
        return server
    relay(server, client)  # the server's HELLO: the client sends AUTH, waits for AUTH OK
    return client


def resuming(role: Role) -> Session:
    config = SessionConfig(resume=True)
    client = Session(Role.CLIENT, config, client_id=CLIENT_ID)
    server = Session(Role.SERVER, config)
    for _ in range(5):
        relay(client, server)
        relay(server, client)
    assert client.resumable
    client.suspend()
    client.reconnect()
    handshake = Session(Role.SERVER, config)
    events = relay(client, handshake)  # HELLO resume:ID: the server looks the session up
    assert any(isinstance(e, ResumeRequested) for e in events)
    if role is Role.SERVER:
        return handshake
    relay(handshake, client)  # the server's HELLO: the client waits for RESUME NONCE
    return client


def open_channel(role: Role) -> Session:
    client = Session(Role.CLIENT, SessionConfig(), client_id=CLIENT_ID)
    server = Session(Role.SERVER, SessionConfig())
    relay(client, server)
    relay(server, client)
    return client if role is Role.CLIENT else server


REACH: dict[ChannelState, Callable[[Role], Session]] = {
    ChannelState.AWAITING_HELLO: awaiting_hello,
    ChannelState.AUTHENTICATING: authenticating,
    ChannelState.RESUMING: resuming,
    ChannelState.OPEN: open_channel,
}

# Arguments that parse (right count, right shape); a handler may still refuse
# them for its own reasons, which this test does not judge.
SAMPLE_ARGS = {
    Verb.HELLO: "1 65536 65536",
    Verb.AUTH: f"alice {'00' * 32} {'00' * 32}",
    Verb.AUTH_OK: "00" * 32,
    Verb.ERROR: "protocol: a test",
    Verb.PING: "1",
    Verb.PONG: "1",
    Verb.CONNECT: "localhost:80",
    Verb.CONNECT_ERROR: "no",
    Verb.BIND: "localhost:0",
    Verb.UDP_CONNECT: "localhost:53",
    Verb.UDP_CONNECT_ERROR: "no",
    Verb.UDP_BIND: "localhost:0",
    Verb.UDP_BIND_OK: "localhost:9000",
    Verb.UDP_BIND_ERROR: "no",
    Verb.BIND_OK: "localhost:9000",
    Verb.BIND_ERROR: "no",
    Verb.DYNAMIC_ERROR: "no",
    Verb.SYN: "1",
    Verb.SYN_ERROR: "no",
    Verb.ACK: "1",
    Verb.RST: "no",
    Verb.BLOCKED: "65536",
    Verb.WINDOW: "131072",
    Verb.SESSION: "-",
    Verb.RESUME_NONCE: "00" * 32,
    Verb.RESUME_PROOF: f"{'00' * 32} {'00' * 32}",
    Verb.RECEIVED: "0 0",
    Verb.RESUME_END: "0 0",
}


def frame_of(verb: Verb, role: Role) -> bytes:
    """``verb`` as the peer of ``role`` would send it, on an id of the right scope
    (a stream id of the peer's parity, so only the table decides)."""
    scope = VERBS[verb].scope
    if scope is Scope.CHANNEL:
        frame_id = 0
    elif scope is Scope.MAPPING:
        frame_id = 1
    else:
        frame_id = 2 if role is Role.CLIENT else 1
    text = " ".join(filter(None, (verb.value, SAMPLE_ARGS.get(verb, ""))))
    return encode_frame(frame_id, KIND_COMMAND, text.encode())


OUT_OF_TURN = re.compile(r"expected HELLO, got |expected the resume exchange, got |"
                         r"expected AUTH, got |expected AUTH OK, got |"
                         r" when the channel is open$|^duplicate HELLO$")  # fmt: skip

CELLS = [(role, state, verb) for role in Role for state in REACH for verb in Verb]


@pytest.mark.parametrize("role,state,verb", CELLS,
                         ids=[f"{r.value}-{s.name}-{v.name}" for r, s, v in CELLS])  # fmt: skip
def test_a_session_refuses_what_the_table_forbids(role: Role, state: ChannelState,
                                                  verb: Verb) -> None:  # fmt: skip
    session = REACH[state](role)
    assert session.state is state and session.role is role
    rule = VERBS[verb]
    events = session.receive_data(frame_of(verb, role))
    failures = [e for e in events if isinstance(e, ChannelFailed)]
    reason = failures[-1].reason if failures else ""
    own = Sender.CLIENT if role is Role.CLIENT else Sender.SERVER
    if state not in rule.states:
        assert failures and failures[-1].code is ErrorCode.PROTOCOL, events
        assert OUT_OF_TURN.search(reason), reason
        if reason != "duplicate HELLO":
            assert verb.value in reason
    elif rule.sender is own:
        assert failures and failures[-1].code is ErrorCode.PROTOCOL, events
        assert reason == f"{verb.value} is sent by {own.value} only"
    else:  # allowed: whatever the handler makes of the sample, not the table's refusal
        assert not OUT_OF_TURN.search(reason) and "is sent by" not in reason, reason
