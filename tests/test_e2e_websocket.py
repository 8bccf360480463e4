"""WebSocket channels (issue 24): ``--server ws://`` and ``wss://`` against a server
with ``--ws-path``, directly and behind a real nginx (proxy_pass with the Upgrade
headers, and TLS at nginx), with checksummed -L, -R and -D traffic, a resume
across an nginx restart, and the web server's face the port shows to anything
that is not an upgrade at the path."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
from nginx import NGINX, LocalNginx
from security_support import FAST
from support import (
    Exchange,
    HashReplyServer,
    Tunnel,
    check_exchange,
    ends_within,
    gave_up,
    run_exchange,
    run_exchanges,
    socks5_connect,
    wait_until,
)
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Pong, Request, TextMessage

SIZE = 2_000_000
PATH = "/rmux"

needs_nginx = pytest.mark.skipif(NGINX is None, reason="needs nginx (Debian's package)")


def ws_tunnel(*server_args: str) -> Tunnel:
    return Tunnel(("--ws-path", PATH, *server_args))


def all_three(tunnel: Tunnel, url: str, target: HashReplyServer, seed: int, *extra: str) -> None:
    """A client over ``url`` with an -L, an -R and a -D, each carrying two checksummed
    exchanges at once."""
    _client, forwards = tunnel.client(
        "-L", f"0:127.0.0.1:{target.port}", "-R", f"0:127.0.0.1:{target.port}", "-D", "0",
        extra=("--server", url, *extra),
    )  # fmt: skip
    ports = {kind: port for kind, port, _ in forwards}
    exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=seed + i) for i in range(4)]
    run_exchanges(exchanges, target, [ports["L"], ports["L"], ports["R"], ports["R"]])

    def through_socks() -> object:
        sock, code = socks5_connect(ports["D"], "127.0.0.1", target.port)
        assert code == 0
        return sock

    socks = Exchange(send_len=SIZE, reply_len=SIZE, seed=seed + 10)
    run_exchange(0, socks, connect=through_socks)  # type: ignore[arg-type]
    check_exchange(socks, target)


def test_a_websocket_channel_carries_l_r_and_d(hash_target):
    tunnel = ws_tunnel()
    try:
        all_three(tunnel, f"ws://127.0.0.1:{tunnel.server_port}{PATH}", hash_target, 9000)
    finally:
        tunnel.close()


def test_plain_and_websocket_channels_share_the_port(hash_target):
    tunnel = ws_tunnel()
    try:
        _plain, [(_, plain_port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        url = f"ws://127.0.0.1:{tunnel.server_port}{PATH}"
        _ws, [(_, ws_port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                               extra=("--server", url))  # fmt: skip
        exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=s) for s in (9100, 9102)]
        run_exchanges(exchanges, hash_target, [plain_port, ws_port])
    finally:
        tunnel.close()


def curl(url: str, *extra: str) -> str:
    done = subprocess.run(["curl", "-s", "-i", *extra, url], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    return done.stdout


def test_what_is_not_an_upgrade_at_the_path_gets_a_404_and_no_penalty(hash_target):
    """A scanner sees a web server.  Behind a reverse proxy every request comes from
    the proxy's address, so a 404 must cost that address nothing: a client right
    after three of them connects at once."""
    tunnel = ws_tunnel()
    try:
        base = f"http://127.0.0.1:{tunnel.server_port}"
        for url in (f"{base}/", f"{base}{PATH}", f"{base}/admin?x=1"):
            answer = curl(url)
            assert answer.startswith("HTTP/1.1 404 Not Found"), answer
            assert answer.endswith("\n\nnot found\n"), answer
        tunnel.server.wait_event("channel_down", reason=lambda r: "answered 404" in r)
        assert tunnel.server.events("source_penalised") == []
        url = f"ws://127.0.0.1:{tunnel.server_port}{PATH}"
        _client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                                extra=("--server", url))  # fmt: skip
        run_exchanges([Exchange(send_len=10_000, reply_len=10_000, seed=9200)], hash_target,
                      [port])  # fmt: skip
    finally:
        tunnel.close()


def test_a_wrong_path_is_one_line_and_exit_255(echo):
    tunnel = ws_tunnel()
    try:
        url = f"ws://127.0.0.1:{tunnel.server_port}/wrong"
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                  extra=("--server", url))  # fmt: skip
        line = gave_up(client, "server_unusable")
        assert "answered HTTP 404" in line["message"] and "/wrong" in line["message"], line
        assert client.proc.wait(10) == 255
    finally:
        tunnel.close()


def test_a_websocket_client_without_ws_path_on_the_server_is_told_so(echo):
    """A server without --ws-path reads the upgrade as a foreign protocol: the client
    says what it met, once, and exits 255."""
    tunnel = Tunnel()
    try:
        url = f"ws://127.0.0.1:{tunnel.server_port}{PATH}"
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                  extra=("--server", url))  # fmt: skip
        line = gave_up(client, "server_unusable")["message"]
        assert f"{url} is a reactor-mux server that takes no WebSocket channels" in line, line
        assert client.proc.wait(10) == 255
    finally:
        tunnel.close()


def test_wss_to_a_tls_server_with_a_secret(pki, hash_target, secret):
    tunnel = ws_tunnel("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                       "--secret-file", str(secret))  # fmt: skip
    try:
        url = f"wss://localhost:{tunnel.server_port}{PATH}"
        all_three(tunnel, url, hash_target, 9300, "--tls-ca", str(pki.ca.path),
                  "--secret-file", str(secret))  # fmt: skip
    finally:
        tunnel.close()


def test_wss_with_a_pin_and_a_client_certificate(pki, hash_target):
    """Every verification option of --tls holds for wss://: a pinned certificate, and
    mutual TLS (a client without the certificate is refused)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from reactor_mux.io.tls import certificate_fingerprint

    der = x509.load_pem_x509_certificate(pki.server.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    tunnel = ws_tunnel("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key),
                       "--tls-client-ca", str(pki.ca.path))  # fmt: skip
    try:
        url = f"wss://127.0.0.1:{tunnel.server_port}{PATH}"
        mutual = ("--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key))
        all_three(tunnel, url, hash_target, 9800, "--tls-fingerprint",
                  certificate_fingerprint(der), *mutual)  # fmt: skip
        no_certificate = ("--server", url, "--tls-ca", str(pki.ca.path))
        stranger, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}", expect=0,
                                    extra=no_certificate)  # fmt: skip
        gave_up(stranger, "auth_failed")
        assert stranger.proc.wait(10) == 255
    finally:
        tunnel.close()


