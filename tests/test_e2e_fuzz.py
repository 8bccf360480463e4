"""Mutated conversations against a real server, for a bounded time.

Each fuzz connection sends a mutated client conversation (the mutations of
test_session_fuzz.py, drawn from a seeded generator so a failure reproduces),
reads whatever comes back and disconnects.  Meanwhile a good client moves
checksummed data.  Afterwards the server must be alive with no traceback, the
good transfer intact, and its file descriptors back to where they were.
"""

from __future__ import annotations

import random
import socket
import threading
import time

from support import Exchange, check_exchange, run_exchange, wait_until
from test_session_fuzz import mutate, opening, using

from reactor_mux.tools.procs import fd_count

FUZZ_SECONDS = 6.0


def random_mutations(rng: random.Random) -> list[tuple]:
    kinds = ["flip", "insert", "delete", "duplicate", "drop", "swap", "foreign"]
    out: list[tuple] = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(kinds)
        if kind == "flip":
            out.append((kind, rng.randrange(10**6), rng.randrange(8)))
        elif kind == "insert":
            out.append((kind, rng.randrange(10**6), rng.randbytes(rng.randint(1, 20))))
        elif kind == "delete":
            out.append((kind, rng.randrange(10**6), rng.randint(1, 20)))
        elif kind in ("duplicate", "drop"):
            out.append((kind, rng.randrange(100)))
        elif kind == "swap":
            out.append((kind, rng.randrange(100), rng.randrange(100)))
        else:
            out.append((kind, rng.randrange(100), rng.randrange(2**32), rng.randint(0, 1),
                        rng.randbytes(rng.randint(0, 40))))  # fmt: skip
    return out


def fuzz_one(port: int, rng: random.Random) -> None:
    wire = mutate(opening(), random_mutations(rng)) + mutate(using(), random_mutations(rng))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
            split = rng.randint(0, len(wire))
            conn.sendall(wire[:split])
            time.sleep(rng.choice([0, 0, 0.01]))
            conn.sendall(wire[split:])
            conn.settimeout(0.3)
            try:
                while conn.recv(65536):
                    pass
            except TimeoutError:
                pass  # still open: a mutation that happened to be valid; we hang up
    except OSError:
        pass  # reset by the server: fine


def test_mutated_conversations_never_hurt_the_server_or_a_good_client(tunnel, hash_target):
    _client, forwards = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
    baseline = fd_count(tunnel.server.pid)
    good = Exchange(30_000_000, 30_000_000, seed=4040)
    transfer = threading.Thread(target=run_exchange, args=(forwards[0][1], good))
    transfer.start()
    rng = random.Random(20261124)
    deadline = time.monotonic() + FUZZ_SECONDS
    attempts = 0
    while time.monotonic() < deadline:
        fuzz_one(tunnel.server_port, rng)
        attempts += 1
    transfer.join(120)
    check_exchange(good, hash_target)
    assert attempts > 50
    assert tunnel.server.proc.poll() is None, "the server died"
    assert "Traceback" not in tunnel.server.log and "internal error" not in tunnel.server.log
    assert wait_until(lambda: fd_count(tunnel.server.pid) == baseline, timeout=15), (
        f"server fds {fd_count(tunnel.server.pid)} != {baseline} after {attempts} fuzz channels"
    )
