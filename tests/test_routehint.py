"""Where a resuming connection belongs (protocol/routehint.py), and the worker's
shared counters and inbox (roles/cluster.py), without a supervisor."""

from __future__ import annotations

import os
import socket
import ssl

import pytest
from inprocess import run_until

from reactor_mux.protocol.frames import encode_frame
from reactor_mux.protocol.routehint import NEED_MORE, Route, alpn_hint, route_of
from reactor_mux.roles.cluster import Cluster, WorkerPlan, page_size

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
