"""Soak: ten minutes of mixed traffic, memory and descriptors sampled throughout.

Marked slow (not in the default run):

    SOAK_SECONDS=600 SOAK_REPORT=soak.json python -m pytest -m slow tests/test_soak.py -s

Workers keep four kinds of traffic going through -L and -R at once: bulk
exchanges of 0.5-8 MB each way (checked by SHA-256), 64-byte ping-pongs,
bursts of short-lived connections, and half-close request/reply.  Every few
seconds the client's and server's RSS and fd counts are sampled.  The run
fails on any corrupted or failed transfer, if memory in the last fifth of the
run is more than 10% (+4 MiB) above the second fifth, or if descriptors do not
return to their baseline once traffic stops.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time

import pytest
from support import (
    EchoServer,
    Exchange,
    HashReplyServer,
    ReplyAfterEOFServer,
    Tunnel,
    check_exchange,
    drain,
    run_exchange,
    wait_until,
)

from reactor_mux.tools.procs import fd_count, proc_status

SECONDS = float(os.environ.get("SOAK_SECONDS", "600"))
SAMPLE_EVERY = 5.0


@pytest.mark.slow
def test_soak_mixed_traffic_keeps_memory_and_descriptors_flat():
    hashing, echo, half_close = HashReplyServer(), EchoServer(), ReplyAfterEOFServer()
    tunnel = Tunnel()
    stop = threading.Event()
    failures: list[str] = []
    counts = {"bulk": 0, "pingpong": 0, "short": 0, "halfclose": 0}
    try:
        client, forwards = tunnel.client(
            "-L", f"0:127.0.0.1:{hashing.port}", "-R", f"0:127.0.0.1:{hashing.port}",
            "-L", f"0:127.0.0.1:{echo.port}", "-R", f"0:127.0.0.1:{half_close.port}",
        )  # fmt: skip
        ports = {(kind, target.rsplit(":", 1)[1]): port for kind, port, target in forwards}
        bulk_ports = [ports[("L", str(hashing.port))], ports[("R", str(hashing.port))]]
        echo_port = ports[("L", str(echo.port))]
        half_port = ports[("R", str(half_close.port))]
        pids = {"client": client.pid, "server": tunnel.server.pid}
        baseline_fds = {name: fd_count(pid) for name, pid in pids.items()}

        def guarded(name: str, body) -> None:  # type: ignore[no-untyped-def]
            rng = random.Random(name)
            while not stop.is_set():
                try:
                    body(rng)
                    counts[name.split("-")[0]] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is reported
                    failures.append(f"{name}: {exc!r}")
                    time.sleep(0.5)

        seeds = iter(range(10**6, 10**9, 7))

        def bulk(rng: random.Random) -> None:
            ex = Exchange(rng.randint(500_000, 8_000_000), rng.randint(500_000, 8_000_000),
                          seed=next(seeds))  # fmt: skip
            run_exchange(rng.choice(bulk_ports), ex)
            check_exchange(ex, hashing)
            hashing.received.pop(ex.seed, None)

        def pingpong(rng: random.Random) -> None:
            with socket.create_connection(("127.0.0.1", echo_port), timeout=30) as conn:
                for _ in range(200):
                    conn.sendall(b"p" * 64)
                    got = b""
                    while len(got) < 64:
                        chunk = conn.recv(64 - len(got))
                        assert chunk, "EOF in ping-pong"
                        got += chunk

        def short(rng: random.Random) -> None:
            for _ in range(20):
                with socket.create_connection(("127.0.0.1", echo_port), timeout=30) as conn:
                    conn.sendall(b"hello")
                    conn.shutdown(socket.SHUT_WR)
                    assert drain(conn)[0] == 5

        def halfclose(rng: random.Random) -> None:
            with socket.create_connection(("127.0.0.1", half_port), timeout=30) as conn:
                conn.sendall(b"q" * rng.randint(0, 200_000))
                conn.shutdown(socket.SHUT_WR)
                size, _digest = drain(conn)
                assert size > 3 * 1024 * 1024

        workers = [threading.Thread(target=guarded, args=(name, body), daemon=True)
                   for name, body in [("bulk-1", bulk), ("bulk-2", bulk), ("pingpong-1", pingpong),
                                      ("short-1", short), ("halfclose-1", halfclose)]]  # fmt: skip
        samples: list[dict[str, float]] = []
        started = time.monotonic()
        for worker in workers:
            worker.start()
        while time.monotonic() - started < SECONDS:
            time.sleep(SAMPLE_EVERY)
            sample: dict[str, float] = {"t": round(time.monotonic() - started, 1)}
            for name, pid in pids.items():
                sample[f"{name}_rss_kib"] = proc_status(pid, "VmRSS")
                sample[f"{name}_fds"] = fd_count(pid)
            samples.append(sample)
        stop.set()
        for worker in workers:
            worker.join(120)
        settled = wait_until(
            lambda: all(fd_count(pid) == baseline_fds[name] for name, pid in pids.items()),
            timeout=30,
        )
        final_fds = {name: fd_count(pid) for name, pid in pids.items()}

        fifth = max(1, len(samples) // 5)
        report: dict[str, object] = {"seconds": SECONDS, "counts": counts,
                                     "failures": failures[:20], "baseline_fds": baseline_fds,
                                     "final_fds": final_fds, "samples": samples}  # fmt: skip
        for name in pids:
            early = [s[f"{name}_rss_kib"] for s in samples[fifth : 2 * fifth]]
            late = [s[f"{name}_rss_kib"] for s in samples[-fifth:]]
            report[f"{name}_rss_kib_second_fifth_mean"] = sum(early) / len(early)
            report[f"{name}_rss_kib_last_fifth_mean"] = sum(late) / len(late)
            report[f"{name}_rss_kib_max"] = max(s[f"{name}_rss_kib"] for s in samples)
            report[f"{name}_fds_max"] = max(s[f"{name}_fds"] for s in samples)
        if os.environ.get("SOAK_REPORT"):
            with open(os.environ["SOAK_REPORT"], "w") as out:
                json.dump(report, out, indent=1)
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=1))

        assert not failures, failures[:5]
        assert all(counts.values()), counts
        for name in pids:
            early = report[f"{name}_rss_kib_second_fifth_mean"]
            late = report[f"{name}_rss_kib_last_fifth_mean"]
            assert isinstance(early, float) and isinstance(late, float)
            assert late <= early * 1.10 + 4096, (
                f"{name} RSS grew from {early:.0f} to {late:.0f} KiB"
            )
        assert settled, f"descriptors {final_fds} did not return to {baseline_fds}"
    finally:
        stop.set()
        tunnel.close()
        for target in (hashing, echo, half_close):
            target.close()
