"""Named clients on one in-process server: a reconnect retires a stale channel
only when it authenticated as the same client."""

from __future__ import annotations

from inprocess import InProcessTunnel

from reactor_mux.protocol.auth import Credentials
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.tunnel.settings import ChannelSettings

ALICE, BOB = b"alice's secret, long enough", b"bob's secret, also long enough"


class Book:
    def secret_for(self, name: str) -> bytes | None:
        return {"alice": ALICE, "bob": BOB}.get(name)


def as_client(name: str, secret: bytes) -> ChannelSettings:
    return ChannelSettings(session=SessionConfig(credentials=Credentials(secret, name)))


def test_a_client_id_is_honoured_only_for_the_same_client(loop, log_records):
    tunnel = InProcessTunnel(loop, ChannelSettings(session=SessionConfig(secret_book=Book())))
    try:
        alice = tunnel.client("-L 0:127.0.0.1:9", settings=as_client("alice", ALICE))
        alice_channel = loop.call(lambda: tunnel.server_channel(alice))
        # bob presents alice's client id: his channel opens, hers stays.
        bob = tunnel.client("-L 0:127.0.0.1:9", settings=as_client("bob", BOB),
                            client_id=alice.client_id)  # fmt: skip
        loop.wait(lambda: tunnel.server_channel(bob) is not None)
        assert loop.call(lambda: not alice_channel.closed)
        assert not log_records.matching("replaces")
        # alice again, same name and id (a reconnect after a silent cut): it retires hers.
        again = tunnel.client("-L 0:127.0.0.1:9", settings=as_client("alice", ALICE),
                              client_id=alice.client_id, wait=False)  # fmt: skip
        loop.wait(lambda: alice_channel.closed)
        assert alice_channel.close_reason == "replaced by a new channel from the same client"
        loop.wait(lambda: again.channel is not None and again.channel.ready)
    finally:
        tunnel.close()
