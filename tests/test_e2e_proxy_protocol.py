"""Behind an L4 load balancer (issue 25): HAProxy in front of the server with
``send-proxy-v2`` (and v1's ``send-proxy``), clients on loopback addresses of their
own (Linux routes all of 127.0.0.0/8; a relay connects from each), and the server
trusting HAProxy's address with ``--proxy-protocol-from``.  The address a header
names is the client's for the log, the status, the admission limits and the
penalties; HAProxy's health checks (PROXY LOCAL) are served and never penalised;
a header from anyone else is refused, as is a trusted connection without one."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from haproxy import HAPROXY, PROBE_SOURCE, LocalHaproxy
from security_support import FAST
from support import (
    ChaosRelay,
    Exchange,
    MuxProcess,
    Tunnel,
    check_exchange,
    connect_from,
    read_until_closed,
    run_exchanges,
    wait_until,
)
from test_e2e_chaos import ChaosTarget, Stream, verify
from test_e2e_resume import run_paced

from reactor_mux.protocol.frames import encode_frame
from reactor_mux.protocol.proxyheader import V2_SIGNATURE

pytestmark = [
    pytest.mark.codec_independent,
    pytest.mark.skipif(HAPROXY is None, reason="needs haproxy (Debian's package)"),
]
SIZE = 1_000_000
PROBE_PENALTY = f"{PROBE_SOURCE}/32"
"""The helper's probe that HAProxy listens: it connects and leaves."""
HELLO = encode_frame(0, 1, b"HELLO 1 262144 65536")


def behind_haproxy(secret, *extra: str, proxy: str = "send-proxy-v2"):  # type: ignore[no-untyped-def]
    penalties = "authfail:30 noauth:30 min:30"
    tunnel = Tunnel(("--secret-file", str(secret), "--proxy-protocol-from", "127.0.0.1/32",
                     "--per-source-penalties", penalties, "-v", *extra))  # fmt: skip
    balancer = LocalHaproxy([("127.0.0.1", tunnel.server_port)], proxy=proxy)
    return tunnel, balancer


def client_from(tunnel: Tunnel, balancer: LocalHaproxy, source: str, target: int,
                *extra: str):  # type: ignore[no-untyped-def]  # fmt: skip
    """A client whose connections reach HAProxy from ``source``."""
    relay = ChaosRelay(balancer.port, source=source)
    proc, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{target}",
                                         extra=("--server", f"127.0.0.1:{relay.port}",
                                                *FAST, *extra))  # fmt: skip
    return relay, proc, port


@pytest.mark.parametrize("proxy", ["send-proxy-v2", "send-proxy"])
def test_clients_behind_haproxy_keep_their_own_addresses(secret, hash_target, proxy):
    tunnel, balancer = behind_haproxy(secret, proxy=proxy)
    relays = []
    try:
        env_secret = ("--secret-file", str(secret))
        ports = []
        for source in ("127.0.0.5", "127.0.0.6"):
            relay, _proc, port = client_from(tunnel, balancer, source, hash_target.port,
                                             *env_secret)  # fmt: skip
            relays.append(relay)
            ports.append(port)
        exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed) for seed in (70, 71)]
        run_exchanges(exchanges, hash_target, ports)
        for exchange in exchanges:
            check_exchange(exchange, hash_target)
        peers = sorted(event["peer"].rsplit(":", 1)[0]
                       for event in tunnel.server.events("channel_up"))  # fmt: skip
        assert peers == ["127.0.0.5", "127.0.0.6"], tunnel.server.log
        # HAProxy's health checks (PROXY LOCAL, then a reset) every 200 ms meanwhile:
        # served, never a penalty on HAProxy's address, never a line above debug.
        assert wait_until(lambda: "health check" in tunnel.server.log)
        penalised = {event["peer"] for event in tunnel.server.events("source_penalised")}
        assert penalised <= {PROBE_PENALTY}, tunnel.server.log
        assert not [event for event in tunnel.server.events(peer=lambda p: p and p.startswith(
            "127.0.0.1:")) if event["level"] != "debug"], tunnel.server.log  # fmt: skip
    finally:
        for relay in relays:
            relay.close()
        balancer.close()
        tunnel.close()


def test_failed_authentication_penalises_only_the_client_address(secret, tmp_path, hash_target):
    tunnel, balancer = behind_haproxy(secret)
    relays = []
    try:
        wrong = tmp_path / "wrong"
        wrong.write_text("not the secret, but long enough\n")
        wrong.chmod(0o600)
        bad_relay = ChaosRelay(balancer.port, source="127.0.0.7")
        relays.append(bad_relay)
        tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0,
                      extra=("--server", f"127.0.0.1:{bad_relay.port}", "--secret-file",
                             str(wrong), *FAST))  # fmt: skip
        tunnel.server.wait_event("source_penalised", peer="127.0.0.7/32", reason="authfail")
        # Another client behind the same balancer is untouched by that penalty.
        relay, _proc, port = client_from(tunnel, balancer, "127.0.0.8", hash_target.port,
                                         "--secret-file", str(secret))  # fmt: skip
        relays.append(relay)
        exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=72)
        run_exchanges([exchange], hash_target, [port])
        check_exchange(exchange, hash_target)
        penalised = {event["peer"] for event in tunnel.server.events("source_penalised")}
        assert penalised - {PROBE_PENALTY} == {"127.0.0.7/32"}, tunnel.server.log
    finally:
        for relay in relays:
            relay.close()
        balancer.close()
        tunnel.close()


