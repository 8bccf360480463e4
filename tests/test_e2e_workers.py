"""``server --workers N`` with real processes (issue 25): one supervisor, N workers
sharing the listening socket.  Checksummed -L, -R and -D traffic from 8 clients;
resumes that land in the wrong worker handed to the owner (plaintext HELLO, TLS
ALPN hint) through 20 cuts; -R ports exclusive across workers; server-wide
--max-channels and penalties; a worker killed under a stream of new connections;
one /metrics and one status for all; reload reaching every worker; the upgrade
signal under connection load."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from security_support import tls_server
from support import (
    ChaosRelay,
    Exchange,
    MuxProcess,
    Tunnel,
    check_exchange,
    connect_from,
    read_until_closed,
    run_exchange,
    run_exchanges,
    socks5_connect,
    wait_until,
)
from test_e2e_chaos import ChaosTarget, Stream, verify
from test_e2e_control import command, status
from test_e2e_resume import FAST, client_through, cut_and_resume, run_paced

from reactor_mux.protocol.frames import encode_frame

pytestmark = pytest.mark.codec_independent

SIZE = 1_000_000


def workers_tunnel(count: int, tmp_path: Path, *extra: str) -> tuple[Tunnel, Path]:
    control = tmp_path / "server.sock"
    tunnel = Tunnel(("--workers", str(count), "--control", str(control), *extra))
    tunnel.server.wait_events("worker_started", count)
    assert wait_until(lambda: _serving(control), timeout=20), tunnel.server.log
    return tunnel, control


def _serving(control: Path) -> bool:
    done = command("status", "--json", "--control", str(control))
    if done.returncode != 0:
        return False
    workers = json.loads(done.stdout)["workers"]
    return all("error" not in worker for worker in workers)


def channels_by_worker(control: Path) -> dict[int, int]:
    report = status(control)
    counts: dict[int, int] = {}
    for channel in report["channels"]:
        counts[channel["worker"]] = counts.get(channel["worker"], 0) + 1
    return counts


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as response:
        text = response.read().decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_eight_clients_move_l_r_and_d_through_two_workers(tmp_path, hash_target, ports):
    metrics = ports.take()
    tunnel, control = workers_tunnel(2, tmp_path, "--metrics", f"127.0.0.1:{metrics}")
    try:
        clients = []
        for _ in range(8):
            target = f"0:127.0.0.1:{hash_target.port}"
            _proc, forwards = tunnel.client("-L", target, "-R", target, "-D", "0")
            clients.append({kind: port for kind, port, _ in forwards})
        exchanges, targets = [], []
        for index, forwards in enumerate(clients):
            for kind in ("L", "R"):
                exchanges.append(Exchange(send_len=SIZE, reply_len=SIZE, seed=500 + 2 * index
                                          + (kind == "R")))  # fmt: skip
                targets.append(forwards[kind])
        run_exchanges(exchanges, hash_target, targets)
        for index, forwards in enumerate(clients):

            def through_socks(port: int = forwards["D"]) -> socket.socket:
                sock, code = socks5_connect(port, "127.0.0.1", hash_target.port)
                assert code == 0
                return sock

            socks = Exchange(send_len=SIZE // 4, reply_len=SIZE // 4, seed=700 + index)
            run_exchange(0, socks, connect=through_socks)  # type: ignore[arg-type]
            check_exchange(socks, hash_target)
        by_worker = channels_by_worker(control)
        assert sum(by_worker.values()) == 8 and set(by_worker) <= {0, 1}
        found = scrape(metrics)
        up = found["reactor_mux_channels_up"]
        assert {dict(labels)["worker"] for labels in up} == {"0", "1"}
        assert sum(up.values()) == 8
        assert {dict(labels)["worker"]: value for labels, value in up.items()} == {
            str(worker): float(by_worker.get(worker, 0)) for worker in (0, 1)
        }
        opened = found["reactor_mux_streams_opened_total"]
        per_kind: dict[str, float] = {}
        for labels, value in opened.items():
            kind = dict(labels)["mapping"]
            per_kind[kind] = per_kind.get(kind, 0) + value
        assert per_kind == {"-L": 8, "-R": 8, "-D": 8}, opened
        text = command("status", "--control", str(control)).stdout
        assert "worker 0: pid" in text and "worker 1: pid" in text
        lines = [json.loads(line) for line in tunnel.server.lines if line.startswith("{")]
        assert {line.get("worker") for line in lines if line["event"] == "channel_up"} <= {0, 1}
    finally:
        tunnel.close()


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_twenty_cuts_each_resume_in_the_owning_worker(tmp_path, pki, tls):
    target = ChaosTarget()
    server_extra = ("--workers", "4", "-v", *FAST)
    tunnel = tls_server(pki, *server_extra) if tls else Tunnel(server_extra)
    client_tls = ("--tls", "--tls-ca", str(pki.ca.path)) if tls else ()
    tunnel.server.wait_events("worker_started", 4)
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = client_through(relay, tunnel, "-L", f"0:127.0.0.1:{target.port}",
                                "-R", f"0:127.0.0.1:{target.port}", *FAST, *client_tls)  # fmt: skip
        forwards = {kind: port for kind, port, _ in client.forwards(2, timeout=20)}
        streams = [Stream(forwards["L" if i % 2 else "R"], 100_000 + 7_000 * i,
                          150_000 + 5_000 * i, seed=31_000 + 3 * i) for i in range(12)]  # fmt: skip
        threads = [threading.Thread(target=run_paced, args=(s, 20.0)) for s in streams]
        for thread in threads:
            thread.start()
        assert wait_until(lambda: target.connections >= 12, timeout=30)
        for _ in range(20):
            cut_and_resume(relay, client, every=1.0)
        for thread in threads:
            thread.join(90)
        outcomes = [verify(s, target) for s in streams]
        broken = [s.seed for s, o in zip(streams, outcomes, strict=True) if o != "intact"]
        assert not broken, f"{len(broken)} streams did not arrive intact: {broken}"
        assert client.count_event("channel_resumed") == 20
        assert client.count_event("resume_failed") == 0
        resumed = tunnel.server.events("channel_resumed")
        assert len(resumed) == 20
        assert len({event["worker"] for event in resumed}) == 1  # always its owner
        owner = resumed[0]["worker"]
        handed = tunnel.server.events("handed_over", reason=f"worker {owner}")
        assert handed, "with 4 workers, some of 20 resumes land in another worker first"
        assert tunnel.server.events("channel_refused") == []
    finally:
        relay.close()
        tunnel.close()
        target.close()


@contextmanager
def new_connections(port: int, *, source: str = "127.0.0.1") -> Iterator[dict[str, int]]:
    """Connections made one after another for the block: each must be accepted and
    greeted (the server's HELLO); counts of what happened."""
    counts = {"greeted": 0, "refused": 0, "reset": 0}
    hello = encode_frame(0, 1, b"HELLO 1 262144 65536")  # as a client opens
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                sock = connect_from(source, port, timeout=10)
            except ConnectionRefusedError:
                counts["refused"] += 1
                continue
            except OSError:  # reset before connect() returned: counted, not the end
                counts["reset"] += 1
                continue
            try:
                sock.settimeout(10)
                sock.sendall(hello)
                counts["greeted" if sock.recv(9) else "reset"] += 1
            except OSError:
                counts["reset"] += 1
            finally:
                sock.close()
            time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(20)


def test_a_killed_worker_is_restarted_and_the_others_carry_on(tmp_path, hash_target):
    tunnel, control = workers_tunnel(2, tmp_path, "--per-source-penalties", "off")
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        report = status(control)
        [channel] = report["channels"]
        survivor = channel["worker"]
        victim = next(w for w in report["workers"] if w["worker"] != survivor)
        long_stream = Exchange(send_len=40_000_000, reply_len=40_000_000, seed=900)
        runner = threading.Thread(target=run_exchange, args=(port, long_stream))
        with new_connections(tunnel.server_port) as counts:
            runner.start()
            time.sleep(0.5)
            os.kill(victim["pid"], signal.SIGKILL)
            tunnel.server.wait_events("worker_started", 3, timeout=20)
            assert wait_until(lambda: _serving(control), timeout=20)
            time.sleep(0.5)
        runner.join(120)
        check_exchange(long_stream, hash_target)
        assert counts["refused"] == 0, counts
        assert counts["greeted"] > 20, counts
        # Only what the killed worker had accepted and not yet answered is lost.
        assert counts["reset"] <= 2, counts
        exited = tunnel.server.wait_event("worker_exited")
        assert "signal 9" in exited["reason"]
    finally:
        tunnel.close()


def test_max_channels_and_penalties_hold_across_workers(tmp_path, hash_target):
    tunnel, control = workers_tunnel(2, tmp_path, "--max-channels", "3",
                                     "--per-source-penalties", "noauth:30 min:30")  # fmt: skip
    try:
        clients = [tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")[0] for _ in range(3)]
        for _ in range(12):  # until the three sit in both workers: the count is shared
            if len(channels_by_worker(control)) == 2:
                break
            clients.pop(0).stop()
            assert wait_until(lambda: sum(channels_by_worker(control).values()) == 2)
            clients.append(tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")[0])
        assert len(channels_by_worker(control)) == 2, "12 clients all landed in one worker"
        late = MuxProcess(["client", "--server", f"127.0.0.1:{tunnel.server_port}",
                           "-L", f"0:127.0.0.1:{hash_target.port}"])  # fmt: skip
        tunnel.clients.append(late)
        refused = tunnel.server.wait_event("channel_refused", timeout=20)
        assert "limit 3" in refused["reason"]
        assert sum(channels_by_worker(control).values()) == 3
        # A stranger that leaves without a word from 127.0.0.9 is penalised by the
        # worker that took it; every worker then turns that source away.
        connect_from("127.0.0.9", tunnel.server_port).close()
        tunnel.server.wait_event("source_penalised", peer="127.0.0.9/32")
        time.sleep(0.3)  # the other workers hear of it through their inbox
        greeted = 0
        for _ in range(20):
            try:  # turned away at once: reset, maybe before connect() even returns
                with connect_from("127.0.0.9", tunnel.server_port) as sock:
                    sock.settimeout(10)
                    greeted += bool(sock.recv(9))
            except ConnectionResetError:
                pass
        assert greeted == 0
    finally:
        tunnel.close()


def test_startup_limits_count_across_workers(tmp_path, hash_target):
    """--per-source-max-startups 4 and --max-startups 6 hold for the whole server: one
    source's idle connections land in both workers (a worker busier than its sibling
    leaves the shared accept queue to it) and the fifth is refused, as are startups
    beyond FULL from a source that has some; a new source still gets in, in place of
    an idle one."""
    limits = ("--per-source-max-startups", "4", "--max-startups", "6")
    tunnel, control = workers_tunnel(2, tmp_path, *limits, "--handshake-timeout", "60")
    port = tunnel.server_port
    held: list[socket.socket] = []

    def hold(source: str) -> None:
        held.append(connect_from(source, port))
        assert wait_until(lambda: status(control)["admission"]["unauthenticated"] == len(held))

    def refusal(source: str) -> bytes:
        with connect_from(source, port) as sock:
            return read_until_closed(sock)

    try:
        for _ in range(4):
            hold("127.0.0.11")
        spread = [worker["unauthenticated"] for worker in status(control)["workers"]]
        assert sorted(spread) != [0, 4] and sum(spread) == 4, spread
        assert b"busy" in (said := refusal("127.0.0.11")) and b"--per-source-max-startups" in said
        hold("127.0.0.12")
        hold("127.0.0.12")  # six in all: FULL
        assert b"busy" in (said := refusal("127.0.0.12")) and b"--max-startups" in said
        assert status(control)["admission"]["unauthenticated"] == 6
        late = connect_from("127.0.0.13", port)  # a source with none: takes an idle one's place
        held.append(late)
        evicted = tunnel.server.wait_event("channel_down", reason=re.compile("make room"))
        assert evicted["peer"].startswith("127.0.0.11:"), evicted
        assert wait_until(lambda: status(control)["admission"]["unauthenticated"] == 6)
    finally:
        for sock in held:
            sock.close()
        tunnel.close()


def test_a_remote_port_is_exclusive_across_workers(tmp_path, hash_target, ports):
    tunnel, control = workers_tunnel(2, tmp_path)
    try:
        holders: dict[int, tuple[Path, MuxProcess]] = {}
        for attempt in range(12):  # until a client sits in each worker
            path = tmp_path / f"client{attempt}.sock"
            marker = 20_000 + attempt  # an -L target that names the client in the status
            proc, _ = tunnel.client("-L", f"0:127.0.0.1:{marker}", extra=("--control", str(path)))
            [worker] = [channel["worker"] for channel in status(control)["channels"]
                        if f"-L 127.0.0.1:{marker}" in channel.get("mappings", [])]  # fmt: skip
            holders.setdefault(worker, (path, proc))
            if len(holders) == 2:
                break
        assert len(holders) == 2, "12 clients all landed in one worker"
        port = ports.take()
        spec = f"{port}:127.0.0.1:{hash_target.port}"
        (first_path, first), (second_path, second) = holders[0], holders[1]
        added = command("forward", "add", "-R", spec, "--control", str(first_path))
        assert added.returncode == 0, added.stderr
        first.wait_event("forward_up", mapping=f"-R {spec}")
        added = command("forward", "add", "-R", spec, "--control", str(second_path))
        assert added.returncode == 0, added.stderr
        refused = second.wait_event("forward_refused", mapping=f"-R {spec}")
        assert "in use" in refused["reason"], refused
        exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=950)
        run_exchange(port, exchange)
        check_exchange(exchange, hash_target)
    finally:
        tunnel.close()


def test_a_restarted_client_takes_its_remote_port_back_from_another_worker(
    tmp_path, hash_target, ports
):
    """A client killed and started again (same address, no session key) asks for its
    -R port, held by its old session waiting for a resume, maybe in another worker:
    every restart gets the port; until one has come from another worker."""
    tunnel, _control = workers_tunnel(2, tmp_path)
    try:
        port = ports.take()
        spec = f"{port}:127.0.0.1:{hash_target.port}"
        fast = ("--reconnect-min", "0.2", "--reconnect-max", "1")
        client, _ = tunnel.client("-R", spec, extra=fast)
        across = 0
        for restart in range(12):
            client.proc.kill()
            client.proc.wait(10)
            client, _ = tunnel.client("-R", spec, extra=fast)
            exchange = Exchange(send_len=SIZE // 4, reply_len=SIZE // 4, seed=1200 + restart)
            run_exchange(port, exchange)
            check_exchange(exchange, hash_target)
            across = tunnel.server.count_event("session_replaced", channel="another worker")
            if across:
                break
        assert across, "12 restarts all landed in the worker holding the old session"
    finally:
        tunnel.close()


def test_a_reload_reaches_every_worker(tmp_path, echo, hash_target, ports):
    config = tmp_path / "server.toml"
    port = ports.take()
    control = tmp_path / "server.sock"

    def write(*targets: int) -> None:
        allowed = ", ".join(f'"127.0.0.1:{target}"' for target in targets)
        config.write_text(f'listen = ["127.0.0.1:{port}"]\nworkers = 2\n'
                          f'control = "{control}"\nallow-connect = [{allowed}]\n')  # fmt: skip

    write(echo.port)
    server = MuxProcess(["server", "--config", str(config)])
    clients: list[MuxProcess] = []
    try:
        server.wait_events("worker_started", 2)
        assert wait_until(lambda: _serving(control), timeout=20)
        socks_ports = []
        for _ in range(4):
            client = MuxProcess(["client", "--server", f"127.0.0.1:{port}", "-D", "0"])
            clients.append(client)
            socks_ports.append(client.forwards(1, timeout=15)[0][1])
        for socks_port in socks_ports:
            sock, code = socks5_connect(socks_port, "127.0.0.1", hash_target.port)
            sock.close()
            assert code == 2  # not allowed yet
        write(echo.port, hash_target.port)
        answer = command("reload", "--control", str(control))
        assert answer.returncode == 0, answer.stderr
        assert "worker 0:" in answer.stdout and "worker 1:" in answer.stdout, answer.stdout
        assert "waiting for a restart" not in answer.stdout  # a worker's own control path
        for socks_port in socks_ports:
            sock, code = socks5_connect(socks_port, "127.0.0.1", hash_target.port)
            sock.close()
            assert code == 0
        mark = server.mark
        write(echo.port)
        server.signal(signal.SIGHUP)  # passed on to every worker
        reloaded = server.wait_events("reloaded", 2, start=mark)
        assert {event["worker"] for event in reloaded} == {0, 1}
    finally:
        for proc in [*clients, server]:
            assert proc.stop() == 0
            assert "Traceback" not in proc.log


def test_the_upgrade_signal_refuses_no_connection(tmp_path, hash_target, ports):
    metrics = ports.take()
    tunnel, control = workers_tunnel(2, tmp_path, "--per-source-penalties", "off",
                                     "--metrics", f"127.0.0.1:{metrics}")  # fmt: skip
    successor = None
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        old = status(control)
        with new_connections(tunnel.server_port) as counts:
            time.sleep(0.5)
            tunnel.server.signal(signal.SIGUSR2)
            upgrading = tunnel.server.wait_event("upgrading", timeout=20)
            successor = int(upgrading["address"])
            tunnel.server.wait_event("upgraded", timeout=30)
            assert tunnel.server.proc.wait(60) == 0  # the old one drained and left
            time.sleep(1.0)
        assert counts["refused"] == 0 and counts["reset"] == 0, counts
        assert counts["greeted"] > 50, counts
        new = status(control)
        assert new["pid"] == successor != old["pid"]
        assert {w["pid"] for w in new["workers"]}.isdisjoint(w["pid"] for w in old["workers"])
        # The client's channel ended with its old worker; it reconnected to a new one.
        exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=1300)
        assert wait_until(lambda: len(status(control)["channels"]) == 1, timeout=20)
        run_exchange(port, exchange)
        check_exchange(exchange, hash_target)
        # The new supervisor serves --control and --metrics, for its own workers.
        up = scrape(metrics)["reactor_mux_channels_up"]
        assert sum(up.values()) == 1
    finally:
        if successor is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(successor, signal.SIGTERM)
            assert wait_until(lambda: not _alive(successor), timeout=30)
        tunnel.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigusr1_reopens_every_log_file(tmp_path, hash_target, ports):
    """logrotate moves the file, then SIGUSR1 to the supervisor: it and every worker
    write to the new file from then on."""
    log = tmp_path / "server.log"
    port = ports.take()
    server = MuxProcess(["server", "--listen", f"127.0.0.1:{port}", "--workers", "2",
                         "--log-file", str(log)])  # fmt: skip

    def events(name: str) -> list[dict]:  # type: ignore[type-arg]
        if not log.exists():
            return []
        lines = [json.loads(line) for line in log.read_text().splitlines() if line]
        return [line for line in lines if line["event"] == name]

    try:
        assert wait_until(lambda: len(events("control_listening")) >= 2, timeout=20)
        log.rename(tmp_path / "server.log.1")
        server.signal(signal.SIGUSR1)
        assert wait_until(lambda: len(events("log_reopened")) == 3, timeout=20)
        reopened = sorted(str(event.get("worker")) for event in events("log_reopened"))
        assert reopened == ["0", "1", "None"]  # the supervisor's lines name no worker
        client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                             "-L", f"0:127.0.0.1:{hash_target.port}"])  # fmt: skip
        client.forwards(1, timeout=15)
        assert wait_until(lambda: len(events("channel_up")) == 1)
        assert client.stop() == 0
    finally:
        assert server.stop() == 0


