"""A swarm: N authenticated channels to one server, from one process (issue 26).

Each channel is the project's own sans-I/O ``Session`` (role client, resume
offered, as ``reactor-mux client`` does) over a nonblocking socket, in one
selectors loop, plaintext or TLS (an ``ssl.SSLObject`` over memory BIOs).  Each
declares an ``-L`` to ``--target`` and, with ``--remote``, an ``-R`` on an
ephemeral port of the server's loopback, whose streams the swarm echoes itself.
Channels connect at most ``--pace`` at a time, so a server's startup limits
are not what is measured.

Once every channel is up, the swarm measures the server (``--server-pid``, from
/proc): RSS, descriptors and CPU per channel while idle for ``--idle``
seconds.  Then ``--active`` (a fraction) of the channels each run ping-pongs of
``--message`` bytes through their ``-L`` to the echo target, for ``--busy``
seconds, every byte checked (SHA-256 of what went against what came back);
the round trips' p50 and p99 are reported.  One JSON object on stdout.

    python bench/swarm.py --server 127.0.0.1:PORT --secret-file F --target 127.0.0.1:ECHO \\
        --channels 1000 --server-pid PID [--tls --ca CA.pem] [--remote] [--active 0.01]

This is a load generator, not a client: it never reconnects, and a channel
that fails is counted and reported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import secrets
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactor_mux.protocol.auth import Credentials
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.events import (
    ChannelFailed,
    DataReceived,
    MappingAccepted,
    MappingRefused,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.handshake import ROUTE_ID_PREFIX
from reactor_mux.protocol.session import Role, Session

LOCAL, REMOTE = 1, 2
"""The mapping numbers of each channel's ``-L`` and ``-R``."""
RECEIVE = 1 << 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class PingPong:
    """One active channel's stream: a message out, its echo back, checked."""

    stream_id: int
    message: bytes = b""
    received: bytearray = field(default_factory=bytearray)
    sent_at: float = 0.0
    sent_hash: Any = field(default_factory=hashlib.sha256)
    received_hash: Any = field(default_factory=hashlib.sha256)
    round_trips: list[float] = field(default_factory=list)
    bytes_checked: int = 0


