"""The TLS transport in-process: two ``TlsTransport``s on a socketpair, each
driving a recording protocol, on one real reactor.  The order of events is
under the test's control, which end-to-end runs cannot promise."""

from __future__ import annotations

import hashlib
import select
import socket
import struct
from pathlib import Path

import pytest
from certs import Authority
from inprocess import run_until

from reactor_mux.io import nativetls
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.tls import (
    STRANGER_SEND_BACKLOG,
    TLS_SEND_BACKLOG,
    ClientTls,
    ServerTls,
    TlsTransport,
)
from reactor_mux.protocol.errorcodes import ErrorCode

pytestmark = pytest.mark.codec_independent


class Recorder:
    """A stand-in for the channel: a receive buffer, and what happened to it."""

    name = "recorder"

    def __init__(self, buffer_size: int = 64 * 1024) -> None:
        self.buffer = bytearray(buffer_size)
        self.received = bytearray()
        self.eof = 0
        self.failures: list[tuple[str, bool]] = []
        self.codes: list[ErrorCode | None] = []
        self.writable = 0
        self.transport: TlsTransport | None = None
        self.pause_after: int | None = None

    def get_buffer(self) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, count: int) -> None:
        self.received += self.buffer[:count]
        if self.pause_after is not None and len(self.received) >= self.pause_after:
            assert self.transport is not None
            self.transport.set_interest(read=False, write=False)

    def eof_received(self) -> None:
        self.eof += 1

    def transport_failed(
        self, reason: str, *, authentication: bool = False, code: ErrorCode | None = None
    ) -> None:
        self.failures.append((reason, authentication))
        self.codes.append(code)

    def write_ready(self) -> None:
        self.writable += 1

    def close_after_bug(self) -> None:
        raise AssertionError("a callback raised")


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    ca = Authority(tmp_path, "ca")
    return ca, ca.issue("server")


def pair(reactor: Reactor, pki, *, fingerprint: str | None = None):  # type: ignore[no-untyped-def]
    ca, issued = pki
    server_tls = ServerTls.from_files(issued.cert, issued.key, None)
    client_tls = ClientTls.from_options(ca=None if fingerprint else ca.path, server_name=None,
                                        fingerprint=fingerprint, cert=None, key=None,
                                        insecure=False)  # fmt: skip
    near, far = socket.socketpair()
    pin = client_tls.fingerprint
    client = TlsTransport(reactor, near, 15, client_tls.context, server_side=False,
                          server_hostname="127.0.0.1", fingerprint=pin)  # fmt: skip
    server = TlsTransport(reactor, far, 15, server_tls.context, server_side=True)
    ends = Recorder(), Recorder()
    for transport, recorder in zip((client, server), ends, strict=True):
        recorder.transport = transport
        transport.attach(recorder)
        transport.set_interest(read=True, write=False)
    return client, server, ends[0], ends[1]


def test_data_then_close_notify_in_one_read_ends_once_and_stops(reactor, pki):
    """The client sends its last data and close_notify back to back; the server
    reads both in one go: all the data, one orderly EOF, and then nothing more."""
    client, server, at_client, at_server = pair(reactor, pki)
    run_until(reactor, lambda: at_client.writable and at_server.writable)  # handshakes done
    client.send([memoryview(b"last words")])
    client.close()
    run_until(reactor, lambda: at_server.eof == 1)
    assert bytes(at_server.received) == b"last words" and not at_server.failures
    server.close()


def test_bulk_both_ways_arrives_intact(reactor, pki):
    client, server, at_client, at_server = pair(reactor, pki)
    run_until(reactor, lambda: at_client.writable and at_server.writable)
    payload = hashlib.sha256(b"seed").digest() * 100_000  # 3.2 MB
    sent = 0

    def push() -> bool:
        nonlocal sent
        while sent < len(payload):
            try:
                sent += client.send([memoryview(payload)[sent : sent + 300_000]])
            except BlockingIOError:
                client.set_interest(read=True, write=True)
                return False
        return len(at_server.received) == len(payload)

    run_until(reactor, push, timeout=30)
    assert hashlib.sha256(at_server.received).digest() == hashlib.sha256(payload).digest()
    client.close()
    server.close()


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "stranger"])
def test_a_slow_socket_makes_send_refuse_more_than_the_backlog(reactor, pki, trusted):
    """The backlog is TLS_SEND_BACKLOG once the peer proved itself (``trust``),
    STRANGER_SEND_BACKLOG before."""
    client, server, at_client, at_server = pair(reactor, pki)
    run_until(reactor, lambda: at_client.writable and at_server.writable)
    if trusted:
        client.trust()
    server.set_interest(read=False, write=False)  # nobody reads: the socket fills up
    taken = 0
    with pytest.raises(BlockingIOError):
        for _ in range(1000):
            taken += client.send([memoryview(bytes(64 * 1024))])
    assert taken < 64 * 1024 * 1000
    backlog = TLS_SEND_BACKLOG if trusted else STRANGER_SEND_BACKLOG
    held = client._cipher_waiting()
    assert backlog <= held < backlog + 80 * 1024  # one batch over at most
    client.close()
    server.close()


def test_decrypted_bytes_wait_for_a_paused_reader_and_come_without_a_readiness_event(reactor, pki):
    """The reader pauses mid-stream with plaintext already decrypted: on resuming
    it gets the rest even though no more ciphertext ever arrives."""
    client, server, at_client, at_server = pair(reactor, pki)
    run_until(reactor, lambda: at_client.writable and at_server.writable)
    at_server.pause_after = 1
    client.send([memoryview(b"x" * 100_000)])
    run_until(reactor, lambda: len(at_server.received) >= 1)
    got = len(at_server.received)
    assert got < 100_000
    at_server.pause_after = None
    server.set_interest(read=True, write=False)
    run_until(reactor, lambda: len(at_server.received) == 100_000)
    client.close()
    server.close()


