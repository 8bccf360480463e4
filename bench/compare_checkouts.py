"""Before/after: the same benchmarks against two checkouts, alternating, in one run.

    python bench/compare_checkouts.py OLD NEW [--rounds 6]
    python bench/compare_checkouts.py OLD NEW --instructions [--mib 32]
    python bench/compare_checkouts.py OLD NEW --instructions --round-trips 2000

Each checkout needs its own ``.venv`` with the project installed in it
(``pip install -e '.[test]'``).  This directory is copied into both as
``bench-compare/`` so both run the same benchmark code against their own
``reactor_mux``; the runs alternate OLD, NEW, NEW, OLD, ... so drift in the
machine's load falls on both.  It prints the median of every ``extra_info``
figure per side and the NEW/OLD ratio.

``--instructions`` instead counts the user-space instructions both tunnel
processes spend per MiB of a bulk ``-R`` transfer under callgrind (the same
count whatever else the machine does), with a zero-byte run subtracted so
start-up does not count.  With ``--round-trips N`` it counts them per 64-byte
request/response on one connection through ``-R`` to an echo target instead:
the small-message path, where wall-clock and CPU time are too noisy here to
show a change of a few percent.

``--old-args`` and ``--new-args`` add options to both tunnel processes of one
side, so one checkout can be compared with itself under two settings:

    python bench/compare_checkouts.py . . --instructions --old-args="--resume-timeout 0"

``--codec python`` runs both sides on the pure-Python codec and data path
(``REACTOR_MUX_CODEC=python``) instead of the compiled one.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from conftest import SinkServer
from test_tunnel import ping_pong, push

from reactor_mux.tools.targets import EchoServer

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "test_tunnel.py::test_bulk_one_way[tunnel_L]",
    "test_tunnel.py::test_bulk_one_way[tunnel_R]",
    "test_tunnel.py::test_bulk_one_way[relay2]",
    "test_small_messages.py::test_small_messages_through_the_tunnel[c]",
]


CODEC = ["c"]  # the codec both sides run, set once from --codec


def run_benchmarks(checkout: Path, out: Path) -> dict[tuple[str, str], float]:
    target = checkout / "bench-compare"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(HERE, target, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "REACTOR_MUX_CODEC": CODEC[0]}
    tests = [f"bench-compare/{name}" for name in BENCHMARKS]
    command = [str(checkout / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
               *tests, f"--benchmark-json={out}"]  # fmt: skip
    try:
        subprocess.run(command, cwd=checkout, env=env, check=True, capture_output=True)
    finally:
        shutil.rmtree(target, ignore_errors=True)
    figures = {}
    for bench in json.loads(out.read_text())["benchmarks"]:
        for key, value in bench["extra_info"].items():
            figures[(bench["name"], key)] = value
    return figures


def compare_benchmarks(old: Path, new: Path, rounds: int) -> None:
    results: dict[tuple[str, str], dict[str, list[float]]] = collections.defaultdict(
        lambda: {"old": [], "new": []}
    )
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            order = (
                [("old", old), ("new", new)] if round_ % 2 == 0 else [("new", new), ("old", old)]
            )
            for side, checkout in order:
                figures = run_benchmarks(checkout, Path(tmp) / f"{side}-{round_}.json")
                for key, value in figures.items():
                    results[key][side].append(value)
                print(f"round {round_ + 1}/{rounds}: {side} done", file=sys.stderr)
    for (name, figure), sides in results.items():
        before, after = statistics.median(sides["old"]), statistics.median(sides["new"])
        print(f"{name:60} {figure:18} old {before:>10.2f}  new {after:>10.2f}  "
              f"new/old {after / before:.3f}")  # fmt: skip


# ------------------------------------------------------------- instructions


def _instructions(checkout: Path, target_port: int, load: Callable[[int], None],
                  tmp: Path, extra: list[str]) -> int:  # fmt: skip
    """User-space instructions of a server and a client while ``load(port)`` runs
    through the client's -R to ``target_port``."""

    def start(name: str, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp / name}.cg",
             str(checkout / ".venv/bin/python"), "-m", "reactor_mux", *args],
            cwd=checkout, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "REACTOR_MUX_CODEC": CODEC[0], "PYTHONHASHSEED": "0"},
        )  # fmt: skip

    def wait_for(proc: subprocess.Popen[str], pattern: str) -> int:
        assert proc.stderr is not None
        while line := proc.stderr.readline():
            if match := re.search(pattern, line):
                return int(match.group(1))
        raise RuntimeError(f"{proc.args}: exited before logging {pattern!r}")

    server = start("server", "server", "--listen", "127.0.0.1:0", *extra)
    port = wait_for(server, r"listening on \S+:(\d+)")
    client = start("client", "client", "--server", f"127.0.0.1:{port}",
                   "-R", f"0:127.0.0.1:{target_port}", *extra)  # fmt: skip
    remote = wait_for(client, r"forwarding -R \S+:(\d+)")
    for proc in (server, client):
        threading.Thread(target=proc.communicate, daemon=True).start()
    load(remote)
    time.sleep(0.5)
    for proc in (client, server):
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
    total = 0
    for name in ("server", "client"):
        for line in (tmp / f"{name}.cg").read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                total += int(line.split()[1])
                break
    return total


def compare_instructions(old: Path, new: Path, mib: int, round_trips: int,
                         extra: dict[str, list[str]]) -> None:  # fmt: skip
    if round_trips:
        server: EchoServer | SinkServer = EchoServer()
        count, unit = round_trips, "64-byte round trip"
        load: Callable[[int], None] = lambda port: ping_pong(port, round_trips)  # noqa: E731
    else:
        server, count, unit = SinkServer(), mib, "MiB"
        load = lambda port: push(port, mib << 20)  # noqa: E731
    target = server.port
    try:
        with tempfile.TemporaryDirectory() as tmp:
            per: dict[str, float] = {}
            for side, checkout in (("old", old), ("new", new)):
                idle = _instructions(checkout, target, lambda _port: None, Path(tmp), extra[side])
                busy = _instructions(checkout, target, load, Path(tmp), extra[side])
                per[side] = (busy - idle) / count
                print(f"{side} {' '.join(extra[side])}: {per[side]:,.0f} instructions per "
                      f"{unit} (client + server, user space; start-up {idle:,})")  # fmt: skip
            print(f"new/old: {per['new'] / per['old']:.3f}")
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--instructions", action="store_true")
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--round-trips", type=int, default=0)
    parser.add_argument("--old-args", default="", help="options for OLD's server and client")
    parser.add_argument("--new-args", default="", help="options for NEW's server and client")
    parser.add_argument("--codec", choices=("c", "python"), default="c")
    args = parser.parse_args()
    CODEC[0] = args.codec
    if args.instructions:
        extra = {"old": args.old_args.split(), "new": args.new_args.split()}
        compare_instructions(args.old.resolve(), args.new.resolve(), args.mib, args.round_trips,
                             extra)  # fmt: skip
    else:
        compare_benchmarks(args.old.resolve(), args.new.resolve(), args.rounds)


if __name__ == "__main__":
    main()
