"""A TLS channel driven by the data plane (csrc/rmux_tls.c, io/nativetls.py).

Python's ssl makes the session; once it is open the plane reads and writes the
channel's records itself through the same OpenSSL objects.  Checked here in
one process, on real loopback sockets: bytes intact both ways with the plane
doing the records, the cipher the plane's sessions ask for, and how the
channel ends when the records go wrong under the plane (a flipped byte, the
socket cut without close_notify): one line naming TLS, never a traceback.
Both data paths meet on the wire in tests/test_e2e_tls.py's interop test.
"""

from __future__ import annotations

import itertools
import socket
import struct
import threading

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import Exchange, check_exchange, drain, payload, run_exchange, sha, wait_until

from reactor_mux.io import nativetls
from reactor_mux.io import plane as data_plane
from reactor_mux.io.tls import ClientTls, ServerTls, TlsTransport
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles.client import Client, ClientConfig
from reactor_mux.roles.server import Server, ServerConfig
from reactor_mux.roles.specs import ForwardKind, parse_forward
from reactor_mux.tunnel.settings import ChannelSettings

pytestmark = pytest.mark.skipif(
    not (data_plane.enabled() and nativetls.available()),
    reason="the plane drives TLS only with the compiled plane and CPython's _ssl shared module",
)


class FlippingRelay:
    """A TCP relay for one connection that damages one direction (what the
    client sends, or with ``downstream`` what the server sends) ``flip_at``
    bytes in: flips a byte there, or with ``cut`` ends that direction there (a
    FIN with no close_notify before it), or with ``garbage`` puts those bytes
    there instead of the rest."""

    def __init__(self, target_port: int, flip_at: int | None, cut: bool = False,
                 downstream: bool = False, garbage: bytes = b"") -> None:  # fmt: skip
        self.target = ("127.0.0.1", target_port)
        self.flip_at, self.cut, self.garbage = flip_at, cut, garbage
        self.downstream = downstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        near, _ = self.sock.accept()
        far = socket.create_connection(self.target)
        up, down = (None, self.flip_at) if self.downstream else (self.flip_at, None)
        threading.Thread(target=self._pipe, args=(far, near, down), daemon=True).start()
        self._pipe(near, far, up)
        self.done.set()

    def _pipe(self, source: socket.socket, sink: socket.socket, flip_at: int | None) -> None:
        seen = 0
        try:
            while chunk := bytearray(source.recv(65536)):
                if flip_at is not None and seen <= flip_at < seen + len(chunk):
                    if self.cut or self.garbage:
                        sink.sendall(chunk[: flip_at - seen] + self.garbage)
                        sink.shutdown(socket.SHUT_WR)
                        return
                    chunk[flip_at - seen] ^= 0x40
                seen += len(chunk)
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def start_pair(loop, pki, hash_port, via=None, settings=None):  # type: ignore[no-untyped-def]
    """A TLS server and a client with ``-L 0:127.0.0.1:hash_port`` (through the
    relay at ``via`` if given), both on the test's reactor, both with ``settings``
    (a ``ChannelSettings``) where given."""
    channel_settings = ChannelSettings() if settings is None else settings
    server = Server(loop.reactor, loop.resolver,
                    ServerConfig(listen=[("127.0.0.1", 0)],
                                 tls=ServerTls.from_files(pki.server.cert, pki.server.key,
                                                          None),
                                 settings=channel_settings))  # fmt: skip
    loop.call(server.start)
    port = server.listeners[0].port
    relay = None if via is None else via(port)
    client_tls = ClientTls.from_options(ca=pki.ca.path, server_name=None, fingerprint=None,
                                        cert=None, key=None, insecure=False)  # fmt: skip
    # persist: garbage in a handshake must not make the client exit under the test
    config = ClientConfig(server=("127.0.0.1", port if relay is None else relay.port),
                          forwards=[parse_forward(ForwardKind.LOCAL, f"0:127.0.0.1:{hash_port}")],
                          tls=client_tls, reconnect_min=30, reconnect_max=30,
                          persist=True, settings=channel_settings)  # fmt: skip
    client = Client(loop.reactor, loop.resolver, config)
    loop.call(client.start)
    return server, client, relay


def stop_pair(loop, server, client, relays):  # type: ignore[no-untyped-def]
    loop.call(client.close)
    loop.call(server.close)
    for relay in relays:
        relay.close()


