"""End-to-end helpers: real reactor-mux processes and real TCP targets on 127.0.0.1.

Targets run in threads of the test process (they are the "local apps" and
"remote services" of the tests, not part of the tool).  Data is checked end
to end by length and SHA-256.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reactor_mux.roles.specs import ForwardKind, ForwardSpec, parse_dynamic, parse_forward
from reactor_mux.tools.procs import ReactorMuxProcess
from reactor_mux.tools.targets import EchoServer, ThreadedTCPServer  # noqa: F401 - re-exported

CHUNK = 256 * 1024
_BLOCK = random.Random(7).randbytes(8 * 1024 * 1024 + 65536)


def payload(seed: int, size: int) -> memoryview:
    """Deterministic pseudo-random bytes: a window into a fixed random block.

    Different seeds give different offsets, so a stream that delivered another
    stream's bytes (or its own bytes out of order) fails its hash check.
    """
    if size <= 8 * 1024 * 1024:
        offset = (seed * 104729) % 65536
        return memoryview(_BLOCK)[offset : offset + size]
    repeats = -(-size // len(_BLOCK))
    return memoryview((_BLOCK * repeats)[:size])


def sha(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


class HashReplyServer(ThreadedTCPServer):
    """Reads ``reply_len reply_seed`` (16 bytes), then concurrently sends the reply and
    hashes everything else it receives until EOF; records (length, sha256) by seed."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.received: dict[int, tuple[int, str]] = {}

    def handle(self, conn: socket.socket) -> None:
        header = recv_exactly(conn, 16)
        reply_len, seed = struct.unpack(">QQ", header)

        def reply() -> None:
            try:
                send_all_then_eof(conn, payload(seed, reply_len))
            except OSError as exc:  # a stream the test resets on purpose
                self.errors.append(exc)

        sender = threading.Thread(target=reply)
        sender.start()
        size, digest = drain(conn)
        sender.join()
        self.received[seed] = (size, digest)


class ReplyAfterEOFServer(ThreadedTCPServer):
    """Half-close check: reads the whole request until EOF, then replies with
    its length and hash, then a large body, then closes."""

    def handle(self, conn: socket.socket) -> None:
        size, digest = drain(conn)
        conn.sendall(f"{size} {digest}\n".encode())
        conn.sendall(payload(size, 3 * 1024 * 1024))
        conn.shutdown(socket.SHUT_WR)


class NeverReadServer(ThreadedTCPServer):
    """Accepts and never reads: a stalled receiver."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__(host, receive_buffer=4096)
        self.release = threading.Event()

    def handle(self, conn: socket.socket) -> None:
        self.release.wait(120)


def recv_exactly(conn: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ConnectionError("EOF before the expected bytes")
        data += chunk
    return bytes(data)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends on ``sock`` until it closes it (or resets it)."""
    sock.settimeout(10)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def drain(conn: socket.socket) -> tuple[int, str]:
    """Read until EOF; return (length, sha256)."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK)
    while True:
        count = conn.recv_into(buffer)
        if not count:
            return size, digest.hexdigest()
        digest.update(memoryview(buffer)[:count])
        size += count


def send_all_then_eof(conn: socket.socket, data: bytes | memoryview) -> None:
    view = memoryview(data)
    for offset in range(0, len(view), CHUNK):
        conn.sendall(view[offset : offset + CHUNK])
    conn.shutdown(socket.SHUT_WR)


@dataclass
class Exchange:
    """One connection's two-way transfer, checked at both ends."""

    send_len: int
    reply_len: int
    seed: int
    received: tuple[int, str] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


def run_exchange(
    port: int,
    ex: Exchange,
    timeout: float = 120.0,
    host: str = "127.0.0.1",
    connect: Callable[[], socket.socket] | None = None,
) -> None:
    """Run ``ex`` over a connection to host:port, or over what ``connect()`` opens."""
    try:
        if connect is not None:
            conn = connect()
            conn.settimeout(timeout)
        else:
            conn = socket.create_connection((host, port), timeout=timeout)
        with conn:
            conn.sendall(struct.pack(">QQ", ex.reply_len, ex.seed))
            sender = threading.Thread(
                target=send_all_then_eof, args=(conn, payload(ex.seed + 1, ex.send_len))
            )
            sender.start()
            ex.received = drain(conn)
            sender.join()
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        ex.error = exc
    finally:
        ex.done.set()