def test_a_header_from_an_untrusted_address_is_refused(secret):
    tunnel = Tunnel(("--secret-file", str(secret), "--proxy-protocol-from", "127.0.0.3/32"))
    try:
        for source, header in [
            ("127.0.0.4", b"PROXY TCP4 127.0.0.9 127.0.0.1 4242 443\r\n"),
            ("127.0.0.5", V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(12)),
        ]:
            forged = connect_from(source, tunnel.server_port)
            forged.sendall(header)
            read_until_closed(forged)
            forged.close()
            entry = tunnel.server.wait_event("channel_down", peer=lambda p, s=source: s in p)
            assert "--proxy-protocol-from" in entry["reason"]
            # A stranger's protocol error: its own address is penalised, not the one it named.
            tunnel.server.wait_event("source_penalised", peer=f"{source}/32")
        assert tunnel.server.events("channel_up") == []
    finally:
        tunnel.close()


def test_a_trusted_address_must_send_a_header(secret):
    tunnel = Tunnel(("--secret-file", str(secret), "--proxy-protocol-from", "127.0.0.3/32"))
    try:
        bare = connect_from("127.0.0.3", tunnel.server_port)
        bare.sendall(HELLO)
        assert read_until_closed(bare) == b""  # closed without a word: it is not a channel yet
        bare.close()
        entry = tunnel.server.wait_event("channel_down", peer=lambda peer: "127.0.0.3" in peer)
        assert "expected a PROXY protocol header" in entry["reason"]
        # Cut short inside a header, and a header that never ends: each closed, never
        # a penalty on the balancer's address (every client's, to the server).
        cut = connect_from("127.0.0.3", tunnel.server_port)
        cut.sendall(V2_SIGNATURE[:7])
        cut.close()
        local = connect_from("127.0.0.3", tunnel.server_port)
        local.sendall(V2_SIGNATURE + b"\x20\x00\x00\x00" + HELLO)  # LOCAL: a health check
        assert local.recv(9)  # the server's HELLO: it is served
        local.close()
        assert wait_until(lambda: tunnel.server.count_event("channel_down") >= 2)
        assert tunnel.server.events("source_penalised") == []
        again = connect_from("127.0.0.3", tunnel.server_port)
        again.sendall(b"PROXY UNKNOWN\r\n" + HELLO)
        assert again.recv(9)
        again.close()
    finally:
        tunnel.close()


def test_a_stuck_header_times_out(secret):
    tunnel = Tunnel(("--secret-file", str(secret), "--proxy-protocol-from", "127.0.0.3/32",
                     "--handshake-timeout", "1"))  # fmt: skip
    try:
        stuck = connect_from("127.0.0.3", tunnel.server_port)
        stuck.sendall(b"PROXY TCP4 127.0.0.9")
        stuck.settimeout(10)
        with pytest.raises(ConnectionResetError):
            while stuck.recv(100):
                pass
        entry = tunnel.server.wait_event("channel_down", peer=lambda peer: "127.0.0.3" in peer)
        assert "in time" in entry["reason"]
    finally:
        tunnel.close()


KEEPALIVE = ("--keepalive-interval", "0.5", "--keepalive-timeout", "1.5")


