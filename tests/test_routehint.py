"""Where a resuming connection belongs (protocol/routehint.py), and the worker's
shared counters (channels, startups per source block, the accept balance) and
inbox (roles/cluster.py), without a supervisor."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
from inprocess import run_until

from reactor_mux.protocol.frames import encode_frame
from reactor_mux.protocol.routehint import NEED_MORE, Route, alpn_hint, route_of
from reactor_mux.roles.cluster import (
    BLOCK_ENTRIES,
    BLOCK_PROBES,
    Cluster,
    WorkerPlan,
    block_key,
    page_size,
    worker_gone,
)
from reactor_mux.security.admission import (
    Admission,
    AdmissionConfig,
    Admitted,
    MaxStartups,
    Refusal,
    Refused,
)

pytestmark = pytest.mark.codec_independent

SESSION = "0007" + "02" + "ab" * 13


def hello(*extra: str) -> bytes:
    return encode_frame(0, 1, " ".join(["HELLO", "1", "262144", "65536", *extra]).encode())


def client_hello(*alpn: str) -> bytes:
    """The first flight of a real TLS client (OpenSSL through the ssl module)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(list(alpn))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_plaintext_resume_names_its_holder_in_hello():
    frame = hello("client-1", f"resume:{SESSION}")
    assert route_of(frame + b"AUTH ...") == Route(7, 2)
    for cut in range(len(frame)):  # a HELLO split anywhere: wait for the rest
        assert route_of(frame[:cut]) is NEED_MORE
    assert route_of(hello("client-1", "resume")) is None  # asks for a new session
    assert route_of(hello()) is None
    assert route_of(hello("client-1", "resume:nothex")) is None


def test_a_tls_resume_names_its_holder_in_the_alpn_offer():
    offered = client_hello(alpn_hint(SESSION))
    assert route_of(offered) == Route(7, 2)
    assert route_of(offered[:100]) is NEED_MORE
    assert route_of(client_hello()) is None
    assert route_of(client_hello("h2", "http/1.1")) is None


def test_anything_else_is_served_where_it_landed():
    assert route_of(b"GET /rmux HTTP/1.1\r\n") is None
    assert route_of(b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00") is None  # not a ClientHello
    assert route_of(b"\x16\x03\x01\xff\xff") is None  # larger than any peek: no wait
    assert route_of(encode_frame(3, 1, b"HELLO 1 2 3")) is None


def test_route_parsing_is_strict():
    assert Route.parse("00ff01" + "0" * 26) == Route(255, 1)
    assert Route.parse("00FF01") is None
    assert Route.parse("0af") is None
    assert Route(258, 3).hex == "010203"


def plans(count: int) -> list[WorkerPlan]:
    shared = os.memfd_create("test-counters")
    os.ftruncate(shared, page_size(count))
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(count)]
    inboxes = [pair[0].detach() for pair in pairs]
    senders = [pair[1].detach() for pair in pairs]
    # Each "worker" its own copies, as a process of its own would inherit them.
    return [WorkerPlan(index, count, 0, [], [os.dup(fd) for fd in inboxes],
                       [os.dup(fd) for fd in senders], os.dup(shared), "")
            for index in range(count)]  # fmt: skip


def test_max_channels_counts_every_worker(reactor):
    first, second = (Cluster(reactor, plan) for plan in plans(2))
    try:
        assert first.take_channel(0, 3) is None
        assert first.take_channel(1, 3) is None
        assert second.take_channel(0, 3) is None
        assert second.take_channel(1, 3) == 3  # the whole server is full
        first.publish_channels(1)
        assert second.take_channel(1, 3) is None
        assert first.take_channel(1, 3) == 3
    finally:
        first.close()
        second.close()


def test_a_connection_is_handed_to_its_holder_with_its_socket(reactor):
    first, second = (Cluster(reactor, plan) for plan in plans(2))
    got: list[tuple[socket.socket, dict[str, object]]] = []
    messages: list[dict[str, object]] = []
    second.start(lambda sock, note: got.append((sock, note)), messages.append)
    near, far = socket.socketpair()
    try:
        assert first.hand_over(1, far, {"address": "127.0.0.5", "where": "127.0.0.5:1"})
        first.tell_others({"offence": ["127.0.0.9", "noauth"]})
        run_until(reactor, lambda: bool(got and messages))
        [(sock, note)] = got
        assert note == {"address": "127.0.0.5", "where": "127.0.0.5:1"}
        near.sendall(b"the same connection")
        assert sock.recv(100) == b"the same connection"
        assert messages == [{"offence": ["127.0.0.9", "noauth"]}]
        sock.close()
    finally:
        near.close()
        first.close()
        second.close()