def run_exchanges(
    exchanges: Sequence[Exchange],
    target: HashReplyServer,
    ports: Sequence[int] = (),
    connect: Callable[[], socket.socket] | None = None,
) -> None:
    """Run ``exchanges`` at once (each to its port in ``ports``, or over ``connect()``),
    then check every one at both ends."""
    movers = [threading.Thread(target=run_exchange, args=(ports[i] if ports else 0, ex),
                               kwargs={"connect": connect})
              for i, ex in enumerate(exchanges)]  # fmt: skip
    for mover in movers:
        mover.start()
    for mover in movers:
        mover.join(120)
    for ex in exchanges:
        check_exchange(ex, target)


def check_exchange(ex: Exchange, target: HashReplyServer) -> None:
    assert ex.error is None, f"seed {ex.seed}: {ex.error!r}"
    # The target records after its own EOF, which may come after ours.
    wait_until(lambda: ex.seed in target.received, timeout=30)
    assert ex.received == (ex.reply_len, sha(payload(ex.seed, ex.reply_len))), (
        f"seed {ex.seed}: reply corrupted or short"
    )
    assert target.received.get(ex.seed) == (ex.send_len, sha(payload(ex.seed + 1, ex.send_len))), (
        f"seed {ex.seed}: request corrupted or short"
    )


