"""Active channels among idle ones (issue 26, item 4): is a busy channel's p99
any worse when the server also holds thousands of idle channels?

Each round starts a server (a shared secret; TLS with ``--tls``), then:

1. *alone*: a swarm of ``--active`` channels (bench/swarm.py) ping-pongs 64
   bytes through its ``-L`` to an echo target, one every ``--ping-interval`` ms
   on each channel for ``--busy`` seconds, every byte hashed;
2. *among*: a second swarm opens ``--idle-channels`` idle channels (keepalive
   on, as ``reactor-mux client`` does) and holds them; once they are all up and
   ``--settle`` seconds have passed, the same active swarm runs again.  With
   ``--remote`` each idle channel also holds an ``-R`` listener on the server.

``--alone-active`` and ``--alone-ping-interval`` make the first phase another
load (say 10 channels every 10 ms against 100 among the idle every 100 ms: the
same round trips a second, on 10 channels or on 10,000).

The rounds' p99 figures are reported, with the median of each column and their
ratio (among / alone).  Both columns come from the same server build, in the
same run, so the machine's load moves both.

``--layout pinned`` puts the idle swarm on a core of its own and everything
else (server, echo target, active swarm) on another: on a small machine the
idle swarm's own Python work (a PING per channel per keepalive interval and
its answer, from one process) otherwise takes the cores the server and the
active swarm need, which a real fleet's clients, on machines of their own, do
not.  ``--layout shared`` lets the kernel place everything.

    python bench/among_idle.py --idle-channels 9990 --active 10 --rounds 4 [--layout shared]

The server's idle CPU is counted in the kernel's clock ticks (10 ms): over
a short ``--settle`` and a few hundred channels it reads 0, below what it can
resolve.  Each round first runs the active swarm for a couple of seconds
unmeasured (a fresh server's first use in neither column).  A round stops if
the idle swarm loses a channel.  Prints one JSON object; exit status 1 if a byte came back
wrong or an active channel failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from peers import Children  # bench/: its processes, stopped by process group

from reactor_mux.tools.procs import cpu_time, fd_count, proc_status

HERE = Path(__file__).parent
PYTHON = sys.executable
UP_TIMEOUT = 600.0
WARM_UP_SECONDS = 2.0
"""Each round's unmeasured ping-pong first, so that neither phase pays for a
fresh server's (or, in the first round, a fresh echo target's) first use."""
UP_LINE = re.compile(rb"up (\d+) channels, (\d+) failed")


def start(children: Children, args: list[str], cpus: set[int] | None,
          **popen: Any) -> subprocess.Popen[str]:  # fmt: skip
    """A child on ``cpus`` from its exec (the threads it starts later too)."""

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    return children.popen(args, preexec_fn=pin, **popen)


def listening(children: Children, args: list[str], cpus: set[int] | None,
              log: Path) -> tuple[int, int]:  # fmt: skip
    """(pid, port) of a child that writes ``listening on HOST:PORT`` on stderr."""
    with log.open("wb") as sink:
        proc = start(children, args, cpus, stdout=subprocess.DEVNULL, stderr=sink)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text(errors="replace").splitlines():
            if "listening on" in line:
                return proc.pid, int(line.rsplit(":", 1)[1].split()[0])
        time.sleep(0.02)
    raise RuntimeError(f"{args[1:3]} did not listen: {log.read_text()[-2000:]}")


class Round:
    """One server, measured alone and then among idle channels."""

    def __init__(
        self,
        options: argparse.Namespace,
        work: Path,
        echo_port: int,
        children: Children,
        cpus: tuple[set[int] | None, set[int] | None],
    ) -> None:
        self.options = options
        self.work = work
        self.echo_port = echo_port
        self.children = children
        self.main_cpus, self.idle_cpus = cpus

    def swarm_args(self, port: int) -> list[str]:
        tls = (["--tls", "--ca", str(self.work / "cert.pem"), "--server-name", "localhost"]
               if self.options.tls else [])  # fmt: skip
        return [PYTHON, str(HERE / "swarm.py"), "--server", f"127.0.0.1:{port}",
                "--secret-file", str(self.work / "secret"),
                "--target", f"127.0.0.1:{self.echo_port}", *tls]  # fmt: skip

    def active(self, port: int, channels: int, interval: float, busy: float) -> dict[str, Any]:
        """The ``active`` report of a swarm of ``channels`` pinging every ``interval`` ms.
        A wrong byte or a failed channel is in it (``intact``, ``failed``)."""
        args = [*self.swarm_args(port), "--channels", str(channels), "--active", "1",
                "--busy", str(busy), "--ping-interval", str(interval), "--idle", "0"]  # fmt: skip
        proc = start(self.children, args, self.main_cpus, stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE)  # fmt: skip
        out, err = proc.communicate(timeout=UP_TIMEOUT)
        try:
            report: dict[str, Any] = json.loads(out)["active"]
        except (ValueError, KeyError) as error:
            why = f"the active swarm failed ({proc.returncode}): {out} {err[-2000:]}"
            raise RuntimeError(why) from error
        return report

    def hold_idle(self, port: int, log: Path) -> tuple[subprocess.Popen[str], int, float]:
        """The idle swarm, once all its channels are up: (process, channels, seconds)."""
        options = self.options
        args = [*self.swarm_args(port), "--channels", str(options.idle_channels),
                "--idle", str(UP_TIMEOUT), *(["--remote"] if options.remote else [])]  # fmt: skip
        with log.open("wb") as sink:
            idle = start(self.children, args, self.idle_cpus, stdout=subprocess.DEVNULL,
                         stderr=sink)  # fmt: skip
        began = time.monotonic()
        while (up := UP_LINE.search(log.read_bytes())) is None:
            if idle.poll() is not None or time.monotonic() - began > UP_TIMEOUT:
                raise RuntimeError(f"the idle swarm did not come up: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        channels, failed = int(up.group(1)), int(up.group(2))
        if failed or channels < options.idle_channels:
            raise RuntimeError(f"the idle swarm failed: {log.read_text()[-2000:]}")
        return idle, channels, time.monotonic() - began

    def run(self) -> dict[str, Any]:
        try:
            return self._measure()
        finally:
            self.children.close()  # on success as on failure

    def _measure(self) -> dict[str, Any]:
        options, work = self.options, self.work
        tls = (["--tls-cert", str(work / "cert.pem"), "--tls-key", str(work / "key.pem")]
               if options.tls else [])  # fmt: skip
        most = options.idle_channels + max(options.active, options.alone_active) + 64
        server, port = listening(
            self.children,
            [PYTHON, "-m", "reactor_mux", "server", "--listen", "127.0.0.1:0",
             "--secret-file", str(work / "secret"), "--max-channels", str(most), *tls],
            self.main_cpus, work / "server.log")  # fmt: skip
        self.active(port, options.alone_active, options.alone_ping_interval, WARM_UP_SECONDS)
        alone = self.active(port, options.alone_active, options.alone_ping_interval, options.busy)
        rss_before, fds_before = proc_status(server, "VmRSS"), fd_count(server)
        idle, idle_count, up_seconds = self.hold_idle(port, work / "idle.err")
        time.sleep(options.settle / 2)  # the first barriers and keepalives
        cpu_before = cpu_time(server)
        time.sleep(options.settle / 2)
        idle_cpu = 100 * (cpu_time(server) - cpu_before) / (options.settle / 2)
        rss_idle = proc_status(server, "VmRSS")
        held = fd_count(server) - fds_before
        among = self.active(port, options.active, options.ping_interval, options.busy)
        held = min(held, fd_count(server) - fds_before)
        per_channel = 2 if options.remote else 1  # the channel, and its -R listener
        if idle.poll() is not None or held < idle_count * per_channel:
            raise RuntimeError(f"the idle channels were not all held ({held} descriptors)")
        return {
            "alone": alone,
            "among": among,
            "idle_up_seconds": round(up_seconds, 1),
            "server_descriptors_held": held,
            "server_rss_kib_per_idle": round((rss_idle - rss_before) / idle_count, 1),
            "server_idle_cpu_percent_per_100": round(idle_cpu * 100 / idle_count, 4),
        }


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    alone = [r["alone"]["p99_ms"] for r in rounds]
    among = [r["among"]["p99_ms"] for r in rounds]
    return {"p99_alone_ms": alone, "p99_among_ms": among,
            "median_alone_ms": statistics.median(alone),
            "median_among_ms": statistics.median(among),
            "ratio": round(statistics.median(among) / statistics.median(alone), 3)}  # fmt: skip


def positive(text: str) -> float:
    """A finite number above 0 (a time): 0, nan or inf would divide by zero,
    never end, or time nothing."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number above 0")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-channels", type=int, default=9990, help="idle channels")
    parser.add_argument("--active", type=int, default=10, help="channels that ping-pong")
    parser.add_argument(
        "--ping-interval", type=positive, default=10.0, help="ms between an active channel's pings"
    )
    parser.add_argument("--alone-active", type=int, help="the first phase's (default --active)")
    parser.add_argument(
        "--alone-ping-interval", type=positive, help="the first phase's (default --ping-interval)"
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds (a server each)")
    parser.add_argument("--busy", type=positive, default=10.0, help="seconds of ping-pong")
    parser.add_argument(
        "--settle",
        type=positive,
        default=30.0,
        help="seconds between the idle channels being up and the pings (the server's idle "
        "CPU is measured over the second half)",
    )
    parser.add_argument(
        "--layout",
        choices=["shared", "pinned"],
        default="pinned",
        help="pinned: the idle swarm on a core of its own, the rest on another",
    )
    parser.add_argument("--tls", action="store_true", help="TLS and a secret (else a secret)")
    parser.add_argument("--remote", action="store_true", help="an -R per idle channel as well")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))  # children: finally
    if options.alone_active is None:
        options.alone_active = options.active
    if options.alone_ping_interval is None:
        options.alone_ping_interval = options.ping_interval
    if min(options.idle_channels, options.active, options.alone_active, options.rounds) < 1:
        parser.error("--idle-channels, --active, --alone-active and --rounds must be at least 1")
    cpus: tuple[set[int] | None, set[int] | None] = (None, None)
    if options.layout == "pinned":
        available = sorted(os.sched_getaffinity(0))
        if len(available) < 2:
            parser.error("--layout pinned needs two CPUs")
        cpus = ({available[0]}, {available[-1]})
    children = Children()
    rounds = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        subprocess.run([PYTHON, "-m", "reactor_mux", "keygen", "--secret", str(work / "secret"),
                        "--cert", str(work / "cert.pem"), "--key", str(work / "key.pem"),
                        "--name", "localhost"], check=True, capture_output=True)  # fmt: skip
        try:
            _, echo_port = listening(children, [PYTHON, str(HERE / "loadgen.py"), "echo"],
                                     cpus[0], work / "echo.log")  # fmt: skip
            for number in range(options.rounds):
                rounds.append(Round(options, work, echo_port, Children(), cpus).run())
                print(
                    f"round {number + 1}: alone p99 {rounds[-1]['alone']['p99_ms']} ms, "
                    f"among p99 {rounds[-1]['among']['p99_ms']} ms",
                    file=sys.stderr,
                    flush=True,
                )
        finally:
            children.close()
    intact = all(r[part]["intact"] and not r[part]["failed"] for r in rounds
                 for part in ("alone", "among"))  # fmt: skip
    json.dump({"idle_channels": options.idle_channels, "active": options.active,
               "ping_interval_ms": options.ping_interval, "alone_active": options.alone_active,
               "alone_ping_interval_ms": options.alone_ping_interval,
               "layout": options.layout, "tls": options.tls, "remote": options.remote,
               "intact": intact, **summary(rounds), "rounds": rounds}, sys.stdout)  # fmt: skip
    print()
    sys.exit(0 if intact else 1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the children are already stopped (finally)
        print("interrupted", file=sys.stderr)
        sys.exit(130)