def test_startup_limits_count_every_worker(reactor):
    """Each worker's Admission adds its siblings' startups: one source spread over two
    workers meets --per-source-max-startups once, and FULL counts both."""
    first, second = (Cluster(reactor, plan) for plan in plans(2))
    config = AdmissionConfig(max_startups=MaxStartups(5, 100, 5), per_source_max_startups=3)
    here = Admission(config, shared=first)
    there = Admission(config, shared=second)
    try:
        assert isinstance(here.admit("127.0.0.2", 0.0, None), Admitted)
        assert isinstance(there.admit("127.0.0.2", 0.0, None), Admitted)
        kept = here.admit("127.0.0.2", 0.0, None)
        assert isinstance(kept, Admitted)
        assert first.elsewhere("127.0.0.2/32") == (1, 1)
        assert second.elsewhere("127.0.0.2/32") == (2, 2)
        refused = there.admit("127.0.0.2", 0.0, None)
        assert isinstance(refused, Refused) and refused.refusal is Refusal.PER_SOURCE
        here.finish(kept.startup)  # room again, in either worker
        assert isinstance(there.admit("127.0.0.2", 0.0, None), Admitted)
        assert isinstance(there.admit("127.0.0.3", 0.0, None), Admitted)
        assert isinstance(here.admit("127.0.0.3", 0.0, None), Admitted)  # five: FULL
        refused = there.admit("127.0.0.3", 0.0, None)
        assert isinstance(refused, Refused) and refused.refusal is Refusal.STARTUPS
        # A source with none takes the place of an idle startup of this worker's.
        newcomer = there.admit("127.0.0.4", 0.0, None)
        assert isinstance(newcomer, Admitted) and newcomer.evicted is not None
        assert there.startups + here.startups == 5
        assert first.elsewhere("127.0.0.4/32") == (3, 1)
    finally:
        first.close()
        second.close()


def test_a_block_table_entry_is_freed_and_taken_again(reactor):
    """Blocks whose keys share an entry probe on; an entry whose count falls to 0 is
    free for the next; a dead worker's startups stop counting."""
    first, second = (Cluster(reactor, plan) for plan in plans(2))
    try:
        blocks: dict[int, list[str]] = {}
        number = 0
        while not any(len(found) > BLOCK_PROBES for found in blocks.values()):
            block = f"10.{number >> 8 & 255}.{number & 255}.0/24"
            blocks.setdefault(block_key(block) % BLOCK_ENTRIES, []).append(block)
            number += 1
        crowded = next(found for found in blocks.values() if len(found) > BLOCK_PROBES)
        for count, block in enumerate(crowded[:BLOCK_PROBES], 1):
            first.publish_startups(block, count, count)
        assert [second.elsewhere(block)[1] for block in crowded[:BLOCK_PROBES]] == list(
            range(1, BLOCK_PROBES + 1)
        )
        late = crowded[BLOCK_PROBES]
        first.publish_startups(late, 1, 9)
        assert second.elsewhere(late) == (9, 0)  # no entry left: counted where it is only
        first.publish_startups(crowded[2], 0, 9)
        first.publish_startups(late, 2, 9)
        assert second.elsewhere(late) == (9, 2) and second.elsewhere(crowded[2])[1] == 0
        worker_gone(first.plan.shared, 2, 0, first.plan.inboxes[0])
        assert second.elsewhere(late) == (0, 0)
    finally:
        first.close()
        second.close()


def test_a_worker_busier_than_its_siblings_leaves_them_the_next_connection(reactor):
    first, second = (Cluster(reactor, plan) for plan in plans(2))
    try:
        first.start(lambda sock, note: sock.close(), lambda message: None)
        second.start(lambda sock, note: sock.close(), lambda message: None)
        assert not first.busier_than_siblings() and not second.busier_than_siblings()
        first.publish_startups("127.0.0.2/32", 1, 1)
        assert first.busier_than_siblings() and not second.busier_than_siblings()
        second.publish_channels(1)
        assert not first.busier_than_siblings()
        second.publish_channels(2)
        assert second.busier_than_siblings()
        first.stop_accepting()  # draining: nothing is left to it
        assert not second.busier_than_siblings()
    finally:
        first.close()
        second.close()
