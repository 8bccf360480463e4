"""A TLS channel in process: the transports lift a stranger's bounds (16 KiB of
ciphertext each way) once the peer has proved itself, on both sides, when the
channel opens and again on the new connection of every resume (found in review:
nothing failed if a path forgot to, and TLS bulk would then crawl)."""

from __future__ import annotations

from reactor_mux.io.tls import ClientTls, ServerTls, TlsTransport
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles.client import Client, ClientConfig
from reactor_mux.roles.server import Server, ServerConfig
from reactor_mux.roles.specs import ForwardKind, parse_forward
from reactor_mux.tunnel.settings import ChannelSettings

RESUMABLE = ChannelSettings(resume_timeout=30.0, session=SessionConfig(resume=True))


def trusted(channel) -> bool:  # type: ignore[no-untyped-def]
    transport = channel.transport
    assert isinstance(transport, TlsTransport)
    return bool(transport._trusted)


def test_tls_transports_are_trusted_once_open_and_after_a_resume(loop, pki):
    server_tls = ServerTls.from_files(pki.server.cert, pki.server.key, None)
    client_tls = ClientTls.from_options(ca=pki.ca.path, server_name=None, fingerprint=None,
                                        cert=None, key=None, insecure=False)  # fmt: skip
    server = Server(loop.reactor, loop.resolver,
                    ServerConfig(listen=[("127.0.0.1", 0)], settings=RESUMABLE,
                                 tls=server_tls))  # fmt: skip
    loop.call(server.start)
    config = ClientConfig(server=("127.0.0.1", server.listeners[0].port),
                          forwards=[parse_forward(ForwardKind.LOCAL, "0:127.0.0.1:9")],
                          settings=RESUMABLE, tls=client_tls, reconnect_min=0.05,
                          reconnect_max=0.2)  # fmt: skip
    client = Client(loop.reactor, loop.resolver, config)
    loop.call(client.start)
    try:

        def server_side():  # type: ignore[no-untyped-def]
            ready = [channel for channel in server.clients if channel.ready]
            return ready[0] if ready else None

        loop.wait(lambda: client.channel is not None and client.channel.ready
                  and server_side() is not None)  # fmt: skip
        held = loop.call(server_side)
        assert loop.call(lambda: trusted(client.channel) and trusted(held))
        resumes = loop.call(lambda: client.meter.resumes)
        # The connection breaks (as a reset would): both sides keep the session.
        loop.call(lambda: held._lost("test: the connection broke", ErrorCode.PEER_CLOSED))
        loop.wait(lambda: client.meter.resumes > resumes and client.channel.ready
                  and held.ready and held.transport is not None)  # fmt: skip
        assert loop.call(lambda: trusted(client.channel) and trusted(held))
    finally:
        loop.call(client.close)
        loop.call(server.close)
