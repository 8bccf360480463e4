"""An idle fleet (issue 26): what N idle authenticated channels cost one server.

A server (with a shared secret, and TLS for ``tls``) and bench/swarm.py, which
opens ``CHANNELS`` channels from one process, each with an ``-L`` (and, for
``remote``, an ``-R``), measures the server's RSS, descriptors and CPU per
channel from /proc while they are idle, then ping-pongs on 1% of them (one every
10 ms each, every byte hashed).  ``extra_info`` holds the swarm's whole report.

The memory targets are asserted: at most 32 KiB of server RSS per idle plaintext
channel, 64 KiB with TLS.  Idle CPU (target: 0.05% of a core per 100 channels)
and this swarm's round trips are recorded, not asserted (the idle and active
channels share one Python process here, whose own work is in the round trips).

``test_active_among_idle`` (bench/among_idle.py) asserts item 4's p99: the
active channels in a swarm of their own, measured alone and then among the
idle ones on the same server, in rounds; the median p99 among the idle may be
at most ``P99_RATIO_LIMIT`` times the median alone.

Run: ``python -m pytest bench/test_idle.py -p no:xdist`` (``CHANNELS=10000`` for
the issue's figures; at the default 2,000 the idle tests take a few minutes,
the p99 tests ``ROUNDS`` (4) rounds of about a minute each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reactor_mux.tools.procs import ReactorMuxProcess

HERE = Path(__file__).parent
CHANNELS = int(os.environ.get("CHANNELS", "2000"))
IDLE_SECONDS = 30
RSS_TARGET = {"plain": 32 * 1024, "tls": 64 * 1024}
ROUNDS = int(os.environ.get("ROUNDS", "4"))
P99_RATIO_LIMIT = 1.15
"""Target: no worse.  The slack is this machine's noise (2 cores): with nothing
held idle in either phase the ratio came out at 0.91 to 1.14 in nine runs of
four or six rounds (docs/performance.md, "An idle fleet").  At 10,000 channels
the target is not met today (1.19, 1.33, and 1.38 with -R)."""


@pytest.fixture(scope="module")
def echo_port():
    proc = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), "echo"],
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    yield int(proc.stderr.readline().rsplit(":", 1)[1])
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("kind", ["plain", "tls", "remote"])
def test_idle_channels(benchmark, tmp_path: Path, echo_port: int, kind: str) -> None:
    secret, cert, key = tmp_path / "secret", tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([sys.executable, "-m", "reactor_mux", "keygen", "--secret", str(secret),
                    "--cert", str(cert), "--key", str(key), "--name", "localhost"],
                   check=True, capture_output=True)  # fmt: skip
    server_tls = ["--tls-cert", str(cert), "--tls-key", str(key)] if kind == "tls" else []
    swarm_tls = ["--tls", "--ca", str(cert), "--server-name", "localhost"] if kind == "tls" else []
    server = ReactorMuxProcess(["server", "--listen", "127.0.0.1:0", "--secret-file", str(secret),
                                "--max-channels", str(2 * CHANNELS), *server_tls])  # fmt: skip
    try:
        port = server.listening_port()

        def run() -> dict:
            done = subprocess.run(
                [sys.executable, str(HERE / "swarm.py"), "--server", f"127.0.0.1:{port}",
                 "--secret-file", str(secret), "--target", f"127.0.0.1:{echo_port}",
                 "--channels", str(CHANNELS), "--server-pid", str(server.proc.pid),
                 "--idle", str(IDLE_SECONDS), "--active", "0.01", "--busy", "10",
                 "--ping-interval", "10", *swarm_tls, *(["--remote"] if kind == "remote" else [])],
                check=True, capture_output=True, text=True, timeout=900)  # fmt: skip
            report: dict = json.loads(done.stdout)
            return report

        report = benchmark.pedantic(run, rounds=1, iterations=1)
        benchmark.extra_info.update(report)
        assert report["failed"] == 0 and report["channels"] == CHANNELS, report
        assert report["active"]["intact"], report
        assert report["server"]["rss_per_channel"] <= RSS_TARGET["tls" if kind == "tls"
                                                                 else "plain"], report  # fmt: skip
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["plain", "tls", "remote"])
def test_active_among_idle(benchmark, kind: str) -> None:
    """10 channels ping-pong (every 10 ms each) alone, then among CHANNELS - 10
    idle ones (- 100 with -R), the idle swarm on a core of its own
    (bench/among_idle.py)."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the pinned layout needs two CPUs")
    flags = {"plain": [], "tls": ["--tls"], "remote": ["--remote"]}[kind]
    # An -R is a listener: two descriptors per idle channel; 9,990 of them with
    # the active ten's would pass a hard limit of 20,000 (docs/performance.md).
    idle = CHANNELS - (100 if kind == "remote" else 10)

    def run() -> dict:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "among_idle.py"), "--idle-channels",
             str(idle), "--active", "10", "--rounds", str(ROUNDS), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            out, err = proc.communicate(timeout=1800)
        finally:
            if proc.poll() is None:  # SIGTERM: it stops its servers and swarms first
                proc.terminate()
                proc.communicate()
        assert out, err
        report: dict = json.loads(out)
        return report

    report = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(report)
    assert report["intact"], report
    assert report["ratio"] <= P99_RATIO_LIMIT, report
