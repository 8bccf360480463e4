"""Security through real processes: authentication, allow-lists, TLS, safe defaults.

Every attack runs while a good, authenticated client moves checksummed data
through the same server (``good_traffic``); it must all arrive intact.  Each
test then checks the attacker's outcome and the one clear line each side logs.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from certs import Authority, secret_file
from support import PortHolder, Tunnel, echo_once, good_traffic, poke

from reactor_mux.procs import ReactorMuxProcess, cpu_time, proc_status
from reactor_mux.protocol import auth
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.session import Role, Session

SECRET = "good secret, long enough to count"
FAST = ("--reconnect-min", "0.2", "--reconnect-max", "2")


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    class PKI:
        ca = Authority(tmp_path, "ca")
        other_ca = Authority(tmp_path, "other")
        server = ca.issue("server")
        expired = ca.issue("server", expired=True)
        client = ca.issue("alice", client=True)
        stranger = other_ca.issue("mallory", client=True)
        dir = tmp_path

    return PKI


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    return secret_file(tmp_path, "secret", SECRET)


def good_client(tunnel: Tunnel, target_port: int, *extra: str) -> int:
    """A client that authenticates properly; returns its -L port."""
    _proc, forwards = tunnel.client("-L", f"0:127.0.0.1:{target_port}", extra=(*extra, *FAST))
    return forwards[0][1]


def listen_port(proc: ReactorMuxProcess) -> int:
    return int(proc.wait_for(r"listening on 127.0.0.1:(\d+) for").group(1))


# ------------------------------------------------------------- authentication


def test_a_wrong_secret_is_refused_and_the_client_stops_retrying_fast(
    tunnel_with_secret, hash_target, tmp_path
):
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    wrong = secret_file(tmp_path, "wrong", "not the secret at all, but long")
    with good_traffic([port], hash_target, seed=3100):
        bad, _ = tunnel.client(
            "-L",
            f"0:127.0.0.1:{hash_target.port}",
            expect=0,
            extra=("--secret-file", str(wrong), *FAST),
        )
        line = bad.wait_for("authentication failed with server")
        assert line.string.endswith("authentication failed")
        # Backed off to the longest delay (drawn from [1, 2] s with --reconnect-max 2).
        delay = float(
            bad.wait_for(r"lost: authentication failed; reconnecting in ([0-9.]+)s").group(1)
        )
        assert delay >= 1.0
        assert poke(listen_port(bad), b"x") == "reset"  # its -L never forwards
        tunnel.server.wait_for(
            r"from 127\.0\.0\.1:\d+: closed: authentication failed: "
            r"wrong proof from '-'"
        )


def test_no_secret_against_a_server_that_requires_one(tunnel_with_secret, hash_target):
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    with good_traffic([port], hash_target, seed=3200):
        bad, _ = tunnel.client("-R", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=FAST)
        bad.wait_for("the server requires authentication and this client has no secret")
        tunnel.server.wait_for(
            "expected AUTH, got BIND: this server requires clients to authenticate"
        )
    assert "forwarding -R" not in tunnel.server.log, "a BIND was acted on"


def _handshake_bytes(server_port: int, secret: bytes) -> bytes:
    """Authenticate once, properly, over a raw socket; return what we sent."""
    session = Session(
        Role.CLIENT,
        SessionConfig(credentials=auth.Credentials(secret)),
        client_id="recorded-client-01",
    )
    sent = bytearray()
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as conn:
        while not session.ready:
            out = session.data_to_send()
            sent += out
            conn.sendall(out)
            data = conn.recv(65536)
            assert data, "closed during a good handshake"
            session.receive_data(data)
    return bytes(sent)


def _raw_exchange(server_port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server_port), timeout=10) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def _commands(wire: bytes) -> list[str]:
    frames, _consumed, _error = split_frames(wire)
    return [bytes(body).decode() for _sid, kind, body in frames if kind == 1]


def test_a_recorded_handshake_replayed_is_refused(tunnel_with_secret, hash_target):
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    with good_traffic([port], hash_target, seed=3300):
        recorded = _handshake_bytes(tunnel.server_port, SECRET.encode())
        answer = _commands(_raw_exchange(tunnel.server_port, recorded))
        assert answer[0].startswith("HELLO 1 ") and answer[-1] == "ERROR authentication failed"
        assert not any(command.startswith("AUTH OK") for command in answer)
        tunnel.server.wait_for("authentication failed: wrong proof")


def test_a_reflected_nonce_proves_nothing(tunnel_with_secret, hash_target):
    """The attacker hands the server its own challenge back as the client nonce,
    and any proof it has: the server gives no proof before the client's verifies,
    so there is nothing to reflect, and the channel is refused."""
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    with good_traffic([port], hash_target, seed=3400):
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10) as conn:
            hello = conn.recv(4096)
            challenge = _commands(hello)[0].split()[4]
            reflected = f"AUTH - {challenge} {challenge}".encode()
            hello_frame = encode_frame(0, 1, b"HELLO 1 262144 65536 reflector-0001")
            conn.sendall(hello_frame + encode_frame(0, 1, reflected))
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
        assert _commands(answer) == ["ERROR authentication failed"]


def test_an_unknown_client_name_is_refused(tmp_path, hash_target):
    clients = secret_file(tmp_path, "clients.toml", f'[clients.alice]\nsecret = "{SECRET}"\n')
    alice = secret_file(tmp_path, "alice", SECRET)
    tunnel = Tunnel(server_args=("--clients-file", str(clients)))
    try:
        port = good_client(tunnel, hash_target.port, "--secret-file", str(alice), "--name", "alice")
        with good_traffic([port], hash_target, seed=3500):
            bad, _ = tunnel.client(
                "-L",
                f"0:127.0.0.1:{hash_target.port}",
                expect=0,
                extra=("--secret-file", str(alice), "--name", "mallory", *FAST),
            )
            bad.wait_for("authentication failed with server")
            tunnel.server.wait_for("authentication failed: unknown client name 'mallory'")
        tunnel.server.wait_for("client 'alice' connected")
    finally:
        tunnel.close()


def test_an_authentication_flood_from_one_address_stays_cheap(tunnel_with_secret, hash_target):
    """Hundreds of bad handshakes from one address: most are turned away at accept,
    the log says so once per episode, and the server's memory and CPU stay small."""
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    server = tunnel.server.pid
    bad_auth = encode_frame(0, 1, b"HELLO 1 262144 65536 flooder-000001") + encode_frame(
        0, 1, b"AUTH - " + b"0" * 64 + b" " + b"0" * 64
    )
    with good_traffic([port], hash_target, seed=3600):
        rss_before, cpu_before = proc_status(server, "VmRSS"), cpu_time(server)
        started = time.monotonic()
        for _ in range(400):
            try:
                _raw_exchange(tunnel.server_port, bad_auth)
            except OSError:
                pass
        flood_seconds = time.monotonic() - started
        cpu = cpu_time(server) - cpu_before
        rss_growth = proc_status(server, "VmRSS") - rss_before
    failures = tunnel.server.count("closed: authentication failed")
    turned_away = tunnel.server.count("failed to authenticate; turned away")
    assert failures < 50, f"{failures} of 400 bad handshakes were processed in full"
    assert 1 <= turned_away <= failures, "one line per episode, not per connection"
    assert rss_growth < 2048, f"server RSS grew {rss_growth} KiB"
    # The server's CPU for 400 refused connections: well under the flood's own time
    # (a loaded machine slows the flood as much as the server).
    assert cpu < max(0.5, flood_seconds), (cpu, flood_seconds)


