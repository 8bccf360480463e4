"""reactor-mux against the tools users would run instead, all in one run.

    .venv/bin/python bench/peers.py [--json FILE] [--only WORKLOAD,...]
        [--paths PATH,...] [--quick] [--rmux-python PATH]

Every path reaches the same targets (iperf3, redis, nginx, a 64-byte echo, a
sink) in the same run, so the ratios are what to quote; absolute figures
depend on the machine and its load.

Paths: ``direct``; ``socat2`` (two chained socat relays, 256 KiB buffers: the
limit of a two-hop user-space relay); ``loop2`` (two chained
``bench/loop_relay.py``: a Python selectors loop doing one ``recv_into`` and one
``send`` per event, the floor of the design card); ``ssh_L`` (``ssh -N -L`` through a
private sshd, aes128-gcm); ``rmux`` (plaintext, C codec); ``rmux_tls``
(pinned self-signed certificate and a shared secret); ``rmux_py`` (plaintext,
pure-Python codec; only on the one-stream bulk and plain redis rows);
``rmux_noplane`` (plaintext, compiled codec, the streams' bytes moved by Python
as before the data plane: ``REACTOR_MUX_DATA_PLANE=python``).  Not run unless
named in ``--paths``: ``rmux_tlspy`` (``rmux_tls`` with the records made by
Python's ssl rather than the plane: ``REACTOR_MUX_TLS=python``); ``rmux_ws``
(plaintext, the channel as a WebSocket: server ``--ws-path``, client ``--server
ws://...``).

Workloads: ``iperf`` (1 and 8 streams, both directions), ``redis`` (GET/SET,
50 connections, plain and ``-P 16``), ``http`` (wrk keep-alive, ab one
connection per request), ``pingpong`` (64-byte round trips, free and with
every process of the path pinned to CPU 0), ``cpu`` (CPU time per round trip
per tunnel end: redis GET at 64 connections, the path's processes' user and
system time divided by requests and by 2), ``fairness`` (ping-pong while 4
bulk streams fill the same path), ``idle`` (reactor-mux RSS with 10,000 idle
streams through one -L).

The echo and sink targets and the bulk pusher are small selectors loops in
child processes of this script (``--serve``, ``--push``), not threads: a
thread of the measuring process would share its GIL and its CPU pinning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from local_ssh import LocalSsh, free_loopback_port  # noqa: E402
from local_ssh import available as ssh_available  # noqa: E402

from reactor_mux.security.keygen import generate, generate_secret  # noqa: E402
from reactor_mux.tools.procs import ReactorMuxProcess, proc_status  # noqa: E402

PATHS = ["direct", "socat2", "loop2", "ssh_L", "rmux", "rmux_tls", "rmux_py", "rmux_noplane"]
EXTRA_PATHS = ["rmux_tlspy", "rmux_ws"]
"""Paths run only when ``--paths`` names them."""
WORKLOADS = ["iperf", "redis", "http", "pingpong", "cpu", "fairness", "idle"]
TARGETS = ["iperf", "redis", "http", "echo", "sink"]
RATIOS = {  # column: (numerator path, denominator path)
    "rmux/ssh": ("rmux", "ssh_L"),
    "rmux/socat2": ("rmux", "socat2"),
    "loop2/ssh": ("loop2", "ssh_L"),
    "tls/ssh": ("rmux_tls", "ssh_L"),
    "py/c": ("rmux_py", "rmux"),
    "rmux/noplane": ("rmux", "rmux_noplane"),
    "tlspy/ssh": ("rmux_tlspy", "ssh_L"),
    "ws/rmux": ("rmux_ws", "rmux"),
}
RMUX_PATHS = ["rmux", "rmux_tls", "rmux_py", "rmux_noplane", "rmux_tlspy", "rmux_ws"]
TLS_PATHS = ("rmux_tls", "rmux_tlspy")
CHUNK = 256 * 1024
NO_PLANE = "c-noplane"
"""The codec setting of the rmux_noplane path: the compiled codec without the data plane."""
TLS_PYTHON = "c-tlspy"
"""The codec setting of the rmux_tlspy path: the compiled plane, TLS records in Python's ssl."""
MESSAGE = 64
NOFILE = 65536


@dataclass
class Budget:
    """How long each workload runs; ``--quick`` shrinks all of it."""

    iperf_seconds: int = 4
    redis_requests: int = 100_000
    redis_pipelined_requests: int = 1_000_000
    wrk_seconds: int = 4
    ab_requests: int = 5000
    round_trips: int = 3000
    fairness_seconds: float = 4.0
    idle_streams: int = 10_000
    iperf_cases: tuple[tuple[int, bool], ...] = ((1, False), (1, True), (8, False), (8, True))
    """(streams, reversed) of each iperf3 row."""

    @classmethod
    def quick(cls) -> Budget:
        """About 30 s in all; iperf3 runs for whole seconds, so it keeps two rows of four."""
        return cls(1, 3000, 30_000, 1, 200, 300, 0.5, 300, ((1, False), (8, True)))