class SwarmChannel:
    """One channel: its socket, its TLS (if any) and its session."""

    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm = swarm
        self.index = index
        config = SessionConfig(credentials=swarm.credentials, resume=True)
        self.session = Session(Role.CLIENT, config,
                               client_id=ROUTE_ID_PREFIX + secrets.token_hex(16))  # fmt: skip
        self.session.request_connect(LOCAL, *swarm.target)
        if swarm.remote:
            self.session.request_bind(REMOTE, "127.0.0.1", 0)
        self.mappings_up = 0
        self.failed: str | None = None
        self.sock = socket.create_connection(swarm.server)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if swarm.tls is not None:
            self.tls = swarm.tls.wrap_bio(self._incoming, self._outgoing,
                                          server_hostname=swarm.server_name)  # fmt: skip
        self.unsent = bytearray()
        self.writing = False
        self.ping: PingPong | None = None
        self.echoed: set[int] = set()
        swarm.selector.register(self.sock, selectors.EVENT_READ, self)
        self.pump()

    @property
    def up(self) -> bool:
        return self.mappings_up == (2 if self.swarm.remote else 1)

    # ----------------------------------------------------------------- I/O

    def on_ready(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self.flush()
        if mask & selectors.EVENT_READ:
            self.read()

    def read(self) -> None:
        try:
            data = self.sock.recv(RECEIVE)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"read failed: {exc}")
            return
        if not data:
            self.fail("the server closed the channel")
            return
        if self.tls is not None:
            self._incoming.write(data)
            data = self._tls_read()
            if data is None:
                return
        self.handle(self.session.receive_data(data))
        self.pump()

    def _tls_read(self) -> bytes | None:
        assert self.tls is not None
        plain = bytearray()
        try:
            if not self.swarm.handshaken(self):
                self.tls.do_handshake()
                self.swarm.handshake_done.add(self)
            while chunk := self.tls.read(RECEIVE):
                plain += chunk
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLError as exc:
            self.fail(f"TLS: {exc}")
            return None
        return bytes(plain)

    def pump(self) -> None:
        """Everything the session has to say, out (through TLS)."""
        if self.failed is not None:
            return
        if self.tls is not None:
            if not self.swarm.handshaken(self):
                try:
                    self.tls.do_handshake()
                    self.swarm.handshake_done.add(self)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            if self.swarm.handshaken(self):
                output = self.session.data_to_send()
                if output:
                    self.tls.write(output)
            self.unsent += self._outgoing.read()
        else:
            self.unsent += self.session.data_to_send()
        self.flush()

    def flush(self) -> None:
        while self.unsent:
            try:
                sent = self.sock.send(self.unsent)
            except BlockingIOError:
                break
            except OSError as exc:
                self.fail(f"write failed: {exc}")
                return
            del self.unsent[:sent]
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.unsent else 0)
        if bool(self.unsent) != self.writing:
            self.writing = bool(self.unsent)
            self.swarm.selector.modify(self.sock, want, self)

    def fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            self.swarm.failures.append(f"channel {self.index}: {why}")
            self.swarm.selector.unregister(self.sock)
            self.sock.close()

    # -------------------------------------------------------------- events

    def handle(self, events: list[object]) -> None:
        session = self.session
        for event in events:
            if isinstance(event, MappingAccepted):
                self.mappings_up += 1
            elif isinstance(event, MappingRefused | StreamRefused | StreamReset):
                self.fail(f"refused: {event}")
            elif isinstance(event, ChannelFailed):
                self.fail(event.reason)
            elif isinstance(event, StreamRequested):  # the -R: echo it here
                session.accept_stream(event.stream_id)
                self.echoed.add(event.stream_id)
            elif isinstance(event, StreamAccepted):
                if self.ping is not None and event.stream_id == self.ping.stream_id:
                    self.send_ping()
            elif isinstance(event, DataReceived):
                count = len(event.data)
                if event.stream_id in self.echoed:
                    session.send_data(event.stream_id, bytes(event.data))
                elif self.ping is not None and event.stream_id == self.ping.stream_id:
                    self.pong(event.data)
                session.inbound_delivered(event.stream_id, count)
            elif isinstance(event, StreamEnded) and event.stream_id in self.echoed:
                session.end_stream(event.stream_id)
                self.echoed.discard(event.stream_id)

    # ----------------------------------------------------------- ping-pong

    def start_pings(self) -> None:
        self.ping = PingPong(self.session.open_stream(LOCAL))
        self.pump()

    def send_ping(self) -> None:
        ping = self.ping
        assert ping is not None
        ping.message = random.randbytes(self.swarm.message)
        ping.sent_hash.update(ping.message)
        ping.received.clear()
        ping.sent_at = time.perf_counter()
        self.session.send_data(ping.stream_id, ping.message)

    def pong(self, data: memoryview) -> None:
        ping = self.ping
        assert ping is not None
        ping.received += data
        ping.received_hash.update(data)
        ping.bytes_checked += len(data)
        if len(ping.received) < len(ping.message):
            return
        ping.round_trips.append(time.perf_counter() - ping.sent_at)
        if self.swarm.pinging:
            self.send_ping()


class Swarm:
    def __init__(self, args: argparse.Namespace) -> None:
        host, port = args.server.rsplit(":", 1)
        self.server = (host, int(port))
        self.server_name = args.server_name or host
        target_host, target_port = args.target.rsplit(":", 1)
        self.target = (target_host, int(target_port))
        secret = Path(args.secret_file).read_bytes().strip()
        self.credentials = Credentials(secret, args.client_name)
        self.remote = args.remote
        self.message = args.message
        self.tls: ssl.SSLContext | None = None
        if args.tls:
            self.tls = ssl.create_default_context(cafile=args.ca)
        self.selector = selectors.DefaultSelector()
        self.channels: list[SwarmChannel] = []
        self.failures: list[str] = []
        self.handshake_done: set[SwarmChannel] = set()
        self.pinging = False

    def handshaken(self, channel: SwarmChannel) -> bool:
        return channel in self.handshake_done

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, mask in self.selector.select(min(left, 0.5)):
                key.data.on_ready(mask)
        return True

    def live(self) -> list[SwarmChannel]:
        return [channel for channel in self.channels if channel.failed is None]

    def connect(self, count: int, pace: int, timeout: float) -> float:
        """Open ``count`` channels, ``pace`` at most still coming up; seconds taken."""
        began = time.monotonic()
        while len(self.channels) < count:
            waiting = sum(1 for channel in self.live() if not channel.up)
            for _ in range(min(pace - waiting, count - len(self.channels))):
                self.channels.append(SwarmChannel(self, len(self.channels)))
            self.run_until(lambda: True, 0)
            self.run_until(lambda: sum(1 for c in self.live() if not c.up) < pace, timeout)
        self.run_until(lambda: all(channel.up for channel in self.live()), timeout)
        return time.monotonic() - began