@pytest.fixture
def tunnel_with_secret(secret):  # type: ignore[no-untyped-def]
    tunnel = Tunnel(server_args=("--secret-file", str(secret)))
    yield tunnel, secret
    tunnel.close()


# ---------------------------------------------------------------- allow-lists


def test_disallowed_targets_by_name_by_address_and_by_what_a_name_resolves_to(
    secret, hash_target, echo
):
    tunnel = Tunnel(
        server_args=(
            "--secret-file",
            str(secret),
            "--allow-connect",
            f"127.0.0.1:{hash_target.port}",  # the good client's target
            "--allow-connect",
            f"*:{echo.port}",  # any host, but only public addresses
            "--allow-connect",
            "db.example.internal:5432",
        )
    )
    try:
        port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
        with good_traffic([port], hash_target, seed=3700):
            bad, forwards = tunnel.client(
                "-L",
                "0:intranet.example:80",  # a name no pattern allows
                "-L",
                f"0:127.0.0.1:{echo.port}",  # an address no pattern covers
                "-L",
                f"0:localhost:{echo.port}",  # allowed as written; resolves to loopback
                expect=1,
                extra=("--secret-file", str(secret), *FAST),
            )
            bad.wait_for(
                "-L 0:intranet.example:80 refused by server: intranet.example:80 is "
                "not allowed by the server's --allow-connect"
            )
            bad.wait_for(
                f"-L 0:127.0.0.1:{echo.port} refused by server: 127.0.0.1:{echo.port}"
                " is not allowed"
            )
            (_kind, rebound, target) = forwards[0]
            assert target == f"localhost:{echo.port}"
            assert poke(rebound, b"ping") == "reset"
            bad.wait_for(
                f"connect to localhost:{echo.port} failed: localhost resolves to "
                "127.0.0.1, a non-public address that no --allow-connect network "
                "covers"
            )
        assert "Traceback" not in tunnel.server.log
    finally:
        tunnel.close()