def parse_event(line: str) -> dict[str, Any] | None:
    """One line of a ``--log-format json`` log, or None for a line that is not one
    (a crash's own traceback, say)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and "event" in entry else None


def event_matches(entry: dict[str, Any], name: str | None, fields: dict[str, Any]) -> bool:
    """``entry`` is the event ``name`` (any event for None) and has ``fields``: each
    value equal, or, for a compiled pattern, searched in the field's text, or, for a
    function, true of it."""
    if name is not None and entry["event"] != name:
        return False
    for key, wanted in fields.items():
        value = entry[key]  # a KeyError names a field that is not in the log's schema
        if isinstance(wanted, re.Pattern):
            if value is None or not wanted.search(str(value)):
                return False
        elif callable(wanted):
            if not wanted(value):
                return False
        elif value != wanted:
            return False
    return True


def event_time(entry: dict[str, Any]) -> float:
    """When an event was logged, in seconds since the epoch (its ``time``, to the ms)."""
    moment = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
    return moment.timestamp()


def address_ports(address: str) -> list[int]:
    """The ports in an ``address`` field: ``127.0.0.1:8080 and [::1]:8080``."""
    return [int(port) for port in re.findall(r":(\d+)(?= and |$)", address)]


def forward_spec(mapping: str) -> ForwardSpec:
    """The forward a ``mapping`` field names, as the user wrote it: ``-L 0:host:80``."""
    flag, text = mapping.split(" ", 1)
    kind = ForwardKind(flag[1])
    return parse_dynamic(text) if kind is ForwardKind.DYNAMIC else parse_forward(kind, text)


class MuxProcess(ReactorMuxProcess):
    """A ``reactor-mux`` child that logs JSON (``--log-format json``).

    Tests wait for and count its events by name and structured fields (``event``,
    ``mapping``, ``address``, ``reason``, ...: docs/operations.md, "Logs"), never by
    the wording of a message, which may change.  ``mark`` is where the log is now,
    for a ``start=`` that looks only at what comes after it.

    The child starts with SIGHUP at its default, whatever the suite runs under: a
    reactor-mux started with SIGHUP ignored (``nohup``) keeps it ignored, as ssh
    does, and the tests that send it SIGHUP (reload, drain) would wait in vain.
    ``nofile`` lowers the child's RLIMIT_NOFILE (both limits, or (soft, hard))."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        nofile: int | tuple[int, int] | None = None,
    ) -> None:
        # ReactorMuxProcess's own start, with the child's signal and limit set up.
        self.args = [*args, "--log-format", "json"]

        def in_the_child() -> None:
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            if nofile is not None:
                limits = nofile if isinstance(nofile, tuple) else (nofile, nofile)
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactor_mux", *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            preexec_fn=in_the_child,
        )
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def mark(self) -> int:
        return len(self.lines)

    def events(
        self, name: str | None = None, start: int = 0, **fields: Any
    ) -> list[dict[str, Any]]:
        found = (parse_event(line) for line in self.lines[start:])
        return [e for e in found if e is not None and event_matches(e, name, fields)]

    def count_event(self, name: str, start: int = 0, **fields: Any) -> int:
        return len(self.events(name, start, **fields))

    def wait_event(
        self, name: str, timeout: float = 10.0, start: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """The first event ``name`` with ``fields`` (see ``event_matches``) from line
        ``start`` on, waiting up to ``timeout`` seconds for it."""

        def found(line: str) -> dict[str, Any] | None:
            entry = parse_event(line)
            return entry if entry is not None and event_matches(entry, name, fields) else None

        return self.wait_line(found, timeout, start, f"{name!r} event with {fields!r}")

    def wait_events(
        self, name: str, count: int, timeout: float = 10.0, start: int = 0, **fields: Any
    ) -> list[dict[str, Any]]:
        """``count`` events ``name`` with ``fields`` from line ``start`` on."""
        if not wait_until(lambda: self.count_event(name, start, **fields) >= count, timeout):
            raise TimeoutError(
                f"{self.count_event(name, start, **fields)} of {count} {name!r} events with "
                f"{fields!r} within {timeout}s; log so far:\n{self.log}"
            )
        return self.events(name, start, **fields)[:count]

    def listening_port(self, timeout: float = 10.0, mapping: str | None = None) -> int:
        """The port of the ``listening`` event for ``mapping`` (None: a server's own)."""
        entry = self.wait_event("listening", timeout, mapping=mapping)
        return address_ports(entry["address"])[0]

    def forwards(
        self, count: int, timeout: float = 10.0, start: int = 0
    ) -> list[tuple[str, int, str | None]]:
        """Wait for ``count`` ``forward_up`` events; return (kind, port, target) each,
        with no target (None) for a SOCKS forward."""
        found = []
        for entry in self.wait_events("forward_up", count, timeout, start):
            spec = forward_spec(entry["mapping"])
            target = None if spec.dynamic else spec.target
            ports = address_ports(entry["address"]) or [0]  # a Unix socket path has none
            found.append((spec.kind.value, ports[0], target))
        return found


class PortHolder:
    """Loopback ports taken with bind(0) and held for the whole test.

    Each is held by a socket bound with SO_REUSEADDR that never listens, so
    (on Linux) connects to it are refused, bind(0) elsewhere never hands it
    out, and a socket without SO_REUSEADDR cannot bind it; yet a reactor-mux
    listener, which sets SO_REUSEADDR, can bind and listen on it when a test
    asks for a fixed port.  Probing a free port and releasing it instead
    races with every other test running in parallel.
    """

    def __init__(self) -> None:
        self._holders: list[socket.socket] = []

    def take(self) -> int:
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        self._holders.append(holder)
        return int(holder.getsockname()[1])

    def close(self) -> None:
        for holder in self._holders:
            holder.close()

    def __enter__(self) -> PortHolder:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class Tunnel:
    """A server process and the client processes attached to it.

    The server listens on a port held for the tunnel's life (``PortHolder``), so
    a restarted server gets the same port back, whatever else runs meanwhile."""

    def __init__(self, server_args: tuple[str, ...] = ()) -> None:
        self.server_args = server_args
        self._ports = PortHolder()
        self.server_port = self._ports.take()
        self.server = MuxProcess(["server", "--listen", f"127.0.0.1:{self.server_port}",
                                  *server_args])  # fmt: skip
        self.server.listening_port()
        self.clients: list[MuxProcess] = []

    def client(
        self, *forward_args: str, expect: int | None = None, extra: tuple[str, ...] = ()
    ) -> tuple[MuxProcess, list[tuple[str, int, str | None]]]:
        """Start a client; wait for ``expect`` ``forward_up`` events (default: one per
        -L/-R/-D)."""
        proc = MuxProcess(
            ["client", "--server", f"127.0.0.1:{self.server_port}", *extra, *forward_args]
        )
        self.clients.append(proc)
        if expect is None:
            expect = sum(1 for arg in forward_args if arg in ("-L", "-R", "-D"))
        forwards = proc.forwards(expect, timeout=15) if expect else []
        return proc, forwards

    def restart_server(self) -> None:
        self.server.kill()
        self.server = MuxProcess(["server", "--listen", f"127.0.0.1:{self.server_port}",
                                  *self.server_args])  # fmt: skip
        self.server.listening_port()

    def close(self) -> None:
        for proc in [*self.clients, self.server]:
            proc.stop()
        self._ports.close()
        for proc in [*self.clients, self.server]:
            assert "Traceback" not in proc.log, proc.log


def gave_up(proc: MuxProcess, event: str, alone: bool = True, **fields: Any) -> dict[str, Any]:
    """The client gave up on its server: its last error line is ``event`` (with
    ``fields``; with ``alone``, its only one), and it exited with status 255
    (ssh's) instead of retrying."""
    entry = proc.wait_event(event, level="error", **fields)
    proc.wait_event("stopped")
    assert proc.proc.wait(timeout=10) == 255, proc.log
    errors = [e for e in proc.events() if e["level"] == "error"]
    assert errors == [entry] if alone else errors[-1] == entry, proc.log
    return entry


def connect_from(source: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to 127.0.0.1:``port`` from the loopback address ``source``: Linux
    routes all of 127.0.0.0/8, so each address is a source of its own for the
    server's per-source limits and penalties (a misbehaving peer on 127.0.0.2
    does not get the good clients on 127.0.0.1 penalised)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))  # fmt: skip


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class ChaosRelay:
    """A TCP relay put in the channel's path, which the test can freeze or cut.

    ``freeze()`` stops forwarding on the connections open now (no FIN, no RST:
    a network that silently drops everything); connections made later pass.
    ``cut()`` resets every connection open now.  ``heads`` holds the first bytes
    each connection's client sent (what anyone on the path sees), in order.

    Each connection pair is served by one thread that owns both sockets and
    polls a flag, so only that thread ever closes them: closing a socket that
    another thread is blocked on lets the kernel hand its descriptor number to
    a new socket (a target's connection, say) while the blocked call still
    reads from that number, and then the relay steals bytes meant for a test.
    """

    POLL = 0.01

    def __init__(self, target_port: int, record: bool = False, source: str | None = None) -> None:
        self.target = ("127.0.0.1", target_port)
        self.source = (source, 0) if source is not None else None
        """Where the relay connects from: a loopback address stands for a host."""
        self.record = record
        """Keep every byte each way (``transcripts``), not just the heads."""
        self.transcripts: list[tuple[bytearray, bytearray]] = []
        """Per connection, in order: (what the client sent, what the server sent)."""
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._pairs: list[_RelayPair] = []
        self.heads: list[bytearray] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.sock.settimeout(self.POLL * 10)
        while not self._closed.is_set():
            try:
                near, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                far = socket.create_connection(self.target, source_address=self.source)
            except OSError:
                near.close()
                continue
            pair = _RelayPair(near, far, self.record)
            with self._lock:
                self._pairs.append(pair)
                self.heads.append(pair.head)
                if self.record:
                    self.transcripts.append((pair.up, pair.down))
            threading.Thread(target=pair.run, daemon=True).start()

    def freeze(self) -> None:
        with self._lock:
            for pair in self._pairs:
                pair.frozen.set()

    def cut(self) -> None:
        """Reset every connection open now, and wait until they are gone."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.cut.set()
        for pair in pairs:
            pair.done.wait(5)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self.sock.close()


class _RelayPair:
    """Both directions of one relayed connection, in one thread."""

    HEAD = 4096

    def __init__(self, near: socket.socket, far: socket.socket, record: bool = False) -> None:
        self.near, self.far = near, far
        self.head = bytearray()
        """The first bytes from ``near`` (up to HEAD)."""
        self.record = record
        self.up = bytearray()
        """Everything from ``near`` (when recording)."""
        self.down = bytearray()
        """Everything from ``far`` (when recording)."""
        self.frozen = threading.Event()
        self.cut = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        owed = {self.near: bytearray(), self.far: bytearray()}  # bytes waiting to go to each
        peer = {self.near: self.far, self.far: self.near}
        reading = {self.near, self.far}
        ended: set[socket.socket] = set()
        try:
            for sock in (self.near, self.far):
                sock.setblocking(False)
            while not self.cut.is_set() and (reading or any(owed.values())):
                if self.frozen.is_set():
                    time.sleep(ChaosRelay.POLL)
                    continue
                readable = [s for s in reading if len(owed[peer[s]]) < (1 << 20)]
                writable = [s for s, data in owed.items() if data]
                ready_r, ready_w, _ = select.select(readable, writable, [], ChaosRelay.POLL)
                for source in ready_r:
                    try:
                        data = source.recv(65536)
                    except BlockingIOError:
                        continue
                    if data:
                        owed[peer[source]] += data
                        if self.record:
                            (self.up if source is self.near else self.down).extend(data)
                        if source is self.near and len(self.head) < _RelayPair.HEAD:
                            self.head += data[: _RelayPair.HEAD - len(self.head)]
                    else:
                        reading.discard(source)
                for sink in ready_w:
                    try:
                        del owed[sink][: sink.send(owed[sink])]
                    except BlockingIOError:
                        continue
                for source in (self.near, self.far):
                    if source not in reading and not owed[peer[source]] and source not in ended:
                        ended.add(source)
                        peer[source].shutdown(socket.SHUT_WR)  # pass the EOF on
        except OSError:
            pass
        finally:
            for sock in (self.near, self.far):
                if self.cut.is_set():  # a reset, not a goodbye
                    try:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    except OSError:
                        pass
                sock.close()
            self.done.set()


def ends_within(conn: socket.socket, timeout: float) -> bool:
    """True if the peer closed or reset ``conn`` within ``timeout`` seconds."""
    conn.settimeout(timeout)
    try:
        while conn.recv(65536):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


def echo_once(port: int, data: bytes = b"ping") -> bytes:
    """Send ``data``, half-close, and return everything the far end sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := conn.recv(65536):
            out += chunk
        return out