# ------------------------------------------------------------ behind nginx


@needs_nginx
def test_behind_nginx_plain_and_with_tls_at_nginx(pki, hash_target, secret):
    tunnel = ws_tunnel("--secret-file", str(secret))
    plain = LocalNginx(tunnel.server_port, PATH)
    tls = LocalNginx(tunnel.server_port, PATH, cert=pki.server.cert, key=pki.server.key)
    try:
        all_three(tunnel, f"ws://127.0.0.1:{plain.port}{PATH}", hash_target, 9400,
                  "--secret-file", str(secret))  # fmt: skip
        all_three(tunnel, f"wss://localhost:{tls.port}{PATH}", hash_target, 9500,
                  "--secret-file", str(secret), "--tls-ca", str(pki.ca.path))  # fmt: skip
        assert "404" in curl(f"http://127.0.0.1:{plain.port}/")
    finally:
        tunnel.close()
        plain.close()
        tls.close()


@needs_nginx
def test_streams_resume_across_an_nginx_restart(hash_target):
    """nginx restarts (killed: every proxied connection breaks) in the middle of two
    transfers; the client comes back through the new nginx and resumes the session:
    every byte arrives, once."""
    tunnel = ws_tunnel()
    nginx = LocalNginx(tunnel.server_port, PATH)
    try:
        url = f"ws://127.0.0.1:{nginx.port}{PATH}"
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                         "-R", f"0:127.0.0.1:{hash_target.port}",
                                         extra=("--server", url, *FAST))  # fmt: skip
        ports = [port for _, port, _ in forwards]
        size = 40_000_000
        exchanges = [Exchange(send_len=size, reply_len=size, seed=s) for s in (9600, 9602)]
        mover = threading.Thread(target=run_exchanges, args=(exchanges, hash_target, ports))
        mover.start()
        assert wait_until(lambda: hash_target.connections >= 2, timeout=15)
        nginx.kill()
        tunnel.server.wait_event("channel_suspended", timeout=15)
        nginx.start()
        client.wait_event("channel_resumed", timeout=30)
        mover.join(180)
        assert not mover.is_alive()
        assert tunnel.server.count_event("channel_up") == 1  # one session all along
    finally:
        tunnel.close()
        nginx.close()


# ---------------------------------------------- the WebSocket layer, spoken raw