@dataclass
class Result:
    workload: str
    figure: str
    unit: str
    lower_is_better: bool
    values: dict[str, float] = field(default_factory=dict)


class Skip(Exception):
    """A tool is missing or a path could not be set up: one line, no traceback."""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- child processes -------------------------------------------------------------------------


class Children:
    """Every process this script starts, torn down (process group first) on exit."""

    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()

    def popen(self, command: Sequence[str], **kwargs: object) -> subprocess.Popen[str]:
        """Start ``command`` in its own session, so one killpg takes it and its forks."""
        proc: subprocess.Popen[str] = subprocess.Popen(  # type: ignore[call-overload]
            list(command),
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            **kwargs,
        )
        self.stack.callback(stop_group, proc)
        return proc

    def callback(self, function: Callable[[], object]) -> None:
        self.stack.callback(function)

    def close(self) -> None:
        self.stack.close()


def stop_group(proc: subprocess.Popen[str], timeout: float = 3.0) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def require(*tools: str) -> None:
    missing = [tool for tool in tools if not find_tool(tool)]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


def find_tool(tool: str) -> str | None:
    """On PATH, or in /usr/sbin (sshd, nginx), which a user's PATH may leave out."""
    sbin = Path("/usr/sbin") / tool
    return shutil.which(tool) or (str(sbin) if sbin.exists() else None)


def sockets(port: int) -> list[str]:
    """TCP states (/proc/net/tcp hex codes) of the 127.0.0.1 sockets on local ``port``."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return [row[3] for row in rows if row[1] == wanted]


def listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:port, without connecting (a probe
    connection would reach the target through a relay and confuse iperf3)."""
    return "0A" in sockets(port)