def feed_decoder(decoder, reads):  # type: ignore[no-untyped-def]
    """Feed ``reads`` to an InboundDecoder the way a channel does (as much as fits
    per receive).  Yields ``(bytes_fed, records, error)`` after each receive, with
    each record resolved to ``(kind, stream_id, offset, length, body)``; stops after
    an error."""
    for data in reads:
        view = memoryview(data)
        while view:
            target = decoder.writable()
            n = min(len(target), len(view))
            target[:n] = view[:n]
            view = view[n:]
            records, error = decoder.advance(n)
            resolved = [
                (kind, sid, offset, length,
                 bytes((decoder.staging if kind == 0 else decoder.buffer)[offset:offset + length]))
                for kind, sid, offset, length in records
            ]  # fmt: skip
            yield n, resolved, error
            if error:
                return


class BlackHole:
    """A loopback port whose connects hang: a listener with a full accept queue
    drops SYNs, so a connect to it ends only by the connector's own timeout."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self._fillers: list[socket.socket] = []
        while True:  # fill the accept queue until a connect stalls
            filler = socket.socket()
            filler.settimeout(0.3)
            try:
                filler.connect(("127.0.0.1", self.port))
            except TimeoutError:
                filler.close()
                break
            self._fillers.append(filler)

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self.sock.close()


def poke(port: int, data: bytes = b"", timeout: float = 10.0) -> str:
    """Connect, send ``data``, half-close, read to the end; return how it ended:
    ``"reset"``, or ``"eof after N bytes"``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            size = 0
            while chunk := conn.recv(65536):
                size += len(chunk)
            return f"eof after {size} bytes"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except OSError as exc:  # shutdown() on a connection the peer already reset
        if exc.errno == errno.ENOTCONN:
            return "reset"
        raise


