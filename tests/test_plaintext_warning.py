"""A client that authenticates over plaintext to a server beyond loopback warns,
once per process.  In-process, with the loopback test answered "no" through a
hook, since every address here is loopback."""

from __future__ import annotations

from inprocess import InProcessTunnel

from reactor_mux.protocol.auth import Credentials, SharedSecret
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles import client as client_module
from reactor_mux.tunnel.settings import ChannelSettings

SECRET = b"a secret that is long enough"


def test_plaintext_authentication_beyond_loopback_warns_once(loop, log_records, monkeypatch):
    monkeypatch.setattr(client_module, "is_loopback", lambda _address: False)
    server_settings = ChannelSettings(session=SessionConfig(secret_book=SharedSecret(SECRET)))
    client_settings = ChannelSettings(session=SessionConfig(credentials=Credentials(SECRET)))
    tunnel = InProcessTunnel(loop, server_settings)
    try:
        client = tunnel.client("-L 0:127.0.0.1:9", settings=client_settings)
        first = loop.call(lambda: client.channel)
        loop.call(
            lambda: first.close("cut for the test", code=ErrorCode.INTERNAL)
        )  # the client reconnects
        loop.wait(lambda: client.channel is not None and client.channel is not first
                  and client.channel.ready)  # fmt: skip
        warnings = log_records.matching("without TLS")
        assert len(warnings) == 1
        assert "the forwarded data is not encrypted (use --tls)" in warnings[0].getMessage()
    finally:
        tunnel.close()