def test_a_wrong_pin_fails_the_client_as_an_authentication_failure(reactor, pki):
    client, server, at_client, _at_server = pair(reactor, pki, fingerprint="ab" * 32)
    run_until(reactor, lambda: bool(at_client.failures))
    reason, authentication = at_client.failures[0]
    assert "does not match --tls-fingerprint" in reason and authentication
    client.close()
    server.close()


def test_a_plaintext_peer_is_told_the_server_expects_tls(reactor, pki):
    _ca, issued = pki
    near, far = socket.socketpair()
    server = TlsTransport(reactor, far, 15, ServerTls.from_files(issued.cert, issued.key,
                                                                None).context,
                          server_side=True)  # fmt: skip
    recorder = Recorder()
    server.attach(recorder)
    near.sendall(b"\x00\x00\x00\x14\x00\x00\x00\x00\x01HELLO 1 262144 65536")
    run_until(reactor, lambda: bool(recorder.failures))
    assert "peer speaks plaintext" in recorder.failures[0][0]
    assert recorder.codes == [ErrorCode.TLS]  # the server penalises it as a TLS failure
    near.settimeout(5)
    assert b"ERROR tls: this server expects TLS" in near.recv(4096)
    server.close()
    near.close()


def test_a_connection_reset_before_the_client_hello_is_a_failure_not_a_bug(reactor, pki):
    """Found by the admission tests: a server (or a relay in front of it) that resets
    the connection at once made the client's first send raise inside ``attach``,
    which the reactor took for a bug in the channel."""
    ca, _issued = pki
    listener = socket.create_server(("127.0.0.1", 0))
    near = socket.create_connection(listener.getsockname())
    far, _ = listener.accept()
    far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    far.close()  # a reset
    listener.close()
    assert select.select([near], [], [], 5)[0]  # the RST has come back: a reset reads as ready
    context = ClientTls.from_options(ca=ca.path, server_name=None, fingerprint=None, cert=None,
                                     key=None, insecure=False).context  # fmt: skip
    client = TlsTransport(reactor, near, 15, context, server_side=False,
                          server_hostname="127.0.0.1")  # fmt: skip
    recorder = Recorder()
    client.attach(recorder)  # must not raise
    run_until(reactor, lambda: bool(recorder.failures))
    assert recorder.codes == [ErrorCode.PEER_CLOSED]
    assert "reset" in recorder.failures[0][0] or "broken pipe" in recorder.failures[0][0]
    client.close()


@pytest.mark.parametrize(
    ("client_sends", "code"),
    [
        # Garbage after a handshake record's first bytes: a TLS failure, not a
        # failed authentication (found in review, issue 20: every SSLError counted as one).
        (bytes.fromhex("160301002c") + bytes(range(44)), ErrorCode.TLS),
        # Half a ClientHello, then the connection closes: a peer that went away.
        (bytes.fromhex("16030100f5010000f10303") + bytes(40), ErrorCode.PEER_CLOSED),
    ],
)
def test_a_failed_tls_handshake_is_classed_by_what_failed(reactor, pki, client_sends, code):
    _ca, issued = pki
    near, far = socket.socketpair()
    context = ServerTls.from_files(issued.cert, issued.key, None).context
    server = TlsTransport(reactor, far, 15, context, server_side=True)
    recorder = Recorder()
    server.attach(recorder)
    near.sendall(client_sends)
    near.shutdown(socket.SHUT_WR)
    run_until(reactor, lambda: bool(recorder.failures))
    assert recorder.codes[0] == code, recorder.failures  # (a channel closes at the first)
    assert recorder.failures[0][1] is False  # never an authentication failure
    server.close()
    near.close()


@pytest.mark.skipif(
    not nativetls.available(), reason="the plane cannot take over TLS sessions here"
)
def test_the_planes_buffers_take_an_open_trusted_session_and_bytes_still_flow(reactor, pki):
    """Records go to the plane's own output buffer once the handshake is done;
    received ciphertext goes to its own input only once the peer is trusted (a
    stranger's input stays small).  Python's path keeps working over both, in
    order with what was in the memory BIOs: 3.2 MB each way arrive intact."""
    client, server, at_client, at_server = pair(reactor, pki)
    run_until(reactor, lambda: at_client.writable and at_server.writable)
    assert not client._own_input and not server._own_input
    client.trust()
    server.trust()
    assert client._own_input and server._own_input
    payload = hashlib.sha256(b"own buffers").digest() * 100_000
    sent = {id(client): 0, id(server): 0}

    def push(sender: TlsTransport) -> None:
        while sent[id(sender)] < len(payload):
            start = sent[id(sender)]
            try:
                sent[id(sender)] += sender.send([memoryview(payload)[start : start + 300_000]])
            except BlockingIOError:
                sender.set_interest(read=True, write=True)
                return

    def both_done() -> bool:
        push(client)
        push(server)
        return len(at_server.received) == len(at_client.received) == len(payload)

    run_until(reactor, both_done, timeout=30)
    assert bytes(at_server.received) == bytes(at_client.received) == payload
    client.close()
    run_until(reactor, lambda: at_server.eof == 1)  # close_notify, through the own buffers
    server.close()
