"""TLS through real processes: verification both ways, plaintext against TLS,
and an orderly end.

Every attack runs while a good, authenticated client moves checksummed data
through the same server (``good_traffic``); it must all arrive intact.  What
these tests decide happens beside the frame codec, and the data paths they use
run with both codecs in the tunnel tests, so they run once (compiled pass).
"""

from __future__ import annotations

import re
import socket
import time

import pytest
from security_support import FAST, good_client, tls_server
from support import MuxProcess, PortHolder, Tunnel, echo_once, gave_up, good_traffic

from reactor_mux.security.keygen import generate
from reactor_mux.tools.procs import cpu_time

pytestmark = pytest.mark.codec_independent


# ------------------------------------------------------------------------ TLS


def test_tls_with_a_ca_a_pin_and_client_certificates(pki, hash_target, secret):
    """The good paths: CA-verified, pinned, and mutual TLS with a secret on top."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from reactor_mux.io.tls import certificate_fingerprint

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
    ("how", "why"),
    [  # what the reason quotes: OpenSSL's verdict, or the option that decided
        ("wrong CA", "unable to get local issuer"),
        ("wrong pin", "--tls-fingerprint"),
        ("expired", "certificate has expired"),
        ("wrong name", "Hostname mismatch"),
    ],
)
def test_a_server_the_client_cannot_verify_is_refused(pki, hash_target, how, why):
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
            line = gave_up(bad, "auth_failed", reason=re.compile(re.escape(why)))
            assert line["message"].startswith("cannot authenticate server"), line
            keeps_trying = ("--tls", *extra, "--persist", *FAST)
            persisting, _ = bad_server.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                              expect=0, extra=keeps_trying)  # fmt: skip
            # One line says why and when it tries again, after backing off.
            retry = persisting.wait_event("auth_failed", reason=re.compile(re.escape(why)))
            assert retry["delay"] >= 1.0 and "; reconnecting in" in retry["message"], retry
            assert persisting.events("channel_down") == []
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
            tunnel.server.wait_event("channel_down", reason=re.compile("^TLS"))
            bad.wait_event("auth_failed", reason=re.compile("TLS"))
    finally:
        tunnel.close()


def test_a_self_signed_server_without_a_pin_is_shown_with_its_fingerprint(tmp_path, echo):
    """As ssh shows the key it was not told to trust: the one line names the pin to give."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    pin = generate(cert, key, ["127.0.0.1"])
    tunnel = Tunnel(server_args=("--tls-cert", str(cert), "--tls-key", str(key)))
    try:
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                  extra=("--tls", *FAST))  # fmt: skip
        line = gave_up(client, "auth_failed")
        assert "self-signed" in line["message"], line
        assert line["message"].count(pin) == 1 and f"--tls-fingerprint {pin}" in line["message"]
        _pinned, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}",
                                         extra=("--tls", "--tls-fingerprint", pin))  # fmt: skip
        assert echo_once(forwards[0][1], b"pinned now") == b"pinned now"
    finally:
        tunnel.close()


def test_plaintext_against_tls_both_ways_says_so_on_each_side(pki, hash_target):
    tls = tls_server(pki)
    plain = Tunnel()
    try:
        port = good_client(tls, hash_target.port, "--tls", "--tls-ca", str(pki.ca.path))
        with good_traffic([port], hash_target, seed=4300):
            to_tls, _ = tls.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0, extra=FAST)
            gave_up(to_tls, "server_unusable", reason=re.compile("--tls"))  # what to do
            tls.server.wait_event("channel_down", reason=re.compile("plaintext"))
            # It said why: not mistaken for a server turning the address away (review).
            assert "turning this address away" not in to_tls.log
            to_plain, _ = plain.client(
                "-L",
                f"0:127.0.0.1:{hash_target.port}",
                expect=0,
                extra=("--tls", "--tls-ca", str(pki.ca.path), *FAST),
            )
            gave_up(to_plain, "server_unusable", reason=re.compile("TLS"))
            plain.server.wait_event("channel_down", reason=re.compile("TLS"))
    finally:
        tls.close()
        plain.close()


def test_a_tls_channel_ends_in_order_and_promptly(pki, hash_target):
    """The client's BYE reaches the server over TLS, which closes the channel at
    once (close_notify), without spinning on the finished session."""
    tunnel = tls_server(pki)
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                         extra=("--tls", "--tls-ca", str(pki.ca.path)))  # fmt: skip
        assert echo_once(forwards[0][1], struct_header(0)) is not None
        before = cpu_time(tunnel.server.pid)
        client.stop()
        tunnel.server.wait_event("channel_down", level="info", timeout=5)  # an orderly close
        time.sleep(0.5)  # a window in which a spinning loop would burn most of a core
        assert cpu_time(tunnel.server.pid) - before < 0.3
    finally:
        tunnel.close()


def struct_header(reply_len: int) -> bytes:
    """A hash target's request header: no reply, seed 1."""
    return reply_len.to_bytes(8, "big") + (1).to_bytes(8, "big")


STALLS = [b"", b"\x16\x03\x01\x02\x00\x01"]  # nothing; a record header and one byte


@pytest.mark.parametrize("sent", STALLS, ids=["nothing", "half a ClientHello"])
def test_a_client_that_stalls_in_the_tls_handshake_is_cut_off(pki, sent):
    """The TLS handshake counts inside --handshake-timeout: a connection that
    sends nothing, or the start of a ClientHello and then nothing, is closed."""
    tunnel = tls_server(pki, "--handshake-timeout", "1")
    try:
        with socket.create_connection(("127.0.0.1", tunnel.server_port)) as conn:
            conn.sendall(sent)
            conn.settimeout(10)
            started = time.monotonic()
            try:
                while conn.recv(4096):
                    pass
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 5
        tunnel.server.wait_event("channel_down", reason=re.compile("handshake timed out"))
    finally:
        tunnel.close()


@pytest.mark.parametrize("python_side", ["client", "server"])
def test_the_planes_tls_records_and_pythons_meet_on_the_wire(pki, hash_target, python_side):
    """One side's records made by the data plane in C (where it can drive TLS),
    the other's by Python's ssl (``REACTOR_MUX_TLS=python``): one TLS session on
    the wire, checksummed bulk both ways through ``-L`` and ``-R`` at once."""
    python_records = {"REACTOR_MUX_TLS": "python"}
    holder = PortHolder()
    port = holder.take()
    server = MuxProcess(["server", "--listen", f"127.0.0.1:{port}", "--tls-cert",
                         str(pki.server.cert), "--tls-key", str(pki.server.key)],
                        env=python_records if python_side == "server" else None)  # fmt: skip
    client = None
    try:
        server.listening_port()
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", "--tls", "--tls-ca",
                             str(pki.ca.path), "-L", f"0:127.0.0.1:{hash_target.port}",
                             "-R", f"0:127.0.0.1:{hash_target.port}", *FAST],
                            env=python_records if python_side == "client" else None)  # fmt: skip
        ports = [forward_port for _kind, forward_port, _target in client.forwards(2, timeout=15)]
        with good_traffic(ports, hash_target, seed=7300, size=6_000_000):
            time.sleep(2)
    finally:
        for proc in (client, server):
            if proc is not None:
                proc.stop()
                assert "Traceback" not in proc.log, proc.log
        holder.close()
