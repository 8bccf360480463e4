"""A client that authenticates over plaintext to a server beyond loopback warns,
once per process.  In-process, with the loopback test answered "no" through a
hook, since every address here is loopback."""

from __future__ import annotations

import select
import socket
import struct

import pytest
from inprocess import InProcessTunnel

from reactor_mux.protocol.auth import Credentials, SharedSecret
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles import client as client_module
from reactor_mux.roles.client import Client, ClientConfig
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


def test_a_connection_reset_before_the_check_is_no_bug(reactor, resolver):
    """Found by the admission tests on a busy machine: a server that turns the
    connection away (busy) can reset it before the client looks at it, and asking
    the reset socket for its peer raised inside the reactor's guard: "internal
    error in client", a traceback, a dropped channel."""
    listener = socket.create_server(("127.0.0.1", 0))
    near = socket.create_connection(listener.getsockname())
    far, _ = listener.accept()
    far.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    far.close()  # a reset
    listener.close()
    assert select.select([near], [], [], 5)[0]  # the RST has come back
    with pytest.raises(OSError):
        near.getpeername()  # what the check ran into
    settings = ChannelSettings(session=SessionConfig(credentials=Credentials(SECRET)))
    config = ClientConfig(server=("127.0.0.1", 9), forwards=[], settings=settings)
    client = Client(reactor, resolver, config)
    transport = client._transport(near)  # must not raise
    transport.close()
    near.close()