def test_a_bind_outside_the_allow_list_is_refused(secret, hash_target, echo):
    held = PortHolder()
    allowed = held.take()
    tunnel = Tunnel(
        server_args=("--secret-file", str(secret), "--allow-bind", f"127.0.0.1:{allowed}")
    )
    try:
        port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
        with good_traffic([port], hash_target, seed=3800):
            bad, forwards = tunnel.client(
                "-R",
                f"{allowed}:127.0.0.1:{echo.port}",
                "-R",
                f"0:127.0.0.1:{echo.port}",
                expect=1,
                extra=("--secret-file", str(secret), *FAST),
            )
            assert forwards[0][1] == allowed and echo_once(allowed) == b"ping"
            bad.wait_for(
                f"-R 0:127.0.0.1:{echo.port} refused by server: 127.0.0.1:0 is not "
                "allowed by the server's --allow-bind"
            )
    finally:
        tunnel.close()
        held.close()


def test_per_client_lists_replace_the_global_ones(tmp_path, hash_target, echo):
    clients = secret_file(
        tmp_path,
        "clients.toml",
        (
            f'[clients.alice]\nsecret = "{SECRET}"\n'
            f'[clients.bob]\nsecret = "{SECRET} bob"\nallow-connect = []\n'
        ),
    )
    alice, bob = (
        secret_file(tmp_path, "alice", SECRET),
        secret_file(tmp_path, "bob", SECRET + " bob"),
    )
    tunnel = Tunnel(
        server_args=(
            "--clients-file",
            str(clients),
            "--allow-connect",
            f"127.0.0.1:{hash_target.port}",
        )
    )
    try:
        port = good_client(tunnel, hash_target.port, "--secret-file", str(alice), "--name", "alice")
        with good_traffic([port], hash_target, seed=3900):
            bob_proc, _ = tunnel.client(
                "-L",
                f"0:127.0.0.1:{hash_target.port}",
                expect=0,
                extra=("--secret-file", str(bob), "--name", "bob"),
            )
            bob_proc.wait_for(
                "refused by server: .* is not allowed by the server's allow-connect of client bob"
            )
    finally:
        tunnel.close()


def test_a_hostile_server_cannot_send_the_client_anywhere_it_did_not_configure(hash_target, echo):
    """A fake server answers the client's HELLO and BINDs, then opens streams on
    every mapping number it can think of.  SYN names only a mapping, never a
    target: the client connects only to its own -R target, and fails the channel
    on SYNs for mappings that are not its -R ones."""
    decoy = socket.socket()
    decoy.bind(("127.0.0.1", 0))
    decoy.listen(8)
    decoy.settimeout(0.5)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = ReactorMuxProcess(
        [
            "client",
            "--server",
            f"127.0.0.1:{listener.getsockname()[1]}",
            "-L",
            f"0:127.0.0.1:{decoy.getsockname()[1]}",
            "-R",
            f"0:127.0.0.1:{echo.port}",
            *FAST,
        ]
    )
    try:
        conn, _ = listener.accept()
        conn.settimeout(10)
        server = Session(Role.SERVER)
        events: list[object] = []

        def pump() -> None:
            conn.sendall(server.data_to_send())
            events.extend(server.receive_data(conn.recv(65536)))

        while not any(type(e).__name__ == "MappingRequested" and e.kind.value == "bind"  # type: ignore[attr-defined]
                      for e in events):  # fmt: skip
            pump()
        server.accept_connect(1)  # the client's -L mapping is 1, its -R mapping 2
        server.accept_bind(2, "127.0.0.1", 40000)
        conn.sendall(server.data_to_send())
        client.wait_for("forwarding -R 127.0.0.1:40000")
        good = server.open_stream(2)  # legitimate: the client's own -R target
        conn.sendall(server.data_to_send())
        events.clear()
        while not any(type(e).__name__ == "StreamAccepted" for e in events):
            pump()
        server.send_data(good, b"ping")
        server.end_stream(good)
        conn.sendall(server.data_to_send())
        # Now a SYN for mapping 1 (the client's -L: the server may not open those)
        # and one for a mapping that does not exist, by hand.
        conn.sendall(encode_frame(100, 1, b"SYN 1") + encode_frame(102, 1, b"SYN 77"))
        answer = b""
        try:
            while chunk := conn.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert b"ERROR SYN names mapping 1, which was never declared with BIND" in answer
        with pytest.raises(TimeoutError):
            decoy.accept()  # nobody was sent to the -L target
        client.wait_for("lost: protocol error: SYN names mapping 1")
    finally:
        client.stop()
        decoy.close()
        listener.close()