def upgraded(port: int) -> tuple[socket.socket, WSConnection]:
    """A raw WebSocket client (wsproto) upgraded at the server's path."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target=PATH)))
    while True:
        ws.receive_data(sock.recv(65536))
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return sock, ws
            raise AssertionError(f"upgrade answered {event!r}")


def events_until(sock: socket.socket, ws: WSConnection, kind: type) -> list[object]:
    seen: list[object] = []
    while not any(isinstance(event, kind) for event in seen):
        data = sock.recv(65536)
        ws.receive_data(data or None)
        seen.extend(ws.events())
        if not data:
            break
    return seen


def test_a_ping_is_answered_and_a_text_message_ends_the_connection():
    tunnel = ws_tunnel()
    try:
        sock, ws = upgraded(tunnel.server_port)
        with sock:
            sock.sendall(ws.send(Ping(payload=b"still there?")))
            pongs = [e for e in events_until(sock, ws, Pong) if isinstance(e, Pong)]
            assert pongs and pongs[0].payload == b"still there?"
            sock.sendall(ws.send(TextMessage(data="HELLO 1 262144 65536")))
            assert ends_within(sock, 10)
        down = tunnel.server.wait_event("channel_down")
        assert "text message where the channel sends binary" in down["reason"], down
    finally:
        tunnel.close()


def test_an_endless_http_head_is_cut_off():
    tunnel = ws_tunnel()
    try:
        with socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10) as sock:
            sock.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            try:
                for _ in range(64):
                    sock.sendall(b"X-Filler: " + b"y" * 1000 + b"\r\n")
            except OSError:
                pass  # cut off while we were still sending
            assert ends_within(sock, 10)
        down = tunnel.server.wait_event("channel_down")
        assert "404" in down["reason"] or "longer than" in down["reason"], down
    finally:
        tunnel.close()


def test_a_ping_flood_from_a_peer_that_never_reads_is_not_answered_without_bound():
    """Each ping is owed a pong; a peer that sends pings and reads nothing would make
    the server queue pongs for ever.  Past SEND_BACKLOG of unsent output the server
    reads no more, so the flooder's own socket fills: it is held to what the kernel's
    buffers and SEND_BACKLOG hold, far below what it tries to send."""
    tunnel = ws_tunnel()
    try:
        sock, ws = upgraded(tunnel.server_port)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            burst = ws.send(Ping(payload=b"p" * 125)) * 512
            pending, sent, tries = memoryview(burst), 0, 0
            while sent < 256 * 1024 * 1024 and tries < 200:
                try:
                    count = sock.send(pending)
                except BlockingIOError:
                    tries += 1
                    time.sleep(0.02)
                    continue
                sent, tries = sent + count, 0
                pending = pending[count:] or memoryview(burst)  # whole frames, in order
            assert sent < 64 * 1024 * 1024, f"the server read {sent} bytes of pings unanswered"
    finally:
        tunnel.close()


def test_a_server_too_busy_to_read_the_upgrade_is_retried_soon(echo):
    """A server turns a connection away before reading a byte when strangers hold
    its handshake slots: it sends ``ERROR busy`` raw, not an HTTP answer.  The
    WebSocket client hands that to the channel, which retries soon, as over TCP."""
    tunnel = ws_tunnel("--per-source-max-startups", "1", "--penalty-exempt", "127.0.0.1")
    try:
        hog = socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=10)
        hog.sendall(b"GET " + PATH.encode() + b" HTTP/1.1\r\n")  # a startup that stalls
        url = f"ws://127.0.0.1:{tunnel.server_port}{PATH}"
        client, _ = tunnel.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                  extra=("--server", url))  # fmt: skip
        busy = client.wait_event("server_busy")
        assert busy["level"] == "warning" and busy["delay"] <= 2.0, busy
        hog.close()
        assert client.forwards(1, timeout=15)
        assert client.events("server_unusable") == []
    finally:
        tunnel.close()


def test_the_wss_hint_goes_only_to_a_ws_client_at_a_tls_server(pki, echo):
    """ws:// at a TLS server is told to write wss://; wss:// at a plaintext server is
    not (found by a new-user trial: it was told to write what it had written)."""
    tls = ws_tunnel("--tls-cert", str(pki.server.cert), "--tls-key", str(pki.server.key))
    plain = ws_tunnel()
    try:
        plain_url = f"ws://127.0.0.1:{tls.server_port}{PATH}"
        client, _ = tls.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                               extra=("--server", plain_url))  # fmt: skip
        assert "write wss://" in gave_up(client, "server_unusable")["message"]
        secure = (f"wss://127.0.0.1:{plain.server_port}{PATH}", "--tls-ca", str(pki.ca.path))
        client, _ = plain.client("-L", f"0:127.0.0.1:{echo.port}", expect=0,
                                 extra=("--server", *secure))  # fmt: skip
        line = gave_up(client, "server_unusable")["message"]
        assert "plaintext server" in line and "write wss://" not in line, line
    finally:
        tls.close()
        plain.close()
