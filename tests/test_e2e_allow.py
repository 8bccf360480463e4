"""Allow-lists through real processes, and a hostile server.

Every attack runs while a good, authenticated client moves checksummed data
through the same server (``good_traffic``); it must all arrive intact.  What
these tests decide happens beside the frame codec, and the data paths they use
run with both codecs in the tunnel tests, so they run once (compiled pass).
"""

from __future__ import annotations

import re
import socket

import pytest
from certs import secret_file
from security_support import FAST, SECRET, good_client
from support import MuxProcess, PortHolder, Tunnel, echo_once, good_traffic, poke

from reactor_mux.protocol.frames import encode_frame
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import Role

pytestmark = pytest.mark.codec_independent


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
            bad.wait_event("forward_refused", mapping="-L 0:intranet.example:80")
            bad.wait_event("forward_refused", mapping=f"-L 0:127.0.0.1:{echo.port}")
            (_kind, rebound, target) = forwards[0]
            assert target == f"localhost:{echo.port}"
            assert poke(rebound, b"ping") == "reset"
            # Allowed as written, so forwarded; each stream is refused once the server
            # has resolved the name (to loopback, which no --allow-connect covers).
            refused = bad.wait_event("stream_refused", mapping=f"-L 0:localhost:{echo.port}")
            assert "127.0.0.1" in refused["reason"]  # it says what the name resolved to
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
            refused = bad.wait_event("forward_refused", mapping=f"-R 0:127.0.0.1:{echo.port}")
            assert refused["delay"] is None  # the server's settings decide: not asked again
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
            bob_proc.wait_event("forward_refused", mapping=f"-L 0:127.0.0.1:{hash_target.port}")
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
    client = MuxProcess(
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
        client.wait_event("forward_up", mapping=f"-R 0:127.0.0.1:{echo.port}",
                          address="127.0.0.1:40000")  # fmt: skip
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
        assert b"ERROR protocol: SYN names mapping 1, which was never declared with BIND" in answer
        with pytest.raises(TimeoutError):
            decoy.accept()  # nobody was sent to the -L target
        client.wait_event("channel_down", reason=re.compile("SYN names mapping 1"))
    finally:
        client.stop()
        decoy.close()
        listener.close()
