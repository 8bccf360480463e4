"""Where a small message's CPU goes: per process, user and system, per backend.

The same load as bench/test_small_messages.py (64 connections, one 64-byte
request outstanding on each, through one -L mapping), run once per backend,
reporting CPU microseconds per round trip for each of the four processes that
share the machine: the tunnel client and server, the echo target and the load
generator.  With ``--profile`` it also samples the tunnel client with py-spy
(when installed; it costs the client some CPU of its own, so profile and
CPU figures come from separate runs) and sorts the samples into system calls, the selectors loop,
the sans-I/O core (protocol/ and codec/) and the rest of the Python glue.

    python bench/small_message_cpu.py [--messages N] [--profile] [c|python ...]

This is the evidence behind docs/performance.md's ceiling for the end-to-end
small-message target.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from small_load import echo_target, load_command, tunnel_to

WARMUP = 20000
PROFILE_SECONDS = 6

SYSCALL_LINES = {
    # The lines of the data path that are one socket system call each.
    ("transport.py", "count = self._sock.recv_into(protocol.get_buffer())"),
    ("channel.py", "sent = send(views)"),
    ("localstream.py", "count = self.sock.recv_into(views[0])"),
    ("localstream.py", "count = self.sock.recvmsg_into(views)[0]"),
    ("localstream.py", "sent = self.sock.send(data)"),
    ("localstream.py", "sent = self.sock.sendmsg(inbound.peek(0, len(inbound)))"),
}  # fmt: skip


def ticks(pid: int) -> tuple[int, int]:
    """User and system clock ticks of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def syscall_frames() -> set[str]:
    """py-spy frame names ("function (file:line)") of the system-call lines."""
    frames = set()
    for name, text in SYSCALL_LINES:
        path = Path(__file__).resolve().parent.parent / "reactor_mux" / name
        found = [f"reactor_mux/{name}:{number})"
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if line.strip() == text]  # fmt: skip
        if not found:  # the code moved: say so rather than count its calls as glue
            raise SystemExit(f"bench/small_message_cpu.py: {name} has no line {text!r}")
        frames.update(found)
    return frames


def categorise(raw: Path) -> dict[str, float]:
    """Share of py-spy samples per category (leaf frame decides)."""
    calls = syscall_frames()
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if "selectors.py" in leaf:
            kind = "selectors loop and epoll_wait"
        elif any(leaf.endswith(call) for call in calls):
            kind = "socket system calls"
        elif any("protocol/" in frame or "codec/" in frame for frame in frames):
            kind = "sans-I/O core and codec"
        else:
            kind = "reactor, channel and stream glue"
        counts[kind] += int(number)
    total = sum(counts.values()) or 1
    return {kind: count / total for kind, count in counts.most_common()}


def measure(backend: str, messages: int, profile: bool) -> None:
    with (
        echo_target() as (echo, echo_port),
        tunnel_to(echo_port, backend) as (client, server, port),
    ):
        subprocess.run(load_command(port, WARMUP), stdout=subprocess.DEVNULL, check=True)
        generator = subprocess.Popen(load_command(port, messages), stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        pids = {"client": client.pid, "server": server.pid, "echo": echo.pid,
                "loadgen": generator.pid}  # fmt: skip
        before = {name: ticks(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        sampler = raw = None
        if profile and shutil.which("py-spy"):
            raw = Path(tempfile.mkdtemp()) / "client.txt"
            sampler = subprocess.Popen(
                ["py-spy", "record", "--nonblocking", "-r", "250", "-d", str(PROFILE_SECONDS),
                 "-f", "raw", "-o", str(raw), "-p", str(client.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        # The generator's own ticks are read just before it exits (it prints last).
        assert generator.stdout is not None
        line = generator.stdout.readline()
        after = {name: ticks(pid) for name, pid in pids.items()}
        elapsed = time.perf_counter() - started
        generator.wait()
        done = int(line.split()[1])
        print(f"{backend}: {done} round trips in {elapsed:.2f} s = {done / elapsed:,.0f}/s")
        scale = 1e6 / (done * os.sysconf("SC_CLK_TCK"))
        for name in pids:
            user = (after[name][0] - before[name][0]) * scale
            system = (after[name][1] - before[name][1]) * scale
            print(f"  {name:8} user {user:5.2f}  sys {system:5.2f}  total {user + system:5.2f} us")
        if sampler is not None and raw is not None:
            sampler.wait()
            print(f"  raw samples: {raw}")
            for kind, share in categorise(raw).items():
                print(f"  client samples: {100 * share:5.1f}% {kind}")
        elif profile:
            print("  (py-spy not installed: no profile)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("backends", nargs="*", default=["python", "c"])
    parser.add_argument("--messages", type=int, default=300000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    for backend in args.backends:
        measure(backend, args.messages, args.profile)


if __name__ == "__main__":
    main()