def test_a_killed_workers_channels_stop_counting(tmp_path, hash_target):
    """--max-channels 1: the worker holding the one channel is killed; the next client
    is served (its count died with it), by whichever worker takes it."""
    tunnel, control = workers_tunnel(2, tmp_path, "--max-channels", "1")
    try:
        first, _ = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}",
                                 extra=("--resume-timeout", "0"))  # fmt: skip
        report = status(control)
        [channel] = report["channels"]
        [holder] = [w for w in report["workers"] if w["worker"] == channel["worker"]]
        first.proc.kill()
        first.proc.wait(10)
        os.kill(holder["pid"], signal.SIGKILL)
        tunnel.server.wait_event("worker_exited")
        _second, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        exchange = Exchange(send_len=SIZE, reply_len=SIZE, seed=1400)
        run_exchange(port, exchange)
        check_exchange(exchange, hash_target)
        assert tunnel.server.events("channel_refused") == []
    finally:
        tunnel.close()


def test_draining_workers_refuse_new_connections(tmp_path, hash_target):
    """SIGTERM: every worker closes its copy of the listening socket as it drains, so
    a new connection is refused at once (as a single process's is), not left to hang
    while a stream keeps a worker draining."""
    tunnel, control = workers_tunnel(2, tmp_path, "--drain-timeout", "20")
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        held = socket.create_connection(("127.0.0.1", port))  # an open stream: a long drain
        held.sendall(b"x")
        assert wait_until(lambda: status(control)["channels"][0]["streams"] != [])
        tunnel.server.signal(signal.SIGTERM)
        tunnel.server.wait_event("draining", timeout=10)

        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", tunnel.server_port), timeout=2).close()
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:  # it sat in the queue as the last copy closed
                pass
            return False

        assert wait_until(refused, timeout=10)
        held.close()
        assert tunnel.server.proc.wait(30) == 0
    finally:
        tunnel.close()


