"""The mapping table (protocol/mappings.py) on its own: requests, answers,
cancellation, and which streams each mapping may carry, for both roles."""

from __future__ import annotations

import pytest

from reactor_mux.protocol.errors import LocalProtocolError, ProtocolError
from reactor_mux.protocol.mappings import (
    BIND,
    CONNECT,
    DYNAMIC,
    MappingStatus,
    MappingTable,
    StreamVerdict,
)
from reactor_mux.protocol.verbs import Role, Verb

pytestmark = pytest.mark.codec_independent


def client(limit: int = 8) -> MappingTable:
    return MappingTable(Role.CLIENT, limit)


def server(limit: int = 8) -> MappingTable:
    return MappingTable(Role.SERVER, limit)


def test_a_client_declares_each_number_once():
    table = client()
    table.declare(1, CONNECT)
    assert table.status(1) is MappingStatus.PENDING
    with pytest.raises(LocalProtocolError, match="in use"):
        table.declare(1, BIND)
    for bad in (0, 1 << 32):
        with pytest.raises(LocalProtocolError, match="invalid"):
            table.declare(bad, CONNECT)


def test_only_a_client_declares_or_cancels():
    with pytest.raises(LocalProtocolError, match="only clients send BIND"):
        server().declare(1, BIND)
    with pytest.raises(LocalProtocolError, match="only clients send UNMAP"):
        server().cancel(1)


@pytest.mark.parametrize(
    "kind,ok,error",
    [(CONNECT, Verb.CONNECT_OK, Verb.CONNECT_ERROR), (BIND, Verb.BIND_OK, Verb.BIND_ERROR),
     (DYNAMIC, Verb.DYNAMIC_OK, Verb.DYNAMIC_ERROR)],
)  # fmt: skip
def test_answers_settle_a_pending_request_once(kind, ok, error):
    table = client()
    table.declare(1, kind)
    table.declare(2, kind)
    assert table.replied(1, ok) is kind
    assert table.status(1) is MappingStatus.ACCEPTED
    assert table.replied(2, error) is kind
    # A refused BIND is forgotten (no SYN can name it); the others stay refused.
    assert table.status(2) is (None if kind is BIND else MappingStatus.REFUSED)
    with pytest.raises(ProtocolError, match=r"no .* pending"):
        table.replied(1, ok)


def test_an_answer_of_the_wrong_kind_or_unasked_is_a_violation():
    table = client()
    table.declare(1, CONNECT)
    with pytest.raises(ProtocolError, match="has no BIND pending"):
        table.replied(1, Verb.BIND_OK)
    with pytest.raises(ProtocolError, match="mapping 9, which has no CONNECT pending"):
        table.replied(9, Verb.CONNECT_OK)


def test_a_cancelled_request_ignores_its_late_answer_until_unmap_ok():
    table = client()
    table.declare(1, CONNECT)
    assert table.cancel(1) is True
    assert table.cancel(1) is False  # once
    assert table.replied(1, Verb.CONNECT_OK) is None  # crossed our UNMAP
    table.unmapped(1)
    assert table.status(1) is None
    with pytest.raises(ProtocolError, match="was not cancelled"):
        table.unmapped(1)
    assert table.cancel(5) is False  # never declared: nothing to send


def test_the_server_refuses_requests_beyond_its_limit_and_counts_them():
    table = server(limit=2)
    assert table.requested(1, CONNECT) and table.requested(2, BIND)
    assert table.requested(3, DYNAMIC) is False
    assert table.requested(4, CONNECT) is False
    assert table.limit_refusals == 2 and len(table) == 2
    with pytest.raises(ProtocolError, match="declared twice"):
        table.requested(1, CONNECT)


def test_the_server_answers_once_and_forgets_a_refused_bind():
    table = server()
    table.requested(1, BIND)
    table.requested(2, CONNECT)
    table.answer(2, CONNECT, accepted=True)
    with pytest.raises(LocalProtocolError, match="already answered"):
        table.answer(2, CONNECT, accepted=False)
    with pytest.raises(LocalProtocolError, match="no BIND request 2"):
        table.answer(2, BIND, accepted=True)
    table.answer(1, BIND, accepted=False)
    assert table.status(1) is None
    assert table.forget(1) is None  # an UNMAP that crossed the refusal
    assert table.forget(2) is CONNECT


def test_peer_streams_need_a_mapping_of_the_peers_kind():
    srv = server()
    srv.requested(1, CONNECT)
    srv.requested(2, BIND)
    srv.requested(3, DYNAMIC)
    srv.answer(1, CONNECT, accepted=True)
    srv.answer(3, DYNAMIC, accepted=False)
    assert srv.peer_stream(1) == (CONNECT, StreamVerdict.OPEN)
    assert srv.peer_stream(3) == (DYNAMIC, StreamVerdict.REFUSED)
    with pytest.raises(ProtocolError, match="never declared with CONNECT or DYNAMIC"):
        srv.peer_stream(2)  # the client never opens BIND streams
    cli = client()
    cli.declare(1, BIND)
    with pytest.raises(ProtocolError, match="before BIND OK"):
        cli.peer_stream(1)
    cli.replied(1, Verb.BIND_OK)
    assert cli.peer_stream(1) == (BIND, StreamVerdict.OPEN)
    cli.cancel(1)
    assert cli.peer_stream(1) == (BIND, StreamVerdict.REMOVED)


def test_own_streams_need_an_open_mapping_and_a_target_exactly_on_dynamic():
    cli = client()
    cli.declare(1, CONNECT)
    cli.declare(2, DYNAMIC)
    cli.own_stream(1, names_target=False)  # pipelined before CONNECT OK: allowed
    cli.own_stream(2, names_target=True)
    with pytest.raises(LocalProtocolError, match="exactly when"):
        cli.own_stream(1, names_target=True)
    with pytest.raises(LocalProtocolError, match="exactly when"):
        cli.own_stream(2, names_target=False)
    cli.replied(1, Verb.CONNECT_ERROR)
    with pytest.raises(LocalProtocolError, match="cannot carry"):
        cli.own_stream(1, names_target=False)
    srv = server()
    srv.requested(1, BIND)
    with pytest.raises(LocalProtocolError, match="not bound yet"):
        srv.own_stream(1, names_target=False)
    srv.answer(1, BIND, accepted=True)
    srv.own_stream(1, names_target=False)