@contextlib.contextmanager
def good_traffic(ports, target, seed, size=5_000_000):  # type: ignore[no-untyped-def]
    """A good client moves checksummed data on ``ports`` for as long as the block
    runs; on the way out every one of its exchanges must have arrived intact.
    Yields the exchanges so far (each sets ``done`` when it ends)."""
    done = threading.Event()
    seeds = itertools.count(seed)
    transfers: list[Exchange] = []

    def keep_transferring(port: int) -> None:
        while not done.is_set():
            ex = Exchange(size, size, seed=next(seeds))
            transfers.append(ex)
            run_exchange(port, ex)

    threads = [threading.Thread(target=keep_transferring, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    try:
        yield transfers
    finally:
        done.set()
        for thread in threads:
            thread.join(120)
    # Each thread keeps an exchange in flight until the block ends, so the good
    # traffic spans it by construction; at least one per port must have run.
    assert len(transfers) >= len(ports)
    for ex in transfers:
        check_exchange(ex, target)


def socks5_connect(port: int, host: str, target_port: int) -> tuple[socket.socket, int]:
    """A SOCKS5 CONNECT by name; return the socket and the reply code."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(b"\x05\x01\x00")
    assert recv_exactly(sock, 2) == b"\x05\x00"
    name = host.encode()
    sock.sendall(b"\x05\x01\x00\x03" + bytes((len(name),)) + name + struct.pack(">H", target_port))
    reply = recv_exactly(sock, 10)
    assert reply[0] == 5
    return sock, reply[1]
