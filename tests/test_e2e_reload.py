"""Live reload: SIGHUP re-reads ``--config``; forwards come and go, open streams
and the channel stay, and a file that cannot be used changes nothing."""

from __future__ import annotations

import re
import signal
import socket
import struct
from pathlib import Path

import pytest
from certs import Authority
from security_support import SECRET
from support import (
    Exchange,
    MuxProcess,
    PortHolder,
    check_exchange,
    echo_once,
    gave_up,
    payload,
    recv_exactly,
    run_exchange,
    sha,
    socks5_connect,
)

pytestmark = pytest.mark.codec_independent


def write_config(path: Path, server_port: int, lines: list[str]) -> None:
    path.write_text(f'server = "127.0.0.1:{server_port}"\n' + "\n".join(lines) + "\n")


def forwards(kind: str, *specs: str) -> str:
    key = {"L": "local-forward", "R": "remote-forward", "D": "dynamic-forward"}[kind]
    return f"{key} = [{', '.join(repr(spec).replace(chr(39), chr(34)) for spec in specs)}]"


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def reload(proc: MuxProcess, expect: str = "reloaded") -> dict:  # type: ignore[type-arg]
    """SIGHUP, and the event that ends the reload: ``reloaded`` or ``reload_failed``."""
    start = proc.mark
    proc.signal(signal.SIGHUP)
    return proc.wait_event(expect, timeout=10, start=start)