# ------------------------------------------------------------------------ TLS


def tls_server(pki, *extra: str, cert=None) -> Tunnel:  # type: ignore[no-untyped-def]
    issued = cert or pki.server
    return Tunnel(
        server_args=("--tls-cert", str(issued.cert), "--tls-key", str(issued.key), *extra)
    )


def test_tls_with_a_ca_a_pin_and_client_certificates(pki, hash_target, secret):
    """The good paths: CA-verified, pinned, and mutual TLS with a secret on top."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from reactor_mux.tls import certificate_fingerprint

    pem = pki.server.cert.read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    pin = certificate_fingerprint(der)
    tunnel = tls_server(pki, "--tls-client-ca", str(pki.ca.path), "--secret-file", str(secret))
    try:
        mutual = (
            "--tls-cert",
            str(pki.client.cert),
            "--tls-key",
            str(pki.client.key),
            "--secret-file",
            str(secret),
        )
        by_ca = good_client(
            tunnel, hash_target.port, "--tls", "--tls-ca", str(pki.ca.path), *mutual
        )
        pinned = good_client(tunnel, hash_target.port, "--tls", "--tls-fingerprint", pin, *mutual)
        with good_traffic([by_ca, pinned], hash_target, seed=4000, size=8_000_000):
            pass
    finally:
        tunnel.close()


@pytest.mark.parametrize(
    ("how", "client_line"),
    [
        ("wrong CA", "TLS: the server's certificate was not accepted: unable to get local issuer"),
        ("wrong pin", "TLS: the server's certificate does not match --tls-fingerprint"),
        ("expired", "TLS: the server's certificate was not accepted: certificate has expired"),
        ("wrong name", "TLS: the server's certificate was not accepted: Hostname mismatch"),
    ],
)
def test_a_server_the_client_cannot_verify_is_refused(pki, hash_target, how, client_line):
    good = tls_server(pki)
    bad_server = tls_server(pki, cert=pki.expired) if how == "expired" else good
    try:
        port = good_client(good, hash_target.port, "--tls", "--tls-ca", str(pki.ca.path))
        with good_traffic([port], hash_target, seed=4100):
            extra = {
                "wrong CA": ("--tls-ca", str(pki.other_ca.path)),
                "wrong pin": ("--tls-fingerprint", "00" * 32),
                "expired": ("--tls-ca", str(pki.ca.path)),
                "wrong name": ("--tls-ca", str(pki.ca.path), "--tls-server-name", "elsewhere"),
            }[how]
            bad, _ = bad_server.client(
                "-L", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=("--tls", *extra, *FAST)
            )
            bad.wait_for(client_line)
            bad.wait_for("authentication failed with server")  # and it backs off
    finally:
        good.close()
        if bad_server is not good:
            bad_server.close()


@pytest.mark.parametrize("certificate", ["from another CA", "none"])
def test_a_client_certificate_the_server_does_not_trust_is_refused(pki, hash_target, certificate):
    tunnel = tls_server(pki, "--tls-client-ca", str(pki.ca.path))
    try:
        port = good_client(
            tunnel, hash_target.port, "--tls", "--tls-ca", str(pki.ca.path),
            "--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key),
        )  # fmt: skip
        own = ("--tls-cert", str(pki.stranger.cert), "--tls-key", str(pki.stranger.key))
        with good_traffic([port], hash_target, seed=4200):
            bad, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=(
                "--tls", "--tls-ca", str(pki.ca.path),
                *(own if certificate != "none" else ()), *FAST,
            ))  # fmt: skip
            server_line = "TLS: the client's certificate was not accepted"
            if certificate == "none":
                server_line = "TLS: the client sent no certificate"
            tunnel.server.wait_for(server_line)
            bad.wait_for(r"authentication failed with server .*: TLS")
    finally:
        tunnel.close()


def test_plaintext_against_tls_both_ways_says_so_on_each_side(pki, hash_target):
    tls = tls_server(pki)
    plain = Tunnel()
    try:
        port = good_client(tls, hash_target.port, "--tls", "--tls-ca", str(pki.ca.path))
        with good_traffic([port], hash_target, seed=4300):
            to_tls, _ = tls.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=FAST)
            to_tls.wait_for(
                re.escape(
                    "peer reported an error: this server expects TLS (start the client with --tls)"
                )
            )
            tls.server.wait_for("peer speaks plaintext; this server expects TLS")
            to_plain, _ = plain.client(
                "-L",
                f"0:127.0.0.1:{hash_target.port}",
                expect=0,
                extra=("--tls", "--tls-ca", str(pki.ca.path), *FAST),
            )
            to_plain.wait_for("server did not answer the TLS handshake")
            plain.server.wait_for("peer started a TLS handshake, and this side does not use TLS")
    finally:
        tls.close()
        plain.close()


# ------------------------------------------------------------ safe defaults


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reactor_mux", *args], capture_output=True, text=True, timeout=20
    )


def test_a_server_beyond_loopback_needs_authentication_or_insecure(secret):
    refused = run("server", "--listen", "0.0.0.0:0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "reactor-mux server: error: refusing to listen on 0.0.0.0:0 without authenticating "
        "clients: give --secret-file (or REACTOR_MUX_SECRET), --clients-file or "
        "--tls-client-ca, or --insecure to let anyone who can connect use this host "
        "(see reactor-mux server --help)"
    ]
    for args in (("--insecure",), ("--secret-file", str(secret))):
        proc = ReactorMuxProcess(["server", "--listen", "0.0.0.0:0", *args])
        try:
            proc.listening_port()
        finally:
            assert proc.stop() == 0
        warned = "has no authentication" in proc.log
        assert warned is (args == ("--insecure",))


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (("server", "--listen", "127.0.0.1:0", "--secret-file", "{open}"), "open to other users"),
        (("server", "--listen", "127.0.0.1:0", "--secret-file", "{short}"), "at least 16"),
        (("server", "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"), "go together"),
        (("client", "--server", "h:1", "-L", "1:h:2", "--tls-ca", "ca.pem"), "needs --tls"),
        (
            ("client", "--server", "h:1", "-L", "1:h:2", "--tls", "--tls-fingerprint", "ab"),
            "64 hex digits",
        ),
        (("client", "--server", "h:1", "-L", "1:h:2", "--name", "alice"), "needs a secret"),
        (("server", "--listen", "127.0.0.1:0", "--allow-connect", "2001:db8::1:80"), "brackets"),
    ],
)
def test_bad_security_options_are_one_line_errors(tmp_path, args, why):
    paths = {"{open}": str(secret_file(tmp_path, "open", SECRET, 0o644)),
             "{short}": str(secret_file(tmp_path, "short", "tiny"))}  # fmt: skip
    result = run(*[paths.get(arg, arg) for arg in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], result.stderr


def test_keygen_writes_a_private_key_and_prints_the_pin(tmp_path):
    result = run(
        "keygen",
        "--cert",
        str(tmp_path / "c.pem"),
        "--key",
        str(tmp_path / "k.pem"),
        "--name",
        "127.0.0.1",
        "--secret",
        str(tmp_path / "s"),
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "k.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "s").stat().st_mode & 0o777 == 0o600
    pin = result.stdout.split("--tls-fingerprint ", 1)[1].split()[0]
    shown = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "c.pem"), "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
    )
    if shown.returncode == 0:
        assert shown.stdout.strip().endswith(pin)
    again = run("keygen", "--cert", str(tmp_path / "c.pem"), "--key", str(tmp_path / "k.pem"))
    assert again.returncode == 1 and "exists" in again.stderr
    tunnel = Tunnel(
        server_args=("--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"))
    )
    try:
        _client, _forwards = tunnel.client(
            "-R",
            "0:127.0.0.1:9",
            extra=("--tls", "--tls-fingerprint", pin, "--secret-file", str(tmp_path / "s")),
            expect=0,
        )
        _client.wait_for("the server did not ask this client to authenticate")
    finally:
        tunnel.close()


def test_a_tls_channel_ends_in_order_and_promptly(pki, hash_target):
    """The client's close_notify (after its ERROR saying why) reaches the server,
    which closes the channel at once, without spinning on the finished session."""
    tunnel = tls_server(pki)
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                         extra=("--tls", "--tls-ca", str(pki.ca.path)))  # fmt: skip
        assert echo_once(forwards[0][1], struct_header(0)) is not None
        before = cpu_time(tunnel.server.pid)
        client.stop()
        tunnel.server.wait_for("closed: peer reported an error: client shutting down", timeout=5)
        time.sleep(0.5)  # a window in which a spinning loop would burn most of a core
        assert cpu_time(tunnel.server.pid) - before < 0.3
    finally:
        tunnel.close()


def struct_header(reply_len: int) -> bytes:
    """A hash target's request header: no reply, seed 1."""
    return reply_len.to_bytes(8, "big") + (1).to_bytes(8, "big")
