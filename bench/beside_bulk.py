"""Where a small message waits beside bulk streams on the same channel: a diagnosis,
not a target (bench/peers.py's fairness rows are the target).

One reactor-mux pair with an -L to an echo and one to a sink (bench/peers.py's
helpers), ``--streams`` connections pushing into the sink, and a 64-byte
ping-pong through the echo for ``--seconds``.  It prints the ping-pong's
p50/p99 and the bulk rate, the channel's kernel queues (``ss``: the client's
unsent Send-Q, the server's unread Recv-Q) sampled while the ping-pong runs,
the send windows the client's ``status`` shows at the end, and when the
server grew them (its debug log, in ms after the pushing process started).

    python bench/beside_bulk.py [--streams 4] [--seconds 3] [--rmux-options "--max-window 1M"]
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from peers import Children, Rmux, exchange, percentiles, start_helper

GROWN = re.compile(r"^(\S+ \S+) .*window grown to (\d+)")


def channel_queues(port: int) -> str:
    """The channel's two sockets as ``ss`` shows them: Recv-Q and Send-Q of each end."""
    lines = subprocess.run(
        ["ss", "-tnH", "state", "established", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True, text=True, check=False,
    ).stdout.split("\n")  # fmt: skip
    ends = []
    for line in filter(None, lines):
        recv_q, send_q, local, _peer = line.split()[:4]
        end = "server" if local.endswith(f":{port}") else "client"
        ends.append(f"{end} Recv-Q {int(recv_q) / 1e6:.2f} MB Send-Q {int(send_q) / 1e6:.2f} MB")
    return "; ".join(sorted(ends))


def send_windows(control: Path) -> list[tuple[int, int, int]]:
    """(stream id, window, bytes in flight) of each stream, from ``status --json``."""
    out = subprocess.run(
        [sys.executable, "-m", "reactor_mux", "status", "--json", "--control", str(control)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    streams = json.loads(out)["channels"][0]["streams"]
    return [(s["id"], s["window"], s["in_flight"]) for s in streams]


def growth_times(lines: Sequence[str], since: float) -> list[str]:
    """Each 'window grown' debug line as 'ms after ``since``: new window'."""
    grown = []
    for line in lines:
        match = GROWN.search(line)
        if match:
            at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            grown.append(f"{(at - since) * 1000:.0f} ms: {int(match[2]) // 1024}K")
    return grown


def run(args: argparse.Namespace, children: Children, directory: Path) -> None:
    _echo, echo_port = start_helper(children, "--serve", "echo")
    _sink, sink_port = start_helper(children, "--serve", "sink")
    control = directory / "client.sock"
    rmux = Rmux(sys.executable, directory, options=shlex.split(args.rmux_options))
    children.callback(rmux.close)
    server, _client, ports = rmux.pair(
        [echo_port, sink_port], "c", tls=False, extra=["-v"],
        client_extra=["--control", str(control)],
    )  # fmt: skip
    channel_port = server.listening_port()
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        exchange(conn, 300)
        pushed_at = time.time()
        pusher = children.popen(
            [sys.executable, str(Path(__file__).with_name("peers.py")), "--push",
             str(ports[1]), str(args.streams)],
            stdout=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(0.5)  # the streams fill their windows and buffers first
        samples: list[float] = []
        queues = []
        until = time.perf_counter() + args.seconds
        while time.perf_counter() < until:
            samples += exchange(conn, 1_000_000, min(until, time.perf_counter() + 0.5))
            queues.append(channel_queues(channel_port))
        windows = send_windows(control)
        pusher.send_signal(signal.SIGTERM)
        out, _ = pusher.communicate(timeout=10)
    sent, seconds = (float(word) for word in out.split())
    p50, p99 = percentiles(samples)
    print(f"ping-pong p50 {p50:,.0f} us, p99 {p99:,.0f} us ({len(samples)} round trips); "
          f"{args.streams} bulk streams {sent * 8 / seconds / 1e9:.2f} Gbit/s")  # fmt: skip
    print("channel queues while it ran:")
    for line in queues:
        print(f"  {line}")
    print("client's send windows at the end (stream, window, in flight): "
          + ", ".join(f"{i} {w // 1024}K {f // 1024}K" for i, w, f in windows))  # fmt: skip
    grown = growth_times(server.lines, pushed_at)
    print(f"server's window growths ({len(grown)}): " + (", ".join(grown) or "none"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rmux-options", default="", help="more options for both processes")
    args = parser.parse_args(argv)
    children = Children()
    try:
        with tempfile.TemporaryDirectory() as directory:
            run(args, children, Path(directory))
    finally:
        children.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