def test_a_reload_adds_and_removes_forwards_while_a_stream_moves_data(
    tunnel, hash_target, tmp_path: Path
):
    config = tmp_path / "client.toml"
    target = f"127.0.0.1:{hash_target.port}"
    with PortHolder() as ports:
        kept, dropped, added = ports.take(), ports.take(), ports.take()
        kept_spec, dropped_spec = f"127.0.0.1:{kept}:{target}", f"127.0.0.1:{dropped}:{target}"
        write_config(config, tunnel.server_port, [forwards("L", kept_spec, dropped_spec)])
        client = MuxProcess(["client", "--config", str(config)])
        tunnel.clients.append(client)
        client.forwards(2, timeout=15)

        # A stream on the forward that goes away: half its request before the reload,
        # half after; its reply comes while the forward is already gone.
        seed, size, reply_len = 71, 4 << 20, 3 << 20
        request = payload(seed + 1, size)
        conn = socket.create_connection(("127.0.0.1", dropped), timeout=30)
        conn.sendall(struct.pack(">QQ", reply_len, seed))
        conn.sendall(request[: size // 2])
        first = recv_exactly(conn, 65536)  # the stream is open end to end

        added_spec = f"127.0.0.1:{added}:{target}"
        write_config(config, tunnel.server_port, [forwards("L", kept_spec, added_spec)])
        start = client.mark
        reload(client)
        client.wait_event("forward_added", mapping=f"-L {added_spec}", start=start)
        client.wait_event("forward_removed", mapping=f"-L {dropped_spec}", start=start)

        conn.sendall(request[size // 2 :])
        conn.shutdown(socket.SHUT_WR)
        rest = b""
        while chunk := conn.recv(1 << 20):
            rest += chunk
        assert sha(first + rest) == sha(payload(seed, reply_len)) and len(first + rest) == reply_len
        conn.close()
        check = Exchange(send_len=size, reply_len=reply_len, seed=seed)
        check.done.set()
        check.received = (reply_len, sha(payload(seed, reply_len)))
        check_exchange(check, hash_target)  # the target got every byte of the request

        assert refused(dropped)
        for seed, port in ((81, kept), (91, added)):
            exchange = Exchange(send_len=1 << 20, reply_len=1 << 20, seed=seed)
            run_exchange(port, exchange)
            check_exchange(exchange, hash_target)
    assert tunnel.server.count_event("channel_up") == 1  # the channel never dropped
    assert client.events("channel_down") == [] and client.events("channel_suspended") == []
    assert tunnel.server.count_event("mapping_removed", mapping=f"-L {target}") == 1


def test_a_reload_adds_and_removes_remote_forwards(tunnel, echo, tmp_path: Path):
    config = tmp_path / "client.toml"
    with PortHolder() as ports:
        first, second = ports.take(), ports.take()
        write_config(config, tunnel.server_port,
                     [forwards("R", f"127.0.0.1:{first}:127.0.0.1:{echo.port}")])  # fmt: skip
        client = MuxProcess(["client", "--config", str(config)])
        tunnel.clients.append(client)
        client.forwards(1, timeout=15)
        with socket.create_connection(("127.0.0.1", first), timeout=10) as open_stream:
            open_stream.sendall(b"before")
            assert open_stream.recv(6) == b"before"
            start = client.mark
            write_config(config, tunnel.server_port,
                         [forwards("R", f"127.0.0.1:{second}:127.0.0.1:{echo.port}")])  # fmt: skip
            reload(client)
            [(kind, port, _)] = client.forwards(1, timeout=10, start=start)
            assert (kind, port) == ("R", second)
            tunnel.server.wait_event("mapping_removed", mapping=f"-R 127.0.0.1:{first}")
            assert refused(first)
            open_stream.sendall(b"after")  # the stream opened before carries on
            assert open_stream.recv(5) == b"after"
        with socket.create_connection(("127.0.0.1", second), timeout=10) as new_stream:
            new_stream.sendall(b"new")
            assert new_stream.recv(3) == b"new"


def test_a_config_that_cannot_be_used_changes_nothing(tunnel, echo, tmp_path: Path):
    config = tmp_path / "client.toml"
    with PortHolder() as ports:
        port = ports.take()
        good = [forwards("L", f"127.0.0.1:{port}:127.0.0.1:{echo.port}")]
        write_config(config, tunnel.server_port, good)
        client = MuxProcess(["client", "--config", str(config)])
        tunnel.clients.append(client)
        client.forwards(1, timeout=15)
        for broken in ("local-forward = [", 'local-forward = ["99999:h:1"]', "windw = 3"):
            config.write_text(f'server = "127.0.0.1:{tunnel.server_port}"\n{broken}\n')
            reload(client, "reload_failed")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                conn.sendall(b"still")
                assert conn.recv(5) == b"still"
        write_config(config, tunnel.server_port, [*good, "window = '1M'"])
        start = client.mark
        reload(client)
        assert client.wait_event("restart_needed", start=start)["reason"] == "window"
    assert client.proc.poll() is None


def test_a_server_reload_applies_new_permissions_to_new_requests(echo, hash_target, tmp_path: Path):
    config = tmp_path / "server.toml"
    with PortHolder() as ports:
        port = ports.take()
        config.write_text(
            f'listen = ["127.0.0.1:{port}"]\nallow-connect = ["127.0.0.1:{echo.port}"]\n'
        )
        server = MuxProcess(["server", "--config", str(config)])
        client = None
        try:
            server.listening_port()
            client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", "-D", "0"])
            [(_, socks_port, _)] = client.forwards(1, timeout=15)
            sock, code = socks5_connect(socks_port, "127.0.0.1", hash_target.port)
            sock.close()
            assert code == 2  # not allowed by the server's --allow-connect
            config.write_text(
                f'listen = ["127.0.0.1:{port}"]\n'
                f'allow-connect = ["127.0.0.1:{echo.port}", "127.0.0.1:{hash_target.port}"]\n'
            )
            said = reload(server)["message"]
            assert "changed allow-connect" in said, said
            sock, code = socks5_connect(socks_port, "127.0.0.1", hash_target.port)
            assert code == 0
            sock.close()
            assert server.count_event("channel_up") == 1
        finally:
            for proc in (client, server):
                if proc is not None:
                    assert proc.stop() == 0
                    assert "Traceback" not in proc.log


def test_a_client_removed_on_reload_loses_its_open_channel(echo, tmp_path: Path):
    """Its rights must not outlive its identity: a channel that authenticated as a
    client the reloaded file no longer has (or with a secret it changed) is closed,
    not left running under the global allow-lists."""
    config = tmp_path / "server.toml"
    other = "another secret, also long enough to count"

    def write(names: dict[str, str]) -> None:
        allow = f'allow-connect = ["127.0.0.1:{echo.port}"]'
        tables = "".join(f'\n[clients.{name}]\nsecret = "{secret}"\n{allow}\n'
                         for name, secret in names.items())  # fmt: skip
        config.write_text(f'listen = ["127.0.0.1:{port}"]\n{tables}')
        config.chmod(0o600)

    with PortHolder() as ports:
        port = ports.take()
        write({"alice": SECRET, "bob": other})
        server = MuxProcess(["server", "--config", str(config)])
        clients: list[MuxProcess] = []
        try:
            server.listening_port()
            for name, secret in (("alice", SECRET), ("bob", other)):
                argv = ["client", "--server", f"127.0.0.1:{port}", "--name", name,
                        "-L", f"0:127.0.0.1:{echo.port}"]  # fmt: skip
                clients.append(MuxProcess(argv, env={"REACTOR_MUX_SECRET": secret}))
                clients[-1].forwards(1, timeout=15)
            write({"bob": other})
            said = reload(server)["message"]
            server.wait_event("channel_revoked", client="alice")
            assert "removed client 'alice'" in said, said  # the reload says what it did
            assert re.search(r"closed channel #\d+ from .*: client 'alice' is no longer known",
                             said), said  # fmt: skip
            assert "added client" not in said and "new secret" not in said, said
            again = reload(server)["message"]
            assert again.endswith("nothing changed"), again
            gave_up(clients[0], "server_unusable", reason=re.compile("client 'alice'"))
            [(_, bob_port, _)] = clients[1].forwards(1)
            assert echo_once(bob_port, b"bob stays") == b"bob stays"
            assert server.count_event("channel_up", client="bob") == 1
        finally:
            for proc in [clients[1], server]:
                assert proc.stop() == 0
            clients[0].stop()


def test_a_reload_cannot_turn_authentication_off_while_a_public_listener_is_bound(
    echo, tmp_path: Path
):
    """Found in review (issue 20): the safe-default check looked at the reloaded
    file's ``listen``, which takes effect only at a restart, so a reload could drop
    the secret while the server stayed bound to 0.0.0.0.  The bound addresses count."""
    config = tmp_path / "server.toml"
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    config.write_text(f'listen = ["0.0.0.0:0"]\nsecret-file = "{secret}"\n')
    server = MuxProcess(["server", "--config", str(config)])
    try:
        port = server.listening_port()
        config.write_text('listen = ["127.0.0.1:0"]\n')  # loopback, and no secret
        failed = reload(server, "reload_failed")
        assert f"0.0.0.0:{port}" in failed["reason"]  # the reason names the bound address
        # Nor by naming a client CA: TLS, like the listeners, changes only at a restart
        # (found in review: the reloaded file's --tls-client-ca counted).
        ca = Authority(tmp_path, "ca")
        issued = ca.issue("127.0.0.1")
        config.write_text(f'listen = ["0.0.0.0:0"]\ntls-cert = "{issued.cert}"\n'
                          f'tls-key = "{issued.key}"\ntls-client-ca = "{ca.path}"\n')  # fmt: skip
        failed = reload(server, "reload_failed")
        assert f"0.0.0.0:{port}" in failed["reason"]
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                    "-L", f"0:127.0.0.1:{echo.port}"])  # fmt: skip
        try:
            client.wait_event("auth_failed")  # still required
        finally:
            client.stop()
        config.write_text('listen = ["0.0.0.0:0"]\ninsecure = true\n')  # said on purpose
        reload(server)
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log