def proc_figures(pid: int) -> dict[str, float]:
    """A process's RSS (bytes), CPU (seconds) and descriptors, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines()
               if line.startswith("VmRSS:"))  # fmt: skip
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    descriptors = len(os.listdir(f"/proc/{pid}/fd"))
    return {"rss": rss, "cpu": cpu, "fds": descriptors}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="HOST:PORT of the server")
    parser.add_argument("--server-name", help="the TLS name to check (default: the host)")
    parser.add_argument("--server-pid", type=int, help="measure this process (/proc)")
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--client-name", default="swarm")
    parser.add_argument("--target", required=True, help="HOST:PORT each -L connects to")
    parser.add_argument("--channels", type=int, default=100)
    parser.add_argument("--remote", action="store_true", help="an -R per channel as well")
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--ca", help="the CA file that signed the server's certificate")
    parser.add_argument("--pace", type=int, default=8, help="channels coming up at once")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds measured idle")
    parser.add_argument("--active", type=float, default=0.0, help="fraction that moves data")
    parser.add_argument("--busy", type=float, default=5.0, help="seconds of ping-pong")
    parser.add_argument("--message", type=int, default=64, help="ping-pong message bytes")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    swarm = Swarm(args)
    pid = args.server_pid
    before = proc_figures(pid) if pid else None
    connect_seconds = swarm.connect(args.channels, args.pace, args.timeout)
    live = swarm.live()
    report: dict[str, object] = {"channels": len(live), "failed": len(swarm.failures),
                                 "failures": swarm.failures[:5],
                                 "connect_seconds": round(connect_seconds, 3)}  # fmt: skip
    swarm.run_until(lambda: False, 1.0)  # settle: the last replies, the first barriers
    if pid and before is not None and live:
        settled = proc_figures(pid)
        swarm.run_until(lambda: False, args.idle)
        after = proc_figures(pid)
        report["server"] = {
            "rss_before": before["rss"], "rss_idle": after["rss"],
            "rss_per_channel": round((after["rss"] - before["rss"]) / len(live)),
            "fds_per_channel": round((after["fds"] - before["fds"]) / len(live), 2),
            "idle_cpu_percent": round(100 * (after["cpu"] - settled["cpu"]) / args.idle, 3),
        }  # fmt: skip
        report["server"]["idle_cpu_percent_per_100"] = round(  # type: ignore[index]
            report["server"]["idle_cpu_percent"] * 100 / len(live), 4
        )  # type: ignore[index]
    active = live[: round(len(live) * args.active)]
    if active:
        swarm.pinging = True
        for channel in active:
            channel.start_pings()
        swarm.run_until(lambda: False, args.busy)
        swarm.pinging = False
        swarm.run_until(lambda: all(c.ping is not None and len(c.ping.received)
                                    >= len(c.ping.message) for c in swarm.live()
                                    if c in active), 30)  # fmt: skip
        trips = [trip for c in active if c.ping is not None for trip in c.ping.round_trips]
        intact = all(c.ping is not None and c.ping.sent_hash.digest()
                     == c.ping.received_hash.digest() for c in active)  # fmt: skip
        report["active"] = {
            "channels": len(active), "round_trips": len(trips),
            "bytes_checked": sum(c.ping.bytes_checked for c in active if c.ping is not None),
            "intact": intact, "failed": sum(1 for c in active if c.failed is not None),
            "p50_ms": round(1000 * percentile(trips, 0.5), 3),
            "p99_ms": round(1000 * percentile(trips, 0.99), 3),
        }  # fmt: skip
        if pid:
            report["server"]["rss_busy"] = proc_figures(pid)["rss"]  # type: ignore[index]
    report["failed"] = len(swarm.failures)
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