def two_nodes(secret, ports, *, reachable: bool, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    """Two hosts (127.0.0.2 and 127.0.0.3) behind HAProxy (on 127.0.0.1, connecting
    from 127.0.0.10): each with its --node-id, and an --advertise address that is
    its own listening address, or (``reachable=False``) one where nothing listens."""
    nodes = []
    for node, host in ((1, "127.0.0.2"), (2, "127.0.0.3")):
        port = ports.take()
        advertise = port if reachable else ports.take()
        nodes.append(MuxProcess(["server", "--listen", f"{host}:{port}", "--node-id", str(node),
                                 "--advertise", f"{host}:{advertise}", "--secret-file",
                                 str(secret), "--proxy-protocol-from", "127.0.0.10/32",
                                 *KEEPALIVE, *extra]))  # fmt: skip
    addresses = []
    for proc, host in zip(nodes, ("127.0.0.2", "127.0.0.3"), strict=True):
        addresses.append((host, proc.listening_port()))
    balancer = LocalHaproxy(addresses, source="127.0.0.10")
    return nodes, balancer


@pytest.mark.parametrize("reachable", [True, False], ids=["advertised", "through-haproxy"])
def test_a_cut_client_resumes_on_its_own_node(secret, ports, reachable):
    target = ChaosTarget()
    extra = () if reachable else ("--workers", "2")
    nodes, balancer = two_nodes(secret, ports, reachable=reachable, extra=extra)
    relay = ChaosRelay(balancer.port, source="127.0.0.5")
    client = None
    try:
        client = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}", "--secret-file",
                             str(secret), "-L", f"0:127.0.0.1:{target.port}", "-v",
                             *KEEPALIVE])  # fmt: skip
        [(_, port, _)] = client.forwards(1, timeout=20)
        [home] = [node for node in nodes if node.count_event("channel_up")]
        assert home.events("channel_up")[0]["peer"].startswith("127.0.0.5:")
        streams = [Stream(port, 150_000 + 9_000 * i, 200_000 + 7_000 * i, seed=41_000 + 3 * i)
                   for i in range(6)]  # fmt: skip
        threads = [threading.Thread(target=run_paced, args=(s, 8.0)) for s in streams]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: target.connections >= 6, timeout=30)
        # Resumed at its advertised address, the client no longer goes through the
        # relay, which can cut it only once; through HAProxy it can cut it every time.
        cuts = 1 if reachable else 3
        for _ in range(cuts):
            mark = client.mark
            relay.cut()
            client.wait_event("channel_resumed", start=mark, timeout=30)
            time.sleep(1.0)
        for thread in threads:
            thread.join(60)
        broken = [s.seed for s in streams if verify(s, target) != "intact"]
        assert not broken, broken
        assert client.count_event("resume_failed") == 0
        resumed = home.events("channel_resumed")
        assert len(resumed) == cuts
        peers = {event["peer"].rsplit(":", 1)[0] for event in resumed}
        # Direct to the advertised address the client comes from 127.0.0.1; through
        # HAProxy (the relay) the PROXY header names 127.0.0.5.
        assert peers == ({"127.0.0.1"} if reachable else {"127.0.0.5"}), home.log
        other = next(node for node in nodes if node is not home)
        assert other.count_event("channel_up") == 0 and other.count_event("channel_resumed") == 0
        if not reachable:  # HAProxy's round robin sent each resume to the other node first
            told = other.events("channel_down", peer=lambda peer: peer.startswith("127.0.0.5:"))
            assert len(told) == cuts and {event["level"] for event in told} == {"info"}
            assert other.events("source_penalised") == []
    finally:
        relay.close()
        for proc in [client, *nodes]:
            if proc is not None:
                proc.stop()
                assert "Traceback" not in proc.log
        balancer.close()
        target.close()


def test_two_nodes_behind_haproxy_see_each_client_address(secret, ports, tmp_path, hash_target):
    """The address checks of the single-node tests above, with two nodes behind
    HAProxy: relayed clients appear with their own addresses on whichever node they
    land, a client's failed authentications penalise only its address, and a forged
    header straight to a node from an untrusted address is refused."""
    nodes, balancer = two_nodes(secret, ports, reachable=True)
    relays = []
    try:
        for source in ("127.0.0.5", "127.0.0.6"):
            relay = ChaosRelay(balancer.port, source=source)
            relays.append(relay)
            client = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}",
                                 "--secret-file", str(secret), "-L",
                                 f"0:127.0.0.1:{hash_target.port}", *FAST])  # fmt: skip
            [(_, port, _)] = client.forwards(1, timeout=20)
            exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=80 + len(relays))
            run_exchanges([exchange], hash_target, [port])
            check_exchange(exchange, hash_target)
            assert client.stop() == 0
        peers = sorted(event["peer"].rsplit(":", 1)[0] for node in nodes
                       for event in node.events("channel_up"))  # fmt: skip
        assert peers == ["127.0.0.5", "127.0.0.6"]
        wrong = tmp_path / "wrong"
        wrong.write_text("not the secret, but long enough\n")
        wrong.chmod(0o600)
        bad_relay = ChaosRelay(balancer.port, source="127.0.0.7")
        relays.append(bad_relay)
        bad = MuxProcess(["client", "--server", f"127.0.0.1:{bad_relay.port}", "--persist",
                          "--secret-file", str(wrong), "-L", "0:127.0.0.1:9", *FAST])  # fmt: skip
        assert wait_until(lambda: any(node.count_event("source_penalised", peer="127.0.0.7/32")
                                      for node in nodes), timeout=20)  # fmt: skip
        bad.stop()
        penalised = {event["peer"] for node in nodes for event in node.events("source_penalised")}
        assert penalised - {PROBE_PENALTY} == {"127.0.0.7/32"}
        forged = socket.create_connection(("127.0.0.2", nodes[0].listening_port()), timeout=10,
                                          source_address=("127.0.0.4", 0))  # fmt: skip
        forged.sendall(b"PROXY TCP4 127.0.0.9 127.0.0.1 4242 443\r\n")
        read_until_closed(forged)
        forged.close()
        entry = nodes[0].wait_event("channel_down", peer=lambda p: p.startswith("127.0.0.4:"))
        assert "--proxy-protocol-from" in entry["reason"]
    finally:
        for relay in relays:
            relay.close()
        for node in nodes:
            node.stop()
            assert "Traceback" not in node.log
        balancer.close()
