"""A channel that goes quiet gives its buffers back (issue 26): the receive and
staging buffers, empty send rings, the output FIFO and, with TLS, the ciphertext
buffers (the data plane's own, or Python's).  The next bytes take them again:
checksummed -L and -R traffic before and after quiet spells, plaintext and TLS,
with keepalives short enough that each spell gives everything back twice over."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from security_support import tls_server
from support import Exchange, Tunnel, check_exchange, recv_exactly, run_exchange, wait_until

pytestmark = pytest.mark.codec_independent

QUIET = ("--keepalive-interval", "0.4", "--keepalive-timeout", "5")
"""A keepalive tick every 0.4 s or so: a quiet spell of 1 s holds ticks that find nothing read."""


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_bytes_after_a_quiet_spell_take_the_buffers_again(pki, hash_target, tls):
    tunnel = tls_server(pki, *QUIET) if tls else Tunnel(server_args=QUIET)
    client_tls = ("--tls", "--tls-ca", str(pki.ca.path)) if tls else ()
    try:
        _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                          "-R", f"0:127.0.0.1:{hash_target.port}",
                                          extra=(*QUIET, *client_tls))  # fmt: skip
        ports = {kind: port for kind, port, _ in forwards}
        for spell in range(3):
            for kind in ("L", "R"):
                exchange = Exchange(send_len=600_000 + spell, reply_len=900_000 + spell,
                                    seed=4_100 + 10 * spell + (kind == "R"))  # fmt: skip
                run_exchange(ports[kind], exchange)
                check_exchange(exchange, hash_target)
            time.sleep(1.0)  # quiet: every buffer the burst grew is given back
    finally:
        tunnel.close()


def test_sends_after_a_download_are_confirmed_without_waiting_for_a_keepalive():
    """Found in review: a download's only output is the data plane's own ACKs, which
    the check that keeps the barrier tick going did not see, and the SENT that
    reported them set the plane back to its slow report pace with no tick running:
    bytes the client sent next stayed kept for a resume until a keepalive woke the
    tick (12 s and more).  Now they are confirmed within a few barrier ticks."""
    from inprocess import InProcessTunnel, LoopThread

    from reactor_mux.protocol.config import SessionConfig
    from reactor_mux.tunnel.settings import ChannelSettings

    burst = 4 << 20
    target = socket.create_server(("127.0.0.1", 0))
    uploaded = bytearray()

    def read(conn: socket.socket) -> None:
        try:
            while chunk := conn.recv(65536):
                uploaded.extend(chunk)
        except OSError:  # reset as the tunnel closes
            pass

    def serve() -> None:
        conn, _ = target.accept()
        threading.Thread(target=read, args=(conn,), daemon=True).start()
        for _ in range(3):  # apart: the tick stops in between
            time.sleep(1.5)
            conn.sendall(b"d" * burst)

    threading.Thread(target=serve, daemon=True).start()
    settings = ChannelSettings(session=SessionConfig(resume=True), resume_timeout=30.0,
                               keepalive_interval=600)  # fmt: skip
    loop = LoopThread()
    tunnel = InProcessTunnel(loop, settings)
    try:
        client = tunnel.client(f"-L 0:127.0.0.1:{target.getsockname()[1]}")
        with socket.create_connection(("127.0.0.1", tunnel.local_port(client))) as app:
            app.settimeout(30)
            assert len(recv_exactly(app, 3 * burst)) == 3 * burst
            time.sleep(1.0)  # quiet: the tick stops after the last burst's ACKs
            app.sendall(b"u" * 500)
            assert wait_until(lambda: len(uploaded) == 500, timeout=10)
            session = client.channel._session
            assert wait_until(lambda: not loop.call(session.confirming), timeout=3.0)
    finally:
        tunnel.close()
        loop.close()
        target.close()
