"""Authentication through real processes: secrets, names, replay, reflection, floods,
and the safe default.

Every attack runs while a good, authenticated client moves checksummed data
through the same server (``good_traffic``); it must all arrive intact.  What
these tests decide happens beside the frame codec, and the data paths they use
run with both codecs in the tunnel tests, so they run once (compiled pass).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time

import pytest
from certs import Authority, secret_file
from security_support import FAST, SECRET, good_client, listen_port, run
from support import (
    MuxProcess,
    Tunnel,
    connect_from,
    gave_up,
    good_traffic,
    poke,
    read_until_closed,
    wait_until,
)

from reactor_mux.protocol import auth
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.frames import encode_frame, split_frames
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import Role
from reactor_mux.security.keygen import generate
from reactor_mux.tools.procs import cpu_time, proc_status

pytestmark = pytest.mark.codec_independent


# ------------------------------------------------------------- authentication


def test_a_wrong_secret_is_refused_and_the_client_exits_at_once(
    tunnel_with_secret, hash_target, tmp_path
):
    """As ssh does: one line, status 255, no retry that cannot help."""
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    wrong = secret_file(tmp_path, "wrong", "not the secret at all, but long")
    with good_traffic([port], hash_target, seed=3150):
        bad, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0,
                               extra=("--secret-file", str(wrong), *FAST))  # fmt: skip
        line = gave_up(bad, "auth_failed")
        assert "refused this client" in line["message"] and "--persist" in line["message"]
        assert bad.count_event("connecting") == 1
        tunnel.server.wait_event("channel_down", peer=re.compile(r"^127\.0\.0\.1:"),
                                 reason=re.compile("wrong proof"))  # fmt: skip


def test_with_persist_a_wrong_secret_is_retried_at_the_longest_delay(
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
            extra=("--secret-file", str(wrong), "--persist", *FAST),
        )
        # One line, backed off to the longest delay (from [1, 2] s with --reconnect-max 2).
        retry = bad.wait_event("auth_failed")
        assert (
            retry["delay"] >= 1.0
            and retry["message"].startswith("server 127.0.0.1:")
            and "refused this client: authentication failed; reconnecting in" in retry["message"]
        )
        assert bad.events("channel_down") == []
        assert poke(listen_port(bad), b"x") == "reset"  # its -L never forwards
        tunnel.server.wait_event("channel_down", peer=re.compile(r"^127\.0\.0\.1:"),
                                 reason=re.compile("wrong proof"))  # fmt: skip


def test_no_secret_against_a_server_that_requires_one(tunnel_with_secret, hash_target):
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    with good_traffic([port], hash_target, seed=3200):
        bad, _ = tunnel.client("-R", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=FAST)
        bad.wait_event("auth_failed")
        tunnel.server.wait_event("channel_down", reason=re.compile("expected AUTH, got BIND"))
    assert tunnel.server.events("mapping_up", mapping=re.compile("^-R")) == [], "a BIND acted on"


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


def _raw_exchange(server_port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    with connect_from(source, server_port) as conn:
        conn.sendall(data)
        return read_until_closed(conn)


def _commands(wire: bytes) -> list[str]:
    frames, _consumed, _error = split_frames(wire)
    return [bytes(body).decode() for _sid, kind, body in frames if kind == 1]


def test_a_recorded_handshake_replayed_is_refused(tunnel_with_secret, hash_target):
    tunnel, secret = tunnel_with_secret
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret))
    with good_traffic([port], hash_target, seed=3300):
        recorded = _handshake_bytes(tunnel.server_port, SECRET.encode())
        answer = _commands(_raw_exchange(tunnel.server_port, recorded))
        assert (
            answer[0].startswith("HELLO 1 ") and answer[-1] == "ERROR auth: authentication failed"
        )
        assert not any(command.startswith("AUTH OK") for command in answer)
        tunnel.server.wait_event("channel_down", reason=re.compile("wrong proof"))


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
        assert _commands(answer) == ["ERROR auth: authentication failed"]


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
            bad.wait_event("auth_failed")
            tunnel.server.wait_event("channel_down", reason=re.compile("'mallory'"))
        tunnel.server.wait_event("channel_up", client="alice")
    finally:
        tunnel.close()


def test_an_authentication_flood_from_one_address_stays_cheap(secret, hash_target):
    """Hundreds of bad handshakes from one address: after the first few its source is
    penalised and turned away at accept, the log says so in a few lines, and the
    server's memory and CPU stay small; the good client on another address never
    notices.  The good traffic's windows do not grow (--max-window 256K at both
    ends): a grown window's buffers, held at the moment RSS is sampled, would be
    counted against the flood (up to 4 MiB a stream; found 1 run in 6 under load)."""
    fixed = ("--max-window", "256K")
    tunnel = Tunnel(server_args=("--secret-file", str(secret), *fixed))
    port = good_client(tunnel, hash_target.port, "--secret-file", str(secret), *fixed)
    try:
        server = tunnel.server.pid
        bad_auth = encode_frame(0, 1, b"HELLO 1 262144 65536 flooder-000001") + encode_frame(
            0, 1, b"AUTH - " + b"0" * 64 + b" " + b"0" * 64
        )
        with good_traffic([port], hash_target, seed=3600) as transfers:
            # The good streams' rings reach their working size first: a few whole exchanges.
            assert wait_until(lambda: sum(ex.done.is_set() for ex in transfers) >= 3, timeout=60)
            rss_before, cpu_before = proc_status(server, "VmRSS"), cpu_time(server)
            started = time.monotonic()
            for _ in range(400):
                try:
                    _raw_exchange(tunnel.server_port, bad_auth, source="127.0.0.2")
                except OSError:
                    pass
            flood_seconds = time.monotonic() - started
            cpu = cpu_time(server) - cpu_before
            rss_growth = proc_status(server, "VmRSS") - rss_before
        # authfail is 5 s and min 15 s: the third failure starts the penalty, and the
        # rest are turned away at accept, counted for the summary at the end of 10 s.
        flood = [event for event in tunnel.server.events()
                 if str(event["peer"]).startswith("127.0.0.2")]  # fmt: skip
        failures = [event for event in flood if event["event"] == "channel_down"]
        assert len(failures) == 3, f"{len(failures)} of 400 bad handshakes were processed in full"
        [penalty] = [event for event in flood if event["event"] == "source_penalised"]
        assert penalty["peer"] == "127.0.0.2/32" and penalty["reason"] == "authfail"
        assert round(penalty["delay"]) == 15  # the min of 15 s
        assert len(flood) == 4, "one line per failure, one for the penalty, then none"
        assert rss_growth < 2048, f"server RSS grew {rss_growth} KiB"
        # The server's CPU for 400 refused connections: well under the flood's own time
        # (a loaded machine slows the flood as much as the server).
        assert cpu < max(0.5, flood_seconds), (cpu, flood_seconds)
    finally:
        tunnel.close()


# ------------------------------------------------------------ safe defaults


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
        proc = MuxProcess(["server", "--listen", "0.0.0.0:0", *args])
        try:
            proc.listening_port()
        finally:
            assert proc.stop() == 0
        warned = bool(proc.events("unauthenticated_listener"))
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
        (
            ("server", "--listen", "127.0.0.1:0", "--tls-cert", "{key}", "--tls-key", "{cert}"),
            "holds a private key and --tls-key",
        ),
        (
            ("server", "--listen", "127.0.0.1:0", "--tls-cert", "{cert}", "--tls-key", "{cert}"),
            "holds no private key",
        ),
        (
            ("client", "h", "-L", "1:h:2", "--tls", "--tls-cert", "{key}", "--tls-key", "{key}"),
            "holds no certificate",
        ),
    ],
)
def test_bad_security_options_are_one_line_errors(tmp_path, args, why):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate(cert, key, ["127.0.0.1"])
    cert.chmod(0o600)  # a swapped certificate must pass the key's owner-only check
    paths = {"{open}": str(secret_file(tmp_path, "open", SECRET, 0o644)),
             "{short}": str(secret_file(tmp_path, "short", "tiny")),
             "{cert}": str(cert), "{key}": str(key)}  # fmt: skip
    result = run(*[paths.get(arg, arg) for arg in args])
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0], result.stderr


@pytest.mark.parametrize("role", ["server", "client"])
def test_a_tls_key_others_can_read_is_refused_like_a_secret(tmp_path, role):
    """Found in review (issue 20): --tls-key was loaded whatever its mode."""
    issued = Authority(tmp_path, "ca").issue("127.0.0.1", client=role == "client")
    issued.key.chmod(0o640)
    if role == "server":
        args = ("server", "--listen", "127.0.0.1:0")
    else:
        args = ("client", "--server", "127.0.0.1:1", "-L", "1:h:2", "--tls", "--tls-insecure")
    result = run(*args, "--tls-cert", str(issued.cert), "--tls-key", str(issued.key))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert f"--tls-key {issued.key} is open to other users (mode 0640): chmod 600 it" in line
    issued.key.chmod(0o600)
    if role == "server":
        proc = MuxProcess([*args, "--tls-cert", str(issued.cert), "--tls-key",
                                  str(issued.key)])  # fmt: skip
        try:
            proc.listening_port()
        finally:
            assert proc.stop() == 0


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
        _client.wait_event("auth_failed")
    finally:
        tunnel.close()
