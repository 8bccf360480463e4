"""The Python API (issue 23, docs/api.md): a server and a client started from Python,
from a plain script and from asyncio, with checksummed transfers through -L and -R,
forwards added and cancelled, a stop that drains, and each typed exception."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from functools import partial
from pathlib import Path

import pytest
from certs import secret_file
from security_support import SECRET
from support import (
    ChaosRelay,
    Exchange,
    PortHolder,
    check_exchange,
    payload,
    recv_exactly,
    run_exchange,
    run_exchanges,
    sha,
    wait_until,
)

import reactor_mux
from reactor_mux import (
    AsyncClient,
    AsyncServer,
    AuthenticationFailed,
    Client,
    ConfigurationError,
    ForwardFailed,
    Server,
    ServerUnreachable,
    ServerUnusable,
    TunnelError,
    TunnelStopped,
)
from reactor_mux.security.keygen import generate

SIZE = 2_000_000


def tunnel_threads() -> list[threading.Thread]:
    """The reactor threads of API tunnels still alive in this process."""
    return [t for t in threading.enumerate() if t.name.startswith("reactor-mux")]


def transfer(port: int, target, seed: int) -> None:  # type: ignore[no-untyped-def]
    exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=seed)
    run_exchange(port, exchange)
    check_exchange(exchange, target)


def test_a_tunnel_from_a_script_carries_l_and_r_and_stops_cleanly(hash_target, tmp_path):
    secret = secret_file(tmp_path, "secret", SECRET)
    target = f"127.0.0.1:{hash_target.port}"
    with Server("127.0.0.1:0", secret_file=secret, allow_connect=[target]) as server:
        [(host, port)] = server.addresses
        assert (host, port > 0) == ("127.0.0.1", True)
        with Client(f"127.0.0.1:{port}", secret_file=secret, local_forward=[f"0:{target}"],
                    remote_forward=[f"0:{target}"], keepalive_interval=5) as tunnel:  # fmt: skip
            local, remote = tunnel.forwards
            assert (local.forward, local.state) == (f"-L 0:{target}", "forwarding")
            assert remote.bound is not None and remote.listening == ()
            for seed, forward in ((7100, local), (7102, remote)):
                transfer(forward.port, hash_target, seed)
            [channel] = tunnel.status()["channels"]
            assert channel["state"] == "open"
            assert len(server.status()["channels"]) == 1
        assert not tunnel.running
        with pytest.raises(TunnelStopped):
            tunnel.status()
    assert not server.running
    assert wait_until(lambda: not tunnel_threads(), 10), tunnel_threads()


def test_forwards_are_added_and_cancelled_while_running(hash_target):
    target = f"127.0.0.1:{hash_target.port}"
    with Server("127.0.0.1:0") as server:
        port = server.addresses[0][1]
        with Client(f"127.0.0.1:{port}", local_forward=[f"0:{target}"]) as tunnel:
            added = tunnel.add_forward("-L", f"127.0.0.1:0:127.0.0.1:{hash_target.port}")
            assert (
                added.listening and added.forward == f"-L 127.0.0.1:0:127.0.0.1:{hash_target.port}"
            )
            deadline = time.monotonic() + 10
            while tunnel.forwards[1].state != "forwarding" and time.monotonic() < deadline:
                time.sleep(0.02)
            transfer(tunnel.forwards[1].port, hash_target, 7110)
            tunnel.cancel_forward("-L", f"127.0.0.1:0:127.0.0.1:{hash_target.port}")
            assert [f.forward for f in tunnel.forwards] == [f"-L 0:{target}"]
            with pytest.raises(ForwardFailed, match="is not forwarded"):
                tunnel.cancel_forward("-L", f"127.0.0.1:0:127.0.0.1:{hash_target.port}")
            with pytest.raises(ConfigurationError):
                tunnel.add_forward("-L", "not a spec")


def test_stop_lets_an_open_stream_finish(hash_target):
    target = f"127.0.0.1:{hash_target.port}"
    with Server("127.0.0.1:0") as server:
        tunnel = Client(f"127.0.0.1:{server.addresses[0][1]}", local_forward=[f"0:{target}"])
        tunnel.start()
        exchange = Exchange(send_len=20_000_000, reply_len=20_000_000, seed=7120)
        mover = threading.Thread(target=run_exchange, args=(tunnel.forwards[0].port, exchange))
        mover.start()

        def moving() -> bool:
            [channel] = tunnel.status()["channels"]
            return any(stream["bytes_received"] for stream in channel["streams"])

        assert wait_until(moving, 15)  # under way when the stop begins
        tunnel.stop(drain_timeout=30)
        mover.join(60)
        check_exchange(exchange, hash_target)


def test_each_failure_is_its_own_exception(tmp_path, echo):
    secret = secret_file(tmp_path, "secret", SECRET)
    wrong = secret_file(tmp_path, "wrong", "not the secret at all, but long")
    forward = [f"0:127.0.0.1:{echo.port}"]
    with Server("127.0.0.1:0", secret_file=secret, allow_connect=[f"127.0.0.1:{echo.port}"]) as s:
        address = f"127.0.0.1:{s.addresses[0][1]}"
        # The line names the API's own way to keep trying, not the command line's.
        keeps_trying = r"refused this client.*\(persist=True keeps trying\)$"
        with pytest.raises(AuthenticationFailed, match=keeps_trying):
            Client(address, secret_file=wrong, local_forward=forward).start()
        with pytest.raises(ForwardFailed, match="not allowed by the server's --allow-connect"):
            Client(address, secret_file=secret, local_forward=["0:127.0.0.1:1"]).start()
        with pytest.raises(ServerUnusable, match="plaintext server"):
            Client(address, secret_file=secret, local_forward=forward, tls=True,
                   tls_fingerprint="00" * 32).start()  # fmt: skip
    with PortHolder() as ports:
        closed = f"127.0.0.1:{ports.take()}"
        with pytest.raises(ServerUnreachable, match="giving up after 2 connection attempt"):
            Client(closed, local_forward=forward, connect_attempts=2, reconnect_min=0.05).start()
        with pytest.raises(ServerUnreachable, match=r"no channel .* within 1s"):
            Client(closed, local_forward=forward, start_timeout=1, reconnect_min=0.05).start()
    with pytest.raises(ConfigurationError, match="client has no option no_such_option"):
        Client("127.0.0.1:1", local_forward=forward, no_such_option=1).start()
    with pytest.raises(ConfigurationError, match="bad -L"):
        Client("127.0.0.1:1", local_forward=["nonsense"]).start()
    with pytest.raises(ConfigurationError, match="nothing to forward"):
        Client("127.0.0.1:1").start()
    assert wait_until(lambda: not tunnel_threads(), 10), tunnel_threads()


def test_a_local_port_in_use_is_a_forward_failure(echo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with Server("127.0.0.1:0") as server, pytest.raises(ForwardFailed, match="in use"):
            Client(f"127.0.0.1:{server.addresses[0][1]}",
                   local_forward=[f"127.0.0.1:{port}:127.0.0.1:{echo.port}"]).start()  # fmt: skip


def test_asyncio_programs_use_it_without_blocking_their_loop(hash_target):
    async def main() -> tuple[int, str, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        beat = asyncio.create_task(ticker())
        async with AsyncServer("127.0.0.1:0") as server:
            port = server.addresses[0][1]
            forward = [f"0:127.0.0.1:{hash_target.port}"]
            async with AsyncClient(f"127.0.0.1:{port}", local_forward=forward) as tunnel:
                reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.forwards[0].port)
                writer.write((SIZE).to_bytes(8, "big") + (7130).to_bytes(8, "big"))
                writer.write(payload(7131, SIZE))
                await writer.drain()
                writer.write_eof()
                digest, got = hashlib.sha256(), 0
                while chunk := await reader.read(65536):
                    digest.update(chunk)
                    got += len(chunk)
                writer.close()
        beat.cancel()
        return got, digest.hexdigest(), ticks

    got, digest, ticks = asyncio.run(main())
    assert (got, digest) == (SIZE, sha(payload(7130, SIZE)))
    assert ticks > 5  # the loop kept running while the tunnel started and stopped


def test_a_plain_script_in_its_own_process(hash_target, tmp_path):
    script = tmp_path / "tunnel.py"
    script.write_text(
        textwrap.dedent(f"""
        import hashlib, socket, struct
        import reactor_mux

        with reactor_mux.Server("127.0.0.1:0") as server:
            port = server.addresses[0][1]
            with reactor_mux.Client(f"127.0.0.1:{{port}}",
                                    local_forward=["0:127.0.0.1:{hash_target.port}"]) as tunnel:
                with socket.create_connection(("127.0.0.1", tunnel.forwards[0].port)) as conn:
                    conn.sendall(struct.pack(">QQ", 100000, 7140))
                    conn.shutdown(socket.SHUT_WR)
                    data = b""
                    while chunk := conn.recv(65536):
                        data += chunk
        print(len(data), hashlib.sha256(data).hexdigest())
    """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["100000", sha(payload(7140, 100000))]
    assert reactor_mux.__version__


def test_a_forward_refused_after_start_up_is_asked_again_not_fatal(echo):
    """Start-up's promise (every forward up, or an exception) is over once kept: a
    reconnect that finds an -R port taken asks again later, as the CLI does."""
    with PortHolder() as ports:
        wanted = ports.take()
    with Server("127.0.0.1:0") as server:
        relay = ChaosRelay(server.addresses[0][1])
        try:
            forward = [f"{wanted}:127.0.0.1:{echo.port}"]
            tunnel = Client(f"127.0.0.1:{relay.port}", resume_timeout=0, reconnect_min=0.5,
                            reconnect_max=1, remote_forward=forward)  # fmt: skip
            with tunnel:
                assert tunnel.forwards[0].bound == ("127.0.0.1", wanted)
                relay.cut()
                squatter = socket.socket()
                deadline = time.monotonic() + 10
                while True:  # the server frees the port once it sees the channel gone
                    try:
                        squatter.bind(("127.0.0.1", wanted))
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "the server kept the port"
                        time.sleep(0.02)
                squatter.listen()
                assert wait_until(lambda: tunnel.forwards[0].state.startswith("refused"), 15)
                assert tunnel.running
                squatter.close()
                assert wait_until(lambda: tunnel.forwards[0].state == "forwarding", 15)
                with socket.create_connection(("127.0.0.1", wanted), timeout=10) as conn:
                    conn.sendall(b"asked again")
                    assert recv_exactly(conn, 11) == b"asked again"
        finally:
            relay.close()


def test_a_tunnel_starts_once_and_process_options_are_refused(echo, tmp_path):
    with Server("127.0.0.1:0") as server:
        with pytest.raises(reactor_mux.TunnelError, match="started already"):
            server.start()
        address = f"127.0.0.1:{server.addresses[0][1]}"
        forward = [f"0:127.0.0.1:{echo.port}"]
        for option in ({"control": tmp_path / "c.sock"}, {"log_file": tmp_path / "log"},
                       {"verbose": True}, {"metrics": "127.0.0.1:0"}):  # fmt: skip
            with pytest.raises(ConfigurationError, match="a process's option, not a tunnel's"):
                Client(address, local_forward=forward, **option).start()
        config = secret_file(tmp_path, "client.toml", f'server = "{address}"\nquiet = true\n')
        with pytest.raises(ConfigurationError, match="quiet is a process's option"):
            Client(config=config, local_forward=forward).start()
        with pytest.raises(ConfigurationError, match="help and version"):
            Client(address, help=True).start()
        # A misspelt keyword is named with the one meant; a prefix is not taken for it.
        with pytest.raises(ConfigurationError,
                           match=r"client has no option local_forwrd \(did you mean "
                           r"local_forward\?\)"):  # fmt: skip
            Client(address, local_forwrd=forward).start()
        with pytest.raises(ConfigurationError, match="client has no option keepalive "):
            Client(address, local_forward=forward, keepalive=5).start()
        with pytest.raises(ConfigurationError, match="server has no option allow_conect"):
            Server("127.0.0.1:0", allow_conect=["*:*"]).start()
    assert not (tmp_path / "c.sock").exists() and not (tmp_path / "log").exists()


def test_a_cancelled_async_start_leaves_nothing_running(echo):
    """asyncio.wait_for around ``async with`` cancels a start under way: the tunnel
    it was opening is stopped, its port closed, its thread gone."""

    async def main(port: int) -> None:
        client = AsyncClient(f"127.0.0.1:{port}", local_forward=[f"0:127.0.0.1:{echo.port}"],
                             reconnect_min=0.05)  # fmt: skip
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.__aenter__(), 0.5)
        assert not client.sync.running

    with PortHolder() as ports:  # held, not listening: every connect is refused
        asyncio.run(main(ports.take()))
    assert wait_until(lambda: not [t for t in threading.enumerate()
                                   if t.name.startswith("reactor-mux")], 10)  # fmt: skip


def test_several_tunnels_in_one_process_move_data_at_once(hash_target):
    """Each tunnel's reactor runs in its own thread, and a compiled codec call lets the
    others run meanwhile: nothing the codec writes into may be shared between them
    (its scratch space was, once, and a server read a client's command half-written)."""
    target = f"127.0.0.1:{hash_target.port}"
    with Server("127.0.0.1:0") as server:
        address = f"127.0.0.1:{server.addresses[0][1]}"
        tunnels = [Client(address, local_forward=[f"0:{target}"]).start() for _ in range(3)]
        try:
            exchanges = [Exchange(send_len=SIZE, reply_len=SIZE, seed=7200 + 2 * i)
                         for i in range(6)]  # fmt: skip
            ports = [tunnels[i % 3].forwards[0].port for i in range(len(exchanges))]
            run_exchanges(exchanges, hash_target, ports)
            assert all(len(t.status()["channels"]) == 1 for t in tunnels)
        finally:
            for tunnel in tunnels:
                tunnel.stop(0)


def test_tls_tunnels_in_one_process_at_once(tmp_path, hash_target):
    """The plane's TLS binding and its BIO methods are made once per process, so tunnels
    handshaking in several threads at once all get the plane's records."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    pin = generate(cert, key, ["127.0.0.1"])
    secret = secret_file(tmp_path, "secret", SECRET)
    target = f"127.0.0.1:{hash_target.port}"
    with Server("127.0.0.1:0", tls_cert=cert, tls_key=key, secret_file=secret) as server:
        address = f"127.0.0.1:{server.addresses[0][1]}"
        clients = [Client(address, tls=True, tls_fingerprint=pin, secret_file=secret,
                          local_forward=[f"0:{target}"]) for _ in range(3)]  # fmt: skip
        starters = [threading.Thread(target=client.start) for client in clients]
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join(60)
        try:
            for index, client in enumerate(clients):
                transfer(client.forwards[0].port, hash_target, 7300 + 2 * index)
        finally:
            for client in clients:
                client.stop(0)


def test_unix_socket_forwards_report_their_paths(hash_target):
    """``Forward.path``: where a forward listens on a Unix socket (here for ``-L``, on
    the server for ``-R``); asking such a forward for a port is a clear error."""
    directory = Path(tempfile.mkdtemp(prefix="rmux-api-", dir="/tmp"))  # short: 107 bytes
    local, remote = directory / "l.sock", directory / "r.sock"
    target = f"127.0.0.1:{hash_target.port}"
    try:
        with Server("127.0.0.1:0", allow_bind=[f"{directory}/*.sock"]) as server:
            [(_, port)] = server.addresses
            with Client(f"127.0.0.1:{port}", local_forward=[f"{local}:{target}"],
                        remote_forward=[f"{remote}:{target}"]) as tunnel:  # fmt: skip
                by_path = {forward.path: forward for forward in tunnel.forwards}
                assert set(by_path) == {str(local), str(remote)}
                assert by_path[str(remote)].bound is None
                with pytest.raises(TunnelError, match="listens on the Unix socket"):
                    _ = by_path[str(local)].port
                for seed, path in ((7300, local), (7302, remote)):
                    exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=seed)
                    run_exchange(0, exchange, connect=partial(unix_socket_to, path))
                    check_exchange(exchange, hash_target)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def unix_socket_to(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    return sock


def test_websocket_and_udp_from_the_api():
    """The URL form of the server, ws_path and udp: forwards reach the API as they
    reach the command line."""
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                data, source = echo.recvfrom(65_535)
            except OSError:
                return
            echo.sendto(data[::-1], source)

    threading.Thread(target=answer, daemon=True).start()
    try:
        with Server("127.0.0.1:0", ws_path="/rmux") as server:
            [(_, port)] = server.addresses
            target = f"127.0.0.1:{echo.getsockname()[1]}"
            with Client(f"ws://127.0.0.1:{port}/rmux", local_forward=[f"udp:0:{target}"]) as tunnel:
                [forward] = tunnel.forwards
                assert forward.listening and forward.forward.startswith("-L udp:")
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(5)
                    sock.sendto(b"datagram", ("127.0.0.1", forward.port))
                    assert sock.recv(64) == b"margatad"
    finally:
        echo.close()