def test_sighup_without_a_config_drains_the_whole_server(tmp_path, hash_target):
    """As a single process does (a hangup of its terminal): every worker drains, and
    the supervisor exits 0 instead of restarting them."""
    tunnel, _control = workers_tunnel(2, tmp_path)
    try:
        tunnel.client("-L", f"0:127.0.0.1:{hash_target.port}")
        tunnel.server.signal(signal.SIGHUP)
        assert tunnel.server.proc.wait(30) == 0
        assert tunnel.server.count_event("worker_exited") == 0, tunnel.server.log
    finally:
        tunnel.close()


def test_an_abandoned_upgrade_gives_control_and_metrics_back(tmp_path, ports):
    """The new supervisor fails (here its config file went bad before SIGUSR2): the old
    one carries on, and takes back the --control socket and --metrics port it had
    handed over."""
    config = tmp_path / "server.toml"
    control = tmp_path / "server.sock"
    port, metrics = ports.take(), ports.take()
    config.write_text(f'listen = ["127.0.0.1:{port}"]\nworkers = 2\ncontrol = "{control}"\n'
                      f'metrics = "127.0.0.1:{metrics}"\n')  # fmt: skip
    server = MuxProcess(["server", "--config", str(config)])
    try:
        server.wait_events("worker_started", 2)
        assert wait_until(lambda: _serving(control), timeout=20)
        before = status(control)["pid"]
        config.write_text("window = 'not a size'\n")
        server.signal(signal.SIGUSR2)
        server.wait_event("upgrade_failed", timeout=30)
        assert wait_until(lambda: _serving(control), timeout=10)
        assert status(control)["pid"] == before
        assert "reactor_mux_channels_up" in scrape(metrics)
    finally:
        assert server.stop() == 0
        assert "Traceback" not in server.log
