"""A swarm: N authenticated channels to one server, from one process (issue 26).

Each channel is the project's own sans-I/O ``Session`` (role client, resume
offered, as ``reactor-mux client`` does) over a nonblocking socket, in one
selectors loop, plaintext or TLS (an ``ssl.SSLObject`` over memory BIOs).  Each
declares an ``-L`` to ``--target`` and, with ``--remote``, an ``-R`` on an
ephemeral port of the server's loopback, whose streams the swarm echoes itself.
Channels connect at most ``--pace`` at a time, so a server's startup limits
are not what is measured.

Each channel keeps alive as ``reactor-mux client`` does: a PING after
``--keepalive`` seconds of silence (the server, patient, then sends none).
Once every channel is up it says so on stderr (``up N channels, F failed``)
and holds them idle for ``--idle`` seconds, measuring the server
(``--server-pid``, from /proc): RSS, descriptors and CPU per channel.  Then
``--active`` (a fraction) of the channels each run ping-pongs of
``--message`` bytes through their ``-L`` to the echo target, for ``--busy``
seconds (one every ``--ping-interval`` ms, the channels' first pings spread
evenly over one interval, or back to back), every byte checked (SHA-256 of
what went against what came back); the round trips' p50 and p99 are reported.
One JSON object on stdout.

    python bench/swarm.py --server 127.0.0.1:PORT --secret-file F --target 127.0.0.1:ECHO \\
        --channels 1000 --server-pid PID [--tls --ca CA.pem] [--remote] [--active 0.01]

With ``--storm`` it then prints ``ready`` on stderr and waits for the server to
go away and come back (bench/storm.py restarts it): each channel reconnects on
the client's own schedule (``ReconnectPolicy``: at the resume pace, jittered,
while its session would wait for a resume, and after a ``busy``), with a new
session (a real client first asks to resume and is told the session is
unknown: one round trip more).  It reports how long until every channel was
back, the busy refusals, and the channels the server took per second.

Without ``--storm`` a channel that fails is counted and reported, never
reconnected.  The server needs ``--max-channels`` of at least ``--channels`` (its
default is 64), and ``--target`` must echo what it gets (bench/loadgen.py echo).
The exit status is 1 if any channel failed or any byte came back wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import os
import random
import secrets
import selectors
import socket
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reactor_mux.io import fdlimit
from reactor_mux.protocol.auth import Credentials
from reactor_mux.protocol.config import SessionConfig
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.events import (
    ChannelFailed,
    DataReceived,
    MappingAccepted,
    MappingRefused,
    PeerLeaving,
    StreamAccepted,
    StreamEnded,
    StreamRefused,
    StreamRequested,
    StreamReset,
)
from reactor_mux.protocol.handshake import ROUTE_ID_PREFIX
from reactor_mux.protocol.session import Session
from reactor_mux.protocol.verbs import Role
from reactor_mux.roles.backoff import DEFAULT_RECONNECT_MAX, DEFAULT_RECONNECT_MIN
from reactor_mux.roles.reconnect import ReconnectPolicy
from reactor_mux.tunnel.liveness import SLACK_PER_INTERVAL
from reactor_mux.tunnel.settings import DEFAULT_KEEPALIVE_INTERVAL

LOCAL, REMOTE = 1, 2
"""The mapping numbers of each channel's ``-L`` and ``-R``."""
RECEIVE = 1 << 16
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESUME_WINDOW = 30.0
"""How long a real client's idle session waits for a resume (the default
--resume-timeout): its reconnects go at the resume pace meanwhile."""


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
        self.client_id = ROUTE_ID_PREFIX + secrets.token_hex(16)
        self.policy = ReconnectPolicy(time.monotonic, DEFAULT_RECONNECT_MIN,
                                      DEFAULT_RECONNECT_MAX)  # fmt: skip
        self.lost_at: float | None = None
        self.ping: PingPong | None = None
        self.heard_at = time.monotonic()
        self.keepalive_token = 0
        self.open()
        if swarm.keepalive:  # each channel its own phase, as a fleet's clients have
            swarm.call_later(random.uniform(0, swarm.keepalive), self.keep_alive)

    def open(self) -> None:
        """A connection and a new session: HELLO, AUTH, the -L (and -R) requests."""
        swarm = self.swarm
        config = SessionConfig(credentials=swarm.credentials, resume=True)
        self.session = Session(Role.CLIENT, config, client_id=self.client_id)
        self.session.request_connect(LOCAL, *swarm.target)
        if swarm.remote:
            self.session.request_bind(REMOTE, "127.0.0.1", 0)
        self.mappings_up = 0
        self.failed: str | None = None
        self.code: ErrorCode | None = None
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        if swarm.tls is not None:
            self.tls = swarm.tls.wrap_bio(self._incoming, self._outgoing,
                                          server_hostname=swarm.server_name)  # fmt: skip
        swarm.handshake_done.discard(self)
        self.unsent = bytearray()
        self.echoed: set[int] = set()
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if swarm.sources > 1:  # a fleet's own addresses: Linux routes all of 127/8
            spot = self.index % swarm.sources
            self.sock.bind((f"127.{1 + spot // 250}.{spot % 250 + 2}.1", 0))
        swarm.selector.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self)
        self.writing = True  # until the connect completes
        try:
            self.sock.connect(swarm.server)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"connect: {exc}")
            return
        self.pump()

    @property
    def up(self) -> bool:
        return self.failed is None and self.mappings_up == (2 if self.swarm.remote else 1)

    # ----------------------------------------------------------------- I/O

    def on_ready(self, mask: int) -> None:
        if self.failed is not None:
            return
        if mask & selectors.EVENT_WRITE:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail(f"connect: {os.strerror(error)}")
                return
            if not self.unsent:
                self.pump()
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
        self.heard_at = time.monotonic()
        if self.tls is not None:
            self._incoming.write(data)
            plain = self._tls_read()
            if plain is None:
                return
            data = plain
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
        if self.failed is not None:
            return
        self.failed = why
        was_up = self.mappings_up > 0
        self.swarm.selector.unregister(self.sock)
        self.sock.close()
        swarm = self.swarm
        if not swarm.storming:
            swarm.failures.append(f"channel {self.index}: {why}")
            return
        now = time.monotonic()
        if self.lost_at is None:
            self.lost_at = now
            swarm.lost += 1
        if self.code is ErrorCode.BUSY:
            swarm.busy += 1
        if was_up:
            self.policy.channel_closed(self.code)
        # A server that shut down keeps no session: the client's usual backoff.
        # A connection that broke: its session waits, the resume pace.
        resuming = self.code is not ErrorCode.SHUTDOWN and now - self.lost_at < RESUME_WINDOW
        attempt = self.policy.next_attempt(why, resuming=resuming,
                                           soon=self.code is ErrorCode.BUSY)  # fmt: skip
        swarm.attempts += 1
        swarm.call_later(attempt.delay, self.open)

    def came_up(self) -> None:
        """Every mapping is up: a storm's reconnect is done."""
        self.policy.channel_up()
        if self.lost_at is not None:
            self.swarm.back.append(time.monotonic())
            self.lost_at = None

    # -------------------------------------------------------------- events

    def handle(self, events: Sequence[object]) -> None:
        session = self.session
        for event in events:
            if isinstance(event, MappingAccepted):
                self.mappings_up += 1
                if self.up:
                    self.came_up()
            elif isinstance(event, MappingRefused | StreamRefused | StreamReset):
                self.fail(f"refused: {event}")
            elif isinstance(event, ChannelFailed):
                self.code = event.code
                self.fail(event.reason)
            elif isinstance(event, PeerLeaving):  # BYE: the server shuts down; we close
                self.code = ErrorCode.SHUTDOWN
                self.fail("the server is shutting down")
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

    def keep_alive(self) -> None:
        """A client's keepalive (tunnel/liveness.py's rule): PING after an interval
        of silence from the server, then look again when the silence would reach
        it.  A failed channel keeps its turn for the session a storm reopens."""
        interval = self.swarm.keepalive
        now = time.monotonic()
        due = now + interval
        if self.failed is None and self.up:
            if now - self.heard_at >= interval - interval / SLACK_PER_INTERVAL:
                self.keepalive_token += 1
                self.session.ping(self.keepalive_token)
                self.pump()
            else:
                due = self.heard_at + interval
        self.swarm.call_later(due - now, self.keep_alive)

    # ----------------------------------------------------------- ping-pong

    def start_pings(self) -> None:
        if self.failed is not None:
            return
        self.ping = PingPong(self.session.open_stream(LOCAL))
        self.pump()

    def next_ping(self) -> None:
        if self.failed is None and self.swarm.pinging:
            self.send_ping()
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
        if not self.swarm.pinging:
            return
        gap = self.swarm.ping_interval - (time.perf_counter() - ping.sent_at)
        if gap > 0:
            self.swarm.call_later(gap, self.next_ping)
        else:
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
        self.ping_interval = args.ping_interval / 1000
        self.keepalive = args.keepalive
        self.sources = args.sources
        self.storming = False
        self.lost = self.busy = self.attempts = 0
        self.back: list[float] = []
        """When each channel lost in the storm was back up."""
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._order), callback))

    def handshaken(self, channel: SwarmChannel) -> bool:
        return channel in self.handshake_done

    def run_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            timers = self._timers
            wait = min(left, 0.5)
            if timers:
                wait = max(0.0, min(wait, timers[0][0] - time.monotonic()))
            for key, mask in self.selector.select(wait):
                key.data.on_ready(mask)
            now = time.monotonic()
            while timers and timers[0][0] <= now:
                heapq.heappop(timers)[2]()
        return True

    def live(self) -> list[SwarmChannel]:
        return [channel for channel in self.channels if channel.failed is None]

    def say_goodbye(self) -> None:
        """BYE on every live channel, so the server keeps no session waiting for a
        resume (a run straight after would find them counted)."""
        for channel in self.live():
            channel.session.say_bye()
            channel.pump()
        self.run_until(lambda: all(not c.unsent for c in self.live()), 2.0)
        self.storming = False
        for channel in self.live():
            channel.failed = "closed"
            self.selector.unregister(channel.sock)
            channel.sock.close()

    def storm(self, timeout: float) -> dict[str, Any]:
        """Wait for the server to go away and come back; every channel reconnects
        on its own schedule.  How long until all were back, and at what pace."""
        self.storming = True
        print("ready", file=sys.stderr, flush=True)
        self.run_until(lambda: self.lost > 0, timeout)
        began = time.monotonic()
        done = self.run_until(lambda: len(self.back) >= self.lost
                              and all(c.up for c in self.channels), timeout)  # fmt: skip
        seconds = time.monotonic() - began
        per_second = [0] * (int(seconds) + 1)
        for at in self.back:
            per_second[min(int(at - began), len(per_second) - 1)] += 1
        return {"channels": len(self.channels), "lost": self.lost, "all_back": done,
                "back": len(self.back), "seconds_until_all_back": round(seconds, 2),
                "busy_refusals": self.busy, "attempts": self.attempts,
                "channels_per_second_peak": max(per_second),
                "channels_per_second_mean": round(len(self.back) / len(per_second), 1),
                "back_per_second": per_second}  # fmt: skip

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
    parser.add_argument("--secret-file", required=True, help="the server's shared secret")
    parser.add_argument("--client-name", default="swarm", help="the name to authenticate as")
    parser.add_argument(
        "--target", required=True, help="HOST:PORT of an echo server each -L connects to"
    )
    parser.add_argument("--channels", type=int, default=100, help="channels to open")
    parser.add_argument("--remote", action="store_true", help="an -R per channel as well")
    parser.add_argument("--tls", action="store_true", help="the server serves TLS")
    parser.add_argument("--ca", help="the CA file that signed the server's certificate")
    parser.add_argument("--pace", type=int, default=8, help="channels coming up at once")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds held idle (and measured, with a pid)"
    )
    parser.add_argument("--active", type=float, default=0.0, help="fraction that moves data")
    parser.add_argument("--busy", type=float, default=5.0, help="seconds of ping-pong")
    parser.add_argument("--message", type=int, default=64, help="ping-pong message bytes")
    parser.add_argument(
        "--ping-interval",
        type=float,
        default=0.0,
        help="ms from one ping to the next on a channel (0: back to back)",
    )
    parser.add_argument(
        "--keepalive",
        type=float,
        default=DEFAULT_KEEPALIVE_INTERVAL,
        metavar="SECONDS",
        help="each channel PINGs after this much silence, as reactor-mux client does "
        f"(default {DEFAULT_KEEPALIVE_INTERVAL:g}; 0: never)",
    )
    parser.add_argument(
        "--sources",
        type=int,
        default=1,
        help="loopback source addresses the channels spread over (127.x.y.1)",
    )
    parser.add_argument(
        "--storm",
        action="store_true",
        help="then wait for the server's restart and reconnect (bench/storm.py drives it)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds any one phase may take"
    )
    args = parser.parse_args()

    fdlimit.raise_to_hard()  # a descriptor per channel
    pid = args.server_pid
    if args.keepalive < 0:
        parser.error(f"--keepalive {args.keepalive:g}: must be 0 (never) or more")
    if pid and not Path(f"/proc/{pid}").is_dir():
        parser.error(f"--server-pid {pid}: no such process")
    swarm = Swarm(args)
    before = proc_figures(pid) if pid else None
    connect_seconds = swarm.connect(args.channels, args.pace, args.timeout)
    live = swarm.live()
    server: dict[str, float] = {}
    ok = True
    report: dict[str, object] = {"channels": len(live), "failed": len(swarm.failures),
                                 "failures": swarm.failures[:5],
                                 "connect_seconds": round(connect_seconds, 3)}  # fmt: skip
    swarm.run_until(lambda: False, 1.0)  # settle: the last replies, the first barriers
    print(f"up {len(live)} channels, {len(swarm.failures)} failed", file=sys.stderr, flush=True)
    if pid and before is not None and live:
        settled = proc_figures(pid)
        swarm.run_until(lambda: False, args.idle)
        after = proc_figures(pid)
        idle_cpu = 100 * (after["cpu"] - settled["cpu"]) / args.idle
        server.update({
            "rss_before": before["rss"], "rss_idle": after["rss"],
            "rss_per_channel": round((after["rss"] - before["rss"]) / len(live)),
            "fds_per_channel": round((after["fds"] - before["fds"]) / len(live), 2),
            "idle_cpu_percent": round(idle_cpu, 3),
            "idle_cpu_percent_per_100": round(idle_cpu * 100 / len(live), 4),
        })  # fmt: skip
        report["server"] = server
    elif live:
        swarm.run_until(lambda: False, args.idle)  # held idle, measured by someone else
    active = live[: round(len(live) * args.active)]
    if active:
        swarm.pinging = True
        for index, channel in enumerate(active):  # spread over an interval, not all at once
            swarm.call_later(swarm.ping_interval * index / len(active), channel.start_pings)
        swarm.run_until(lambda: False, args.busy)
        swarm.pinging = False
        swarm.run_until(lambda: all(c.ping is not None and len(c.ping.received)
                                    >= len(c.ping.message) for c in swarm.live()
                                    if c in active), 30)  # fmt: skip
        trips = [trip for c in active if c.ping is not None for trip in c.ping.round_trips]
        checked = sum(c.ping.bytes_checked for c in active if c.ping is not None)
        intact = checked > 0 and all(c.ping is not None and c.ping.sent_hash.digest()
                                     == c.ping.received_hash.digest() for c in active)  # fmt: skip
        ok = ok and intact
        report["active"] = {
            "channels": len(active), "round_trips": len(trips), "bytes_checked": checked,
            "intact": intact, "failed": sum(1 for c in active if c.failed is not None),
            "p50_ms": round(1000 * percentile(trips, 0.5), 3) if trips else None,
            "p99_ms": round(1000 * percentile(trips, 0.99), 3) if trips else None,
        }  # fmt: skip
        if pid:
            server["rss_busy"] = proc_figures(pid)["rss"]
    if args.storm:
        report["storm"] = swarm.storm(args.timeout)
    report["failed"] = len(swarm.failures)
    report["failures"] = swarm.failures[:5]
    swarm.say_goodbye()
    json.dump(report, sys.stdout)
    print()
    if swarm.failures or not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