def open_channels(loop, server, client):  # type: ignore[no-untyped-def]
    def held():  # type: ignore[no-untyped-def]
        ready = [channel for channel in server.clients if channel.ready]
        return ready[0] if ready else None

    loop.wait(lambda: client.channel is not None and client.channel.ready and held() is not None)
    return client.channel, loop.call(held)


def local_port(loop, client) -> int:  # type: ignore[no-untyped-def]
    """Where the client's one ``-L`` listens (bound at start)."""
    listeners = loop.call(lambda: list(client.local_listeners.values()))
    return int(listeners[0].port)


def test_bytes_cross_intact_with_the_plane_doing_every_record(loop, pki, hash_target):
    server, client, _ = start_pair(loop, pki, hash_target.port)
    try:
        ours, theirs = open_channels(loop, server, client)
        python_sent = {id(ours): 0, id(theirs): 0}
        for channel in (ours, theirs):  # count the bytes Python's path encrypts and sends
            transport = channel.transport
            send = transport.send

            def spy(views, key: int = id(channel), send=send) -> int:  # type: ignore[no-untyped-def]
                taken = send(views)
                python_sent[key] += taken
                return int(taken)

            loop.call(lambda t=transport, f=spy: setattr(t, "send", f))
        exchanges = [Exchange(send_len=6_000_000, reply_len=6_000_000, seed=7100 + i)
                     for i in range(3)]  # fmt: skip
        port = local_port(loop, client)
        threads = [threading.Thread(target=run_exchange, args=(port, ex)) for ex in exchanges]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for ex in exchanges:
            check_exchange(ex, hash_target)
        for channel in (ours, theirs):
            transport = channel.transport
            assert isinstance(transport, TlsTransport)
            session = transport.plane_socket()[1]
            assert session, "the plane was not given the TLS session"
            assert nativetls.cipher(session) == "TLS_AES_128_GCM_SHA256"
            # The plane read records (Python's path counts none) and sent them.
            assert loop.call(lambda c=channel: c._plane.channel_reads) > 10
            # Python's path sends what is queued whenever the socket was full, so
            # its share varies (a quarter to a third here): the plane's is at
            # least 2 MB of the 18.
            assert python_sent[id(channel)] < 16_000_000, "the plane sent next to nothing"
    finally:
        stop_pair(loop, server, client, [])


def test_an_idle_server_channel_gives_back_what_a_burst_grew_while_the_client_pings(
    loop, pki, hash_target
):
    """Keepalive at 0.4 s on both sides: once the upload ends, the client's PINGs
    (answered by the server's plane) are the channel's only traffic, and the
    server's ticks still find it quiet and give back the receive buffer the
    upload grew (a server ticks 1.125 intervals after what it heard, so a rule
    of "nothing read since the last tick" would never find it quiet)."""
    fast = ChannelSettings(keepalive_interval=0.4, keepalive_timeout=10.0)
    server, client, _ = start_pair(loop, pki, hash_target.port, settings=fast)
    try:
        _ours, theirs = open_channels(loop, server, client)

        def receive_buffer() -> int:
            rx = loop.call(lambda: theirs._session.receive_state)
            return int(rx.buffer_length)

        small = receive_buffer()
        exchange = Exchange(send_len=8_000_000, reply_len=1000, seed=7300)
        run_exchange(local_port(loop, client), exchange)
        check_exchange(exchange, hash_target)
        grown = receive_buffer()
        assert grown > small, "the upload did not grow the server's receive buffer"
        assert wait_until(lambda: receive_buffer() <= small, timeout=10), (
            f"still {receive_buffer()} bytes, {small} before the upload"
        )
        assert theirs.ready and not theirs.closed  # the PINGs kept it alive all along
    finally:
        stop_pair(loop, server, client, [])


