"""A channel that goes quiet gives its buffers back (issue 26): the receive and
staging buffers, empty send rings, the output FIFO and, with TLS, the ciphertext
buffers (the data plane's own, or Python's).  The next bytes take them again:
checksummed -L and -R traffic before and after quiet spells, plaintext and TLS,
with keepalives short enough that each spell gives everything back twice over."""

from __future__ import annotations

import time

import pytest
from security_support import tls_server
from support import Exchange, Tunnel, check_exchange, run_exchange

pytestmark = pytest.mark.codec_independent

QUIET = ("--keepalive-interval", "0.4", "--keepalive-timeout", "5")
"""A liveness tick every 0.2 s: a quiet spell of 1 s is several ticks without a read."""


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