def wait_idle(port: int, timeout: float = 10) -> None:
    """Wait until the server on ``port`` holds no connection but in TIME_WAIT: the
    last test's connections through a relay can outlive its client."""
    deadline = time.monotonic() + timeout
    while any(state not in ("0A", "06") for state in sockets(port)):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def wait_listening(port: int, proc: subprocess.Popen[str], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port):
        if proc.poll() is not None:
            raise Skip(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise Skip(f"{what} does not listen on {port} after {timeout}s")
        time.sleep(0.02)


def free_port() -> int:
    port, holder = free_loopback_port()
    holder.close()
    return port


def process_tree(roots: Sequence[int]) -> list[int]:
    """``roots`` and all their descendants (socat and sshd fork per connection)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(parent, []).append(int(entry))
    found, pending = [], list(roots)
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.append(pid)
            pending += children.get(pid, [])
    return found


# --- helpers run as children of this script (--serve, --push) -----------------------------


def serve(kind: str) -> None:
    """An echo (returns every byte) or a sink (discards everything) on a free port,
    one selectors loop; prints the port on stdout."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    buffer = bytearray(CHUNK)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                accept_all(listener, selector)
            elif not relay_once(sock, buffer, echo=kind == "echo"):
                selector.unregister(sock)
                sock.close()


def accept_all(listener: socket.socket, selector: selectors.BaseSelector) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(conn, selectors.EVENT_READ)


def relay_once(conn: socket.socket, buffer: bytearray, echo: bool) -> bool:
    """Read what is there (echoing it back, blocking only on a full send buffer);
    False once the peer closed."""
    try:
        count = conn.recv_into(buffer)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    if count and echo:
        conn.setblocking(True)
        try:
            conn.sendall(memoryview(buffer)[:count])
        except OSError:
            return False
        finally:
            conn.setblocking(False)
    return bool(count)


def push(port: int, streams: int) -> None:
    """Send 256 KiB chunks on ``streams`` connections as fast as they drain, until
    SIGTERM; then print the bytes sent and the seconds it took."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    block = memoryview(bytes(CHUNK))
    selector = selectors.DefaultSelector()
    for _ in range(streams):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setblocking(False)
        selector.register(conn, selectors.EVENT_WRITE)
    sent, started = 0, time.monotonic()
    try:
        while True:
            for key, _ in selector.select():
                with contextlib.suppress(BlockingIOError):
                    sent += key.fileobj.send(block)  # type: ignore[union-attr]
    finally:
        print(sent, time.monotonic() - started, flush=True)


def start_helper(children: Children, *args: str) -> tuple[subprocess.Popen[str], int]:
    proc = children.popen([sys.executable, str(Path(__file__).resolve()), *args],
                          stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


# --- targets ---------------------------------------------------------------------------------


@dataclass
class Target:
    port: int
    pid: int


def start_iperf(children: Children, directory: Path) -> Target:
    require("iperf3")
    port = free_port()
    log = open(directory / "iperf3.log", "w")  # noqa: SIM115 - the child holds it
    children.callback(log.close)
    proc = children.popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(port)],
                          stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    wait_listening(port, proc, "iperf3 -s")
    return Target(port, proc.pid)


def start_redis(children: Children, _directory: Path) -> Target:
    require("redis-server", "redis-benchmark")
    port = free_port()
    proc = children.popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wait_listening(port, proc, "redis-server")
    return Target(port, proc.pid)


NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
    }}
}}
"""
HTTP_PATH = "/small.html"


def start_nginx(children: Children, directory: Path) -> Target:
    require("nginx")
    home = directory / "nginx"
    (home / "www").mkdir(parents=True)
    (home / "www" / HTTP_PATH.lstrip("/")).write_text("<p>" + "reactor-mux " * 40 + "</p>\n")
    port = free_port()
    (home / "nginx.conf").write_text(NGINX_CONF.format(d=home, port=port))
    proc = children.popen([str(find_tool("nginx")), "-p", str(home), "-e", str(home / "error.log"),
                           "-c", str(home / "nginx.conf")], stdout=subprocess.DEVNULL)  # fmt: skip
    wait_listening(port, proc, "nginx")
    return Target(port, proc.pid)


def start_echo(children: Children, _directory: Path) -> Target:
    proc, port = start_helper(children, "--serve", "echo")
    return Target(port, proc.pid)


def start_sink(children: Children, _directory: Path) -> Target:
    proc, port = start_helper(children, "--serve", "sink")
    return Target(port, proc.pid)


TARGET_STARTERS: dict[str, Callable[[Children, Path], Target]] = {
    "iperf": start_iperf,
    "redis": start_redis,
    "http": start_nginx,
    "echo": start_echo,
    "sink": start_sink,
}
WORKLOAD_TARGETS = {
    "iperf": ["iperf"],
    "redis": ["redis"],
    "http": ["http"],
    "pingpong": ["echo"],
    "cpu": ["redis"],
    "fairness": ["echo", "sink"],
    "idle": ["echo"],
}


# --- paths -----------------------------------------------------------------------------------


@dataclass
class Route:
    """One way to reach the targets: a port per target and the processes on the way."""

    name: str
    ports: dict[str, int]
    roots: list[int]

    def pids(self) -> list[int]:
        return process_tree(self.roots)


class RmuxProcess(ReactorMuxProcess):
    """A ReactorMuxProcess run by a chosen interpreter, from a neutral directory.

    The parent runs ``sys.executable -m reactor_mux`` in the current directory
    with this process's environment; ``-m`` puts the current directory first on
    sys.path, so started from a checkout it would import that checkout's
    reactor_mux whatever interpreter runs it, and PYTHONPATH would do the same.
    """

    def __init__(self, python: str, args: Sequence[str], codec: str, cwd: Path) -> None:
        self.args = list(args)
        hidden = {"PYTHONPATH", "PYTHONHOME"}
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        env["REACTOR_MUX_CODEC"] = "c" if codec in (NO_PLANE, TLS_PYTHON) else codec
        if codec == NO_PLANE:  # the compiled codec, and Python moving the streams' bytes
            env["REACTOR_MUX_DATA_PLANE"] = "python"
        if codec == TLS_PYTHON:  # the plane, with TLS records made by Python's ssl
            env["REACTOR_MUX_TLS"] = "python"
        self.proc = subprocess.Popen(
            [python, "-m", "reactor_mux", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


@dataclass
class Rmux:
    """How to start reactor-mux: the interpreter, and a directory for TLS material."""

    python: str
    directory: Path
    processes: list[RmuxProcess] = field(default_factory=list)
    pin: str | None = None
    options: Sequence[str] = ()

    def pair(
        self,
        targets: Sequence[int],
        codec: str,
        tls: bool,
        extra: Sequence[str] = (),
        client_extra: Sequence[str] = (),
        websocket: bool = False,
    ) -> tuple[RmuxProcess, RmuxProcess, list[int]]:
        """A server and a client with one -L per target; the ports that reach them.
        ``extra`` goes to both, ``client_extra`` to the client alone; ``websocket``
        carries the channel as a WebSocket."""
        server_args, client_args = self._security(tls)
        if websocket:
            server_args = [*server_args, "--ws-path", "/rmux"]
        common = ["--drain-timeout", "1", *self.options, *extra]
        server = self._start(["server", "--listen", "127.0.0.1:0", *common, *server_args], codec)
        forwards = [arg for port in targets for arg in ("-L", f"0:127.0.0.1:{port}")]
        address = f"127.0.0.1:{server.listening_port()}"
        client = self._start(
            ["client", "--server", f"ws://{address}/rmux" if websocket else address, *common,
             *client_args, *client_extra, *forwards], codec,
        )  # fmt: skip
        ports = [port for _kind, port, _target in client.forwards(len(targets))]
        return server, client, ports

    def _security(self, tls: bool) -> tuple[list[str], list[str]]:
        """TLS with a pinned keygen certificate and a shared secret, as docs/security.md
        recommends (and bench/test_secure.py measures)."""
        if not tls:
            return [], []
        cert, key, secret = (self.directory / name for name in ("cert.pem", "key.pem", "secret"))
        if self.pin is None:
            self.pin = generate(cert, key, ["127.0.0.1"])
            generate_secret(secret)
        return (
            ["--tls-cert", str(cert), "--tls-key", str(key), "--secret-file", str(secret)],
            ["--tls", "--tls-fingerprint", self.pin, "--secret-file", str(secret)],
        )

    def _start(self, args: list[str], codec: str) -> RmuxProcess:
        proc = RmuxProcess(self.python, args, codec, self.directory)
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()

    def logged_errors(self) -> list[str]:
        return [line for proc in self.processes for line in proc.lines if is_error(line)]


def is_error(line: str) -> bool:
    """A log line worth showing: not INFO, nor the warning each side logs when the other
    shuts down (the teardown does that on purpose)."""
    return not re.search(r" INFO |shutting down", line)


@dataclass
class Bench:
    """What every workload needs: the budget, the targets, the open paths."""

    budget: Budget
    children: Children
    rmux: Rmux
    targets: dict[str, Target]
    paths: dict[str, Route] = field(default_factory=dict)
    results: list[Result] = field(default_factory=list)

    def row(self, workload: str, figure: str, unit: str, lower_is_better: bool) -> Result:
        """A new row of the table, kept at once so an interrupted run still shows it."""
        result = Result(workload, figure, unit, lower_is_better)
        self.results.append(result)
        return result

    def on(self, codec_row: bool = False) -> list[Route]:
        """The open paths a row runs on; rmux_py only on the codec rows."""
        return [path for name, path in self.paths.items() if codec_row or name != "rmux_py"]


def open_direct(bench: Bench) -> Route:
    return Route("direct", {name: t.port for name, t in bench.targets.items()}, [])


HopStarter = Callable[[Children, int], tuple[subprocess.Popen[str], int]]


def open_chain(bench: Bench, name: str, start_hop: HopStarter) -> Route:
    """Two relays chained in front of every target."""
    ports, roots = {}, []
    for target_name, target in bench.targets.items():
        port = target.port
        for _hop in range(2):
            proc, port = start_hop(bench.children, port)
            roots.append(proc.pid)
        ports[target_name] = port
    return Route(name, ports, roots)


def open_socat2(bench: Bench) -> Route:
    require("socat")
    return open_chain(bench, "socat2", start_socat)


def open_loop2(bench: Bench) -> Route:
    """Two chained ``bench/loop_relay.py`` processes: the floor of a Python selectors loop."""
    return open_chain(bench, "loop2", start_loop_relay)


def start_loop_relay(children: Children, target: int) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = children.popen(
        [sys.executable, str(HERE / "loop_relay.py"), str(port), str(target)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_listening(port, proc, "loop_relay")
    return proc, port


def start_socat(children: Children, target: int) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = children.popen(
        ["socat", "-b", "262144", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,backlog=1024",
         f"TCP:127.0.0.1:{target}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_listening(port, proc, "socat")
    return proc, port


def open_ssh(bench: Bench) -> Route:
    if not ssh_available():
        raise Skip("sshd or ssh not installed")
    names = list(bench.targets)
    try:
        ssh = LocalSsh([bench.targets[name].port for name in names])
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        raise Skip(f"ssh -L could not start: {exc}") from exc
    bench.children.callback(ssh.close)
    return Route("ssh_L", dict(zip(names, ssh.ports, strict=True)), [ssh.ssh.pid, ssh.sshd.pid])


def _codec_of(kind: str) -> str:
    """The codec setting a reactor-mux path runs with."""
    return {"rmux_py": "python", "rmux_noplane": NO_PLANE, "rmux_tlspy": TLS_PYTHON}.get(kind, "c")


def open_rmux(bench: Bench, kind: str) -> Route:
    names = list(bench.targets)
    codec = _codec_of(kind)
    try:
        server, client, ports = bench.rmux.pair(
            [bench.targets[name].port for name in names],
            codec,
            tls=kind in TLS_PATHS,
            websocket=kind == "rmux_ws",
        )
    except TimeoutError as exc:
        raise Skip(f"reactor-mux did not start: {str(exc).splitlines()[-1]}") from exc
    return Route(kind, dict(zip(names, ports, strict=True)), [client.pid, server.pid])


PATH_OPENERS: dict[str, Callable[[Bench], Route]] = {
    "direct": open_direct,
    "socat2": open_socat2,
    "loop2": open_loop2,
    "ssh_L": open_ssh,
    "rmux": lambda bench: open_rmux(bench, "rmux"),
    "rmux_tls": lambda bench: open_rmux(bench, "rmux_tls"),
    "rmux_py": lambda bench: open_rmux(bench, "rmux_py"),
    "rmux_noplane": lambda bench: open_rmux(bench, "rmux_noplane"),
    "rmux_tlspy": lambda bench: open_rmux(bench, "rmux_tlspy"),
    "rmux_ws": lambda bench: open_rmux(bench, "rmux_ws"),
}


# --- measuring -------------------------------------------------------------------------------


class Failed(Exception):
    """One measurement did not produce a figure; its row cell stays empty."""


def record(rows: Sequence[Result], name: str, measure: Callable[[], Sequence[float]]) -> None:
    """One measurement, a figure for each of ``rows`` in the column ``name``; a failure
    is one line and empty cells, not the end of the run."""
    try:
        figures = measure()
    except (Failed, Skip, OSError, subprocess.TimeoutExpired) as exc:
        say(f"  {rows[0].figure} on {name}: {type(exc).__name__}: {exc}")
        return
    for row, figure in zip(rows, figures, strict=True):
        row.values[name] = figure


def run(command: Sequence[str], timeout: float) -> str:
    """A tool's stdout; Failed with its last stderr line if it exits non-zero."""
    done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise Failed(f"{command[0]} exited {done.returncode}: {last}")
    return done.stdout


def iperf(
    server: int, port: int, streams: int, reverse: bool, seconds: int, attempts: int = 4
) -> float:
    """Gbit/s received, as iperf3 reports it at the end of the test.

    iperf3 -s (on port ``server``) runs one test at a time and, through a relay,
    can still be finishing the last one (its data connections close late) when
    the next client arrives, which it then refuses as busy or resets: so wait
    for it to hold no connection, and try again if refused all the same.
    """
    attempt = 1
    while True:
        try:
            wait_idle(server)
            return iperf_once(port, streams, reverse, seconds)
        except Failed as exc:
            if attempt == attempts or not re.search(r"busy|control message|reset", str(exc)):
                raise
        time.sleep(attempt)
        attempt += 1


def iperf_once(port: int, streams: int, reverse: bool, seconds: int) -> float:
    command = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J",
               "-P", str(streams), *(["-R"] if reverse else [])]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise Failed(f"iperf3 printed no JSON: {done.stderr.strip()[-200:]}") from exc
    if "error" in report:
        raise Failed(f"iperf3: {report['error']}")
    return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9


def workload_iperf(bench: Bench) -> None:
    seconds = bench.budget.iperf_seconds
    for streams, reverse in bench.budget.iperf_cases:
        label = f"iperf3 {streams} stream{'s' if streams > 1 else ''}{' -R' if reverse else ''}"
        result = bench.row("iperf", label, "Gbit/s", False)
        for path in bench.on(codec_row=streams == 1):
            server = bench.targets["iperf"].port
            measure = partial(iperf, server, path.ports["iperf"], streams, reverse, seconds)
            record([result], path.name, lambda measure=measure: [measure()])


def redis_benchmark(port: int, requests: int, pipeline: int) -> tuple[float, float]:
    """req/s of GET and SET at 50 connections (``pipeline`` requests in flight on each)."""
    command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50",
               "-n", str(requests), "-t", "get,set", "--csv", "-P", str(pipeline)]  # fmt: skip
    rates = {}
    for line in run(command, timeout=300).splitlines():
        fields = [text.strip('"') for text in line.split(",")]
        if fields[0] in ("GET", "SET"):
            rates[fields[0]] = float(fields[1])
    if len(rates) != 2:
        raise Failed("redis-benchmark printed no GET/SET rates")
    return rates["GET"], rates["SET"]


OPS = ("GET", "SET")


def workload_redis(bench: Bench) -> None:
    for pipeline in (1, 16):
        suffix = f" -P {pipeline}" if pipeline > 1 else ""
        rows = [
            bench.row("redis", f"redis {op} c50{suffix}", "req/s", False) for op in ("GET", "SET")
        ]
        budget = bench.budget
        requests = budget.redis_requests if pipeline == 1 else budget.redis_pipelined_requests
        for path in bench.on(codec_row=pipeline == 1):
            measure = partial(redis_benchmark, path.ports["redis"], requests, pipeline)
            record(rows, path.name, measure)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system time of ``pids`` so far (those that are gone count nothing)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


CPU_CONNECTIONS = 64
CPU_PATHS = ("loop2", "ssh_L", "rmux", "rmux_tls", "rmux_noplane", "rmux_tlspy")
"""Paths whose processes live through the run (socat forks one per connection)."""


def cpu_per_round_trip(bench: Bench, path: Route) -> tuple[float]:
    """µs of CPU per round trip per tunnel end (each path has two: client and server)."""
    pids = path.pids()
    requests = bench.budget.redis_requests
    command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(path.ports["redis"]),
               "-c", str(CPU_CONNECTIONS), "-n", str(requests), "-t", "get", "--csv"]  # fmt: skip
    before = cpu_seconds(pids)
    run(command, timeout=300)
    return ((cpu_seconds(pids) - before) / requests / 2 * 1e6,)


def workload_cpu(bench: Bench) -> None:
    rows = [bench.row("cpu", f"CPU per round trip per end, c{CPU_CONNECTIONS}", "us", True)]
    for path in bench.on():
        if path.name in CPU_PATHS:
            record(rows, path.name, partial(cpu_per_round_trip, bench, path))


def wrk(port: int, seconds: int) -> float:
    """req/s over 50 keep-alive connections."""
    url = f"http://127.0.0.1:{port}{HTTP_PATH}"
    out = run(["wrk", "-t", "2", "-c", "50", "-d", f"{seconds}s", url], timeout=seconds + 60)
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out):
        say(f"  wrk on port {port}: {match.group(0)}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not match:
        raise Failed("wrk printed no Requests/sec")
    return float(match.group(1))


def ab(port: int, requests: int) -> float:
    """req/s with a new connection per request (no -k), 10 at a time."""
    url = f"http://127.0.0.1:{port}{HTTP_PATH}"
    out = run(["ab", "-q", "-n", str(requests), "-c", "10", url], timeout=300)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if failed and int(failed.group(1)):
        say(f"  ab on port {port}: {failed.group(1)} failed requests")
    match = re.search(r"Requests per second:\s+([\d.]+)", out)
    if not match:
        raise Failed("ab printed no Requests per second")
    return float(match.group(1))


def workload_http(bench: Bench) -> None:
    budget = bench.budget
    for tool, figure, measure in (
        ("wrk", "wrk keep-alive c50", lambda port: [wrk(port, budget.wrk_seconds)]),
        ("ab", "ab new conn/request c10", lambda port: [ab(port, budget.ab_requests)]),
    ):
        if not find_tool(tool):
            say(f"skipping {figure}: {tool} not installed")
            continue
        row = bench.row("http", figure, "req/s", False)
        for path in bench.on():
            record([row], path.name, partial(measure, path.ports["http"]))


def exchange(conn: socket.socket, count: int, until: float | None = None) -> list[float]:
    """Seconds per 64-byte round trip, ``count`` of them (or fewer, if ``until`` passes)."""
    message = bytes(MESSAGE)
    buffer = bytearray(MESSAGE)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn.sendall(message)
        got = 0
        while got < MESSAGE:
            chunk = conn.recv_into(memoryview(buffer)[got:])
            if not chunk:
                raise Failed("echo closed the connection")
            got += chunk
        times.append(time.perf_counter() - started)
        if until is not None and started > until:
            break
    return times


def thread_ids(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def pinned(pids: Sequence[int], cpu: int = 0) -> Iterator[None]:
    """Every thread of ``pids``, and the calling thread, on one CPU; restored after.

    Only the calling thread (tid 0), not this whole process: the log readers of
    the reactor-mux children are threads here and must not count as on the path.
    """
    saved: dict[int, set[int]] = {}
    try:
        for tid in [0, *(tid for pid in pids for tid in thread_ids(pid))]:
            with contextlib.suppress(ProcessLookupError):
                saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {cpu})
        yield
    finally:
        for tid, cpus in saved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99, in µs."""
    return statistics.median(samples) * 1e6, statistics.quantiles(samples, n=100)[98] * 1e6


def ping_pong(bench: Bench, path: Route, pin: bool) -> tuple[float, float]:
    """p50/p99 µs on one connection after a warm-up; with ``pin``, every process on
    the path (found once the connection is up, so per-connection forks count) on CPU 0."""
    with socket.create_connection(("127.0.0.1", path.ports["echo"]), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        exchange(conn, 300)
        pids = [*path.pids(), bench.targets["echo"].pid] if pin else []
        with pinned(pids) if pin else contextlib.nullcontext():
            return percentiles(exchange(conn, bench.budget.round_trips))


QUANTILES = ("p50", "p99")


def workload_pingpong(bench: Bench) -> None:
    for pin in (False, True):
        where = " pinned CPU0" if pin else ""
        rows = [
            bench.row("pingpong", f"ping-pong 64B {q}{where}", "us", True) for q in ("p50", "p99")
        ]
        for path in bench.on():
            record(rows, path.name, partial(ping_pong, bench, path, pin))


def under_load(bench: Bench, path: Route) -> tuple[float, float, float]:
    """Ping-pong p50/p99 µs while 4 bulk streams push into the sink over the same path,
    and the Gbit/s those streams got meanwhile."""
    with socket.create_connection(("127.0.0.1", path.ports["echo"]), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        exchange(conn, 300)
        pusher = bench.children.popen(
            [sys.executable, str(Path(__file__).resolve()), "--push", str(path.ports["sink"]), "4"],
            stdout=subprocess.PIPE,
        )
        try:
            time.sleep(0.5)  # the streams fill their windows and buffers first
            until = time.perf_counter() + bench.budget.fairness_seconds
            samples = exchange(conn, 10 * bench.budget.round_trips, until)
        finally:
            pusher.send_signal(signal.SIGTERM)
            out, _ = pusher.communicate(timeout=10)
    sent, seconds = (float(word) for word in out.split())
    return (*percentiles(samples), sent * 8 / seconds / 1e9)


def workload_fairness(bench: Bench) -> None:
    rows = [
        bench.row("fairness", "ping-pong p50 under 4 bulk", "us", True),
        bench.row("fairness", "ping-pong p99 under 4 bulk", "us", True),
        bench.row("fairness", "4 bulk alongside ping-pong", "Gbit/s", False),
    ]
    for path in bench.on():
        record(rows, path.name, partial(under_load, bench, path))


def idle_rss(bench: Bench, kind: str, streams: int) -> tuple[float, float]:
    """MB RSS of a fresh reactor-mux client and server holding ``streams`` idle streams
    through one -L (each sent one byte and read the echo)."""
    server, client, ports = bench.rmux.pair(
        [bench.targets["echo"].port], _codec_of(kind),
        tls=kind in TLS_PATHS, extra=["--max-streams", str(streams + 1000)],
    )  # fmt: skip
    conns: list[socket.socket] = []
    try:
        time.sleep(0.3)
        before = [proc_status(proc.pid, "VmRSS") / 1024 for proc in (client, server)]
        for _ in range(streams):
            conn = socket.create_connection(("127.0.0.1", ports[0]), timeout=10)
            conns.append(conn)
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise Failed(f"stream {len(conns)} got no echo")
        time.sleep(1)
        after = [proc_status(proc.pid, "VmRSS") / 1024 for proc in (client, server)]
    finally:
        for conn in conns:
            conn.close()
        client.stop()
        server.stop()
    say(f"  {kind} idle: client {before[0]:.1f} -> {after[0]:.1f} MB, "
        f"server {before[1]:.1f} -> {after[1]:.1f} MB")  # fmt: skip
    return after[0], after[1]


def workload_idle(bench: Bench) -> None:
    """Only the reactor-mux paths: its memory per stream is the question (docs/limits.md)."""
    streams = bench.budget.idle_streams
    rows = [bench.row("idle", f"RSS {role}, {streams} idle streams", "MB", True)
            for role in ("client", "server")]  # fmt: skip
    for kind in ("rmux", "rmux_tls"):
        if kind in bench.paths:
            record(rows, kind, partial(idle_rss, bench, kind, streams))


WORKLOAD_RUNNERS: dict[str, Callable[[Bench], None]] = {
    "iperf": workload_iperf,
    "redis": workload_redis,
    "http": workload_http,
    "pingpong": workload_pingpong,
    "cpu": workload_cpu,
    "fairness": workload_fairness,
    "idle": workload_idle,
}


# --- the machine, the table, the JSON --------------------------------------------------------

TOOL_VERSIONS = {
    "iperf3": ["iperf3", "--version"],
    "redis": ["redis-server", "--version"],
    "wrk": ["wrk", "--version"],
    "ab": ["ab", "-V"],
    "nginx": ["nginx", "-v"],
    "socat": ["socat", "-V"],
    "ssh": ["ssh", "-V"],
}


def tool_version(command: list[str]) -> str:
    if not find_tool(command[0]):
        return "not installed"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout + done.stderr).splitlines()
    return next((line.strip() for line in lines if re.search(r"\d+\.\d+", line)), "unknown")


def rmux_version(python: str, directory: Path) -> str:
    """Version and location of the reactor_mux that ``python`` imports (from a neutral
    directory, as the tunnels run)."""
    code = "import reactor_mux, sys; print(reactor_mux.__version__, reactor_mux.__file__)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True,
                              cwd=directory, timeout=30)  # fmt: skip
    except OSError as exc:
        return f"cannot run {python}: {exc}"
    return done.stdout.strip() or f"import failed: {done.stderr.strip()[-200:]}"


def cpu_model() -> str:
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine(python: str, directory: Path) -> dict[str, str]:
    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "rmux python": python,
        "reactor_mux": rmux_version(python, directory),
        **{tool: tool_version(command) for tool, command in TOOL_VERSIONS.items()},
    }


def ratios(result: Result) -> dict[str, float]:
    """The ratio columns this row has figures for (numerator / denominator, even
    for lower-is-better rows)."""
    found = {}
    for column, (top, bottom) in RATIOS.items():
        if result.values.get(top) and result.values.get(bottom):
            found[column] = result.values[top] / result.values[bottom]
    return found


def number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: list[Result], paths: Sequence[str]) -> str:
    """A row per figure, a column per path, then the ratio columns; * marks the rows
    where lower is better."""
    header = ["figure", "unit", *paths, *RATIOS]
    rows = [header]
    for result in (result for result in results if result.values):
        found = ratios(result)
        rows.append([
            result.figure + (" *" if result.lower_is_better else ""),
            result.unit,
            *(number(result.values.get(path)) for path in paths),
            *(f"{found[column]:.2f}" if column in found else "" for column in RATIOS),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                  enumerate(zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    lines.append("* lower is better (latency, memory); ratios are still rmux / baseline")
    return "\n".join(lines)


def write_json(file: Path, info: dict[str, str], results: list[Result]) -> None:
    document = {
        "machine": info,
        "results": [asdict(result) for result in results],
        "ratios": {f"{r.workload}/{r.figure}": ratios(r) for r in results if ratios(r)},
    }
    file.write_text(json.dumps(document, indent=2) + "\n")


# --- the command -----------------------------------------------------------------------------


def choices(text: str, allowed: list[str]) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in chosen if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(allowed)}")
    return chosen


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--only",
        type=lambda text: choices(text, WORKLOADS),
        default=WORKLOADS,
        help=f"workloads, comma-separated (default {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--paths",
        type=lambda text: choices(text, PATHS + EXTRA_PATHS),
        default=PATHS,
        help=f"paths, comma-separated (default {','.join(PATHS)})",
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for a smoke check")
    parser.add_argument(
        "--rmux-python",
        default=sys.executable,
        help="the interpreter that runs reactor-mux (default: this one)",
    )
    parser.add_argument(
        "--rmux-options",
        default="",
        metavar="OPTIONS",
        help="more options for both reactor-mux processes, one string ('--max-window 256K')",
    )
    parser.add_argument("--serve", choices=["echo", "sink"], help=argparse.SUPPRESS)
    parser.add_argument("--push", nargs=2, type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)  # fmt: skip


def raise_file_limit() -> None:
    """10,000 idle streams hold that many sockets here, in the echo target and in each
    reactor-mux process; children inherit this limit (reactor-mux does not raise its own)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(NOFILE, soft), max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_targets(bench: Bench, names: list[str], directory: Path) -> None:
    for name in names:
        try:
            bench.targets[name] = TARGET_STARTERS[name](bench.children, directory)
        except Skip as exc:
            say(f"skipping the {name} target: {exc}")


def open_paths(bench: Bench, names: list[str]) -> None:
    for name in names:
        try:
            bench.paths[name] = PATH_OPENERS[name](bench)
        except Skip as exc:
            say(f"skipping the {name} path: {exc}")


def run_workloads(bench: Bench, names: list[str]) -> None:
    for name in names:
        missing = [t for t in WORKLOAD_TARGETS[name] if t not in bench.targets]
        if missing:
            say(f"skipping {name}: no {', '.join(missing)} target")
            continue
        started = time.monotonic()
        say(f"{name} ...")
        WORKLOAD_RUNNERS[name](bench)
        say(f"{name} done in {time.monotonic() - started:.0f}s")


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.push:
        push(*args.push)
        return 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, interrupt)
    raise_file_limit()
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="rmux-peers-"))
    children = Children()
    bench = Bench(Budget.quick() if args.quick else Budget(), children, Rmux(args.rmux_python,
                  directory, options=args.rmux_options.split()), {})  # fmt: skip
    children.callback(bench.rmux.close)
    info: dict[str, str] = {}
    status = 0
    try:
        info = machine(args.rmux_python, directory)
        print("\n".join(f"{key:>12}: {value}" for key, value in info.items()), flush=True)
        start_targets(bench, sorted({t for w in args.only for t in WORKLOAD_TARGETS[w]},
                                    key=TARGETS.index), directory)  # fmt: skip
        open_paths(bench, [path for path in PATHS + EXTRA_PATHS if path in args.paths])
        run_workloads(bench, sorted(args.only, key=WORKLOADS.index))
    except KeyboardInterrupt:
        say("interrupted: tearing down; the table holds what was measured")
        status = 130
    finally:
        errors = bench.rmux.logged_errors()
        children.close()
        shutil.rmtree(directory, ignore_errors=True)
    for line in errors[:20]:
        say(f"reactor-mux logged: {line}")
    print()
    print(table(bench.results, list(bench.paths)))
    print(f"\ntotal {time.monotonic() - started:.0f}s")
    if args.json:
        write_json(args.json, info, bench.results)
    missing = [path for path in args.paths if path in RMUX_PATHS and path not in bench.paths]
    if status == 0 and (missing or not any(result.values for result in bench.results)):
        say(f"failed: {', '.join(missing) or 'every path'} could not be measured (see above)")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