@pytest.mark.parametrize("cut", [False, True], ids=["flipped-byte", "cut-without-close-notify"])
def test_records_gone_wrong_under_the_plane_end_the_channel_in_one_line(
    loop, pki, hash_target, log_records, cut
):
    """3 MB into the client's ciphertext (long after the handshake, while the
    server's plane reads a bulk upload) one byte flips, or the connection ends.
    The reason is in the words Python's path would use too (the same OpenSSL
    reason), so this checks the outcome, not which path met the damage."""
    relays: list[FlippingRelay] = []

    def via(port: int) -> FlippingRelay:
        relays.append(FlippingRelay(port, flip_at=3_000_000, cut=cut))
        return relays[0]

    server, client, _ = start_pair(loop, pki, hash_target.port, via)
    try:
        ours, theirs = open_channels(loop, server, client)
        upload = socket.create_connection(("127.0.0.1", local_port(loop, client)), timeout=30)
        with upload:
            upload.sendall(struct.pack(">QQ", 10, 7200))  # the hash target's request
            try:
                upload.sendall(bytes(8_000_000))
            except OSError:
                pass  # the stream was reset under the upload
            loop.wait(lambda: theirs.closed, timeout=30)
        if cut:
            assert theirs.close_reason == "the peer closed the connection without ending TLS"
            assert theirs.close_code is ErrorCode.PEER_CLOSED
        else:
            assert theirs.close_reason.startswith("TLS: "), theirs.close_reason
            assert "RECORD_MAC" in theirs.close_reason or "DECRYPT" in theirs.close_reason
            assert theirs.close_code is ErrorCode.TLS
            # The server's alert reaches the client, whose plane reads it, unless
            # the client's next send meets the closed socket first.
            loop.wait(lambda: ours.closed, timeout=30)
            assert ours.close_reason.startswith(
                ("TLS: the server ended the session with an alert", "channel write failed")
            ), ours.close_reason
        # Nothing after the damage reached the target: the stream was reset.
        assert hash_target.received.get(7200, (0, ""))[0] < 8_000_000
        assert not [r for r in log_records.records if r.exc_info], "a traceback was logged"
    finally:
        stop_pair(loop, server, client, relays)


SEEDS = itertools.count(7400)

DAMAGE = st.tuples(
    st.sampled_from(["flip", "cut", "garbage"]),
    st.booleans(),  # downstream: what the server sends
    st.integers(min_value=0, max_value=3_000_000),  # where: in the handshake too
    st.binary(min_size=1, max_size=64),
)


def two_way_transfer(port: int, target, seed: int, size: int) -> bool:  # type: ignore[no-untyped-def]
    """``size`` bytes each way through ``port`` to the hash target; True when both
    arrived intact, False when the connection failed or cut them short."""
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=20)
    except OSError:
        return False
    with conn:

        def upload() -> None:
            try:
                conn.sendall(payload(seed + 1, size))
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the stream was reset under it: the reply says so

        sender = threading.Thread(target=upload)
        try:
            conn.sendall(struct.pack(">QQ", size, seed))
            sender.start()
            received = drain(conn)
        except OSError:
            return False
        finally:
            if sender.ident is not None:
                sender.join(30)
    if received != (size, sha(payload(seed, size))):
        return False
    return wait_until(lambda: seed in target.received, timeout=10) and target.received[seed] == (
        size,
        sha(payload(seed + 1, size)),
    )


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(damage=DAMAGE)
@example(damage=("flip", False, 50_000_000, b"\x00"))  # the control: nothing is damaged
def test_damage_anywhere_in_either_direction_ends_cleanly_or_not_at_all(
    loop, pki, hash_target, log_records, damage
):
    """Wherever one direction's ciphertext is damaged (a flipped byte, a cut,
    garbage for the rest), in the handshake or under the plane: the transfer
    either arrives intact (the damage came after it) or a channel ends with a
    reason, and nothing logs a traceback or hangs."""
    kind, downstream, where, garbage = damage
    relays: list[FlippingRelay] = []

    def via(port: int) -> FlippingRelay:
        relays.append(FlippingRelay(port, flip_at=where, cut=kind == "cut",
                                    downstream=downstream,
                                    garbage=garbage if kind == "garbage" else b""))  # fmt: skip
        return relays[0]

    seed = next(SEEDS)  # the hash target outlives the examples: a seed each
    server, client, _ = start_pair(loop, pki, hash_target.port, via)
    try:
        # The channel opens, or the damage in its handshake ended the attempt (the
        # client has no channel, and its connection through the relay is over).
        attempt_over = relays[0].done.is_set
        loop.wait(lambda: (client.channel is not None and client.channel.ready)
                  or (client.channel is None and attempt_over()), timeout=15)  # fmt: skip
        opened = loop.call(lambda: client.channel is not None)
        intact = opened and two_way_transfer(local_port(loop, client), hash_target, seed,
                                             1_500_000)  # fmt: skip
        if where > 10_000_000:  # past all the transfer's ciphertext: no damage at all
            assert intact, "an undamaged transfer did not arrive intact"
        elif not intact:  # the damage ended the channel, on the client's side at least
            loop.wait(lambda: client.channel is None or client.channel.closed, timeout=30)
        assert not [r for r in log_records.records if r.exc_info], "a traceback was logged"
    finally:
        stop_pair(loop, server, client, relays)
