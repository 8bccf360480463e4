"""Running out of file descriptors: no spinning, no crash, and service resumes."""

from __future__ import annotations

import socket
import time

from support import Exchange, MuxProcess, Tunnel, check_exchange, run_exchange, wait_until

from reactor_mux.tools.procs import cpu_time, fd_count

NOFILE = 48


def test_accept_without_descriptors_neither_spins_nor_crashes(hash_target):
    # Admission would turn the silent connections away long before the descriptors
    # run out (and penalise their source): lift it, to reach the descriptor limit.
    admit_all = ("--max-startups", "10000", "--per-source-max-startups", "10000",
                 "--per-source-penalties", "off")  # fmt: skip
    server = MuxProcess(
        ["server", "--listen", "127.0.0.1:0", "--handshake-timeout", "30", *admit_all],
        nofile=NOFILE,
    )
    hogs: list[socket.socket] = []
    try:
        port = server.listening_port()
        # Silent connections: each one the server accepts costs it a descriptor.
        for _ in range(NOFILE + 20):
            hogs.append(socket.create_connection(("127.0.0.1", port)))
        server.wait_event("accept_paused", timeout=5)
        assert wait_until(lambda: fd_count(server.pid) >= NOFILE - 1, timeout=5)
        before = cpu_time(server.pid)
        time.sleep(2.0)  # a measuring window: a spinning accept loop would burn most of it
        spent = cpu_time(server.pid) - before
        assert spent < 0.2, f"server used {spent:.2f}s of CPU in 2s while out of descriptors"
        assert server.count_event("accept_paused") == 1, "logged more than once"

        for hog in hogs:  # free them: the server sees EOF and closes those channels
            hog.close()
        hogs.clear()
        server.wait_event("accept_resumed", timeout=10)
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                    "-L", f"0:127.0.0.1:{hash_target.port}"])  # fmt: skip
        try:
            ex = Exchange(1_000_000, 1_000_000, seed=71)
            run_exchange(client.forwards(1, timeout=10)[0][1], ex)
            check_exchange(ex, hash_target)
        finally:
            client.stop()
        assert server.proc.poll() is None and "Traceback" not in server.log
    finally:
        for hog in hogs:
            hog.close()
        server.stop()


def test_targets_unreachable_for_lack_of_descriptors_are_refused_cleanly(echo):
    """The server cannot open sockets to targets: each stream gets SYN ERROR with the
    reason; the channel and the process live on."""
    tunnel = Tunnel()
    tunnel.server.stop()
    tunnel.server = MuxProcess(["server", "--listen", "127.0.0.1:0"], nofile=24)
    tunnel.server_port = tunnel.server.listening_port()
    held: list[socket.socket] = []
    try:
        client, forwards = tunnel.client("-L", f"0:127.0.0.1:{echo.port}")
        port = forwards[0][1]
        refused = 0
        for _ in range(40):
            conn = socket.create_connection(("127.0.0.1", port))
            try:  # the refusal (a reset) may come before our byte is even sent
                conn.sendall(b"x")
                if conn.recv(1) == b"x":
                    held.append(conn)
                    continue
            except (ConnectionResetError, BrokenPipeError):
                pass
            refused += 1
            conn.close()
        assert held and refused, (len(held), refused)
        client.wait_event("stream_refused")
        tunnel.server.wait_event("connect_failed")  # the server says why, once per stream
        for conn in held:
            conn.close()
        assert "Traceback" not in tunnel.server.log
    finally:
        for conn in held:
            conn.close()
        tunnel.close()


def max_open_files(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def test_the_server_raises_its_descriptor_limit_to_the_hard_one():
    """Started with a soft limit of 64 under a hard one of 4096 (a distribution's 1024
    under a large hard limit, scaled down): it serves with 4096."""
    server = MuxProcess(["server", "--listen", "127.0.0.1:0", "-v"], nofile=(64, 4096))
    try:
        server.listening_port()
        assert max_open_files(server.proc.pid) == (4096, 4096)
    finally:
        assert server.stop() == 0


def test_a_hard_limit_below_max_channels_is_said_in_one_line():
    """A hard limit of 300 leaves about 150 channels beside the startups (FULL 100, the
    busy replies, the listeners, a margin): --max-channels 1000 is more than that."""
    server = MuxProcess(["server", "--listen", "127.0.0.1:0", "--max-channels", "1000"],
                        nofile=300)  # fmt: skip
    try:
        short = server.wait_event("descriptors_short")
        assert short["level"] == "warning" and short["reason"] == "151 < 1000", short
        assert server.count_event("descriptors_short") == 1
    finally:
        assert server.stop() == 0
