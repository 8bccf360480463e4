"""UDP forwarding (issue 24): ``-L udp:`` and ``-R udp:`` with real programs: dig
against dnsmasq on loopback, a socat UDP echo with checksummed datagrams from
several sources at once, the allow-lists' ``udp/`` patterns, drops counted in
status and metrics, associations forgotten after ``--udp-timeout``, and a
mapping that survives a resume."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support import ChaosRelay, MuxProcess, PortHolder, Tunnel, wait_until

SOCAT = shutil.which("socat")
DIG = shutil.which("dig")
DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists()
                                      else None)  # fmt: skip


def udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SocatEcho:
    """socat answering each UDP source from a child of its own (``fork``): a real
    UDP echo, as a user would set one up."""

    def __init__(self) -> None:
        self.port = udp_port()
        self.proc = subprocess.Popen([str(SOCAT), "-T", "30", "-b", "65536",
                                      f"UDP4-RECVFROM:{self.port},fork", "PIPE"],
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        assert wait_until(self._answers, timeout=10)

    def _answers(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.settimeout(0.5)
            probe.sendto(b"up?", ("127.0.0.1", self.port))
            try:
                return probe.recv(16) == b"up?"
            except OSError:
                return False

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


TRIES = 10
"""Sends of one datagram before the test calls it lost.  Five were not enough on a
loaded clean-clone run: a 60,000-byte datagram can meet a full queue (the channel's
256 KiB DATAGRAM_QUEUE_LIMIT, or a socket's buffer) several times in a row while five
other sources keep it full; two such datagrams, and only 60 KB ones, went
unanswered in 5 tries there."""


def echo_from_sources(port: int, sources: int, count: int, seed: int) -> list[str]:
    """``sources`` sockets at once, each sending ``count`` datagrams (sizes up to 60
    KB) and checking every reply's hash; returns what went wrong.  A datagram
    unanswered within a second is sent again, up to TRIES tries, as a UDP client does:
    UDP may lose one (socat's fork mode itself drops about 1 in 100 when several
    sources send at once, measured without any tunnel), it may never change one."""
    problems: list[str] = []

    def one(index: int) -> None:
        rng = random.Random(seed + index)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1)
            for n in range(count):
                data = rng.randbytes(rng.choice((1, 512, 1400, 9000, 60_000)))
                for _attempt in range(TRIES):
                    sock.sendto(data, ("127.0.0.1", port))
                    try:
                        reply = sock.recv(65_535)
                        break
                    except TimeoutError:
                        continue
                else:
                    problems.append(
                        f"source {index} datagram {n} ({len(data)} bytes): "
                        f"no answer in {TRIES} tries"
                    )
                    return
                if hashlib.sha256(reply).digest() != hashlib.sha256(data).digest():
                    problems.append(f"source {index} datagram {n}: a different reply")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(sources)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return problems


def status(control: Path) -> dict:  # type: ignore[type-arg]
    done = subprocess.run([sys.executable, "-m", "reactor_mux", "status", "--json", "--control",
                           str(control)], capture_output=True, text=True, timeout=20,
                          check=True)  # fmt: skip
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.mark.skipif(SOCAT is None, reason="needs socat")
def test_socat_echo_from_several_sources_through_l_and_r(tmp_path):
    echo = SocatEcho()
    tunnel = Tunnel()
    control = tmp_path / "c.sock"
    try:
        client, forwards = tunnel.client("-L", f"udp:0:127.0.0.1:{echo.port}",
                                         "-R", f"udp:0:127.0.0.1:{echo.port}",
                                         extra=("--control", str(control), "-v"))  # fmt: skip
        ports = {kind: port for kind, port, _ in forwards}
        for kind, seed in (("L", 1), ("R", 2)):
            # A clean clone's run once had every -R source unanswered for 5 s (not
            # reproduced since): the counts and logs say more than that next time.
            problems = echo_from_sources(ports[kind], sources=6, count=40, seed=seed)
            if problems:
                pytest.fail(f"-{kind}: {problems}\nsocat: {echo.proc.poll()}\n"
                            f"status: {status(control)['forwards']}\n"
                            f"server log:\n{tunnel.server.log[-4000:]}\n"
                            f"client log:\n{client.log[-4000:]}")  # fmt: skip
        counts = {f["forward"].split()[0]: f["datagrams"] for f in status(control)["forwards"]}
        # Every datagram went in at least once.  Six 60 KB datagrams at once can
        # overflow the channel's 256 KiB datagram queue on a busy machine: those are
        # dropped and counted, and the sender's retry carries them (UDP's way).
        for flag in ("-L", "-R"):
            assert counts[flag]["sent"] >= 6 * 40, counts
        assert counts["-L"]["associations"] == 6
    finally:
        tunnel.close()
        echo.close()


class Dnsmasq:
    """dnsmasq on 127.0.0.1, answering one name from its own table."""

    def __init__(self) -> None:
        # The port is probed free, then released for dnsmasq to bind: another test may
        # take it meanwhile (a clean-clone run once lost it so), and dnsmasq then exits.
        # So it is started again on another port, a few times.
        for _ in range(5):
            self.port = udp_port()
            self.proc = subprocess.Popen([str(DNSMASQ), "--no-daemon", "--conf-file=/dev/null",
                                          f"--port={self.port}", "--listen-address=127.0.0.1",
                                          "--bind-interfaces", "--no-resolv", "--no-hosts",
                                          "--address=/tunnel.test/10.9.8.7", "--user=root"],
                                         stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)  # fmt: skip
            if wait_until(lambda: self.proc.poll() is not None or dig(self.port) == "10.9.8.7",
                          timeout=20) and self.proc.poll() is None:  # fmt: skip
                return
            self.close()
        raise AssertionError("dnsmasq did not answer on 5 ports")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=10)


def dig(port: int) -> str:
    done = subprocess.run([str(DIG), "@127.0.0.1", "-p", str(port), "tunnel.test", "+short",
                           "+time=2", "+tries=1"], capture_output=True, text=True,
                          timeout=20)  # fmt: skip
    return done.stdout.strip()


@pytest.mark.skipif(DIG is None or DNSMASQ is None, reason="needs dig and dnsmasq")
def test_dig_against_dnsmasq_through_l_and_r():
    dns = Dnsmasq()
    tunnel = Tunnel(("--allow-connect", f"udp/127.0.0.1:{dns.port}"))
    try:
        _client, forwards = tunnel.client("-L", f"udp:0:127.0.0.1:{dns.port}",
                                          "-R", f"udp:0:127.0.0.1:{dns.port}")  # fmt: skip
        for _, port, _ in forwards:
            assert dig(port) == "10.9.8.7"
    finally:
        tunnel.close()
        dns.close()


def test_udp_allow_patterns_and_gateway_ports(echo):
    """A list that names TCP only allows no UDP target; ``udp/`` patterns allow
    theirs; a UDP bind beyond loopback needs --gateway-ports, as a TCP one."""
    target = udp_port()
    tunnel = Tunnel(("--allow-connect", f"127.0.0.1:{target}", "--allow-connect",
                     "udp/127.0.0.1:1-1000"))  # fmt: skip
    try:
        client, _ = tunnel.client("-L", f"udp:0:127.0.0.1:{target}", expect=0)
        refused = client.wait_event("forward_refused")
        assert f"udp/127.0.0.1:{target} is not allowed" in refused["reason"], refused
        remote, _ = tunnel.client("-R", f"udp:0.0.0.0:0:127.0.0.1:{target}", expect=0)
        assert "--gateway-ports" in remote.wait_event("forward_refused")["reason"]
    finally:
        tunnel.close()


class Collector:
    """A UDP target that records what arrives (and answers nothing)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                self.received.append(self.sock.recv(70_000))
            except OSError:
                return


def test_drops_are_counted_and_idle_associations_forgotten(tmp_path):
    """A datagram over the server's --max-frame is dropped and counted (status and
    metrics); an association silent for --udp-timeout is forgotten."""
    target = Collector()
    tunnel = Tunnel(("--max-frame", "1024"))
    control = tmp_path / "c.sock"
    with PortHolder() as ports:
        metrics_port = ports.take()
    try:
        _client, [(_, port, _)] = tunnel.client(
            "-L", f"udp:0:127.0.0.1:{target.port}",
            extra=("--control", str(control), "--udp-timeout", "1",
                   "--metrics", f"127.0.0.1:{metrics_port}"),
        )  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(b"a" * 1020, ("127.0.0.1", port))  # fits: 4 + 1020 = 1024
            sock.sendto(b"b" * 1021, ("127.0.0.1", port))  # one byte over
        assert wait_until(lambda: len(target.received) == 1, timeout=10)
        [forward] = status(control)["forwards"]
        assert forward["datagrams"]["sent"] == 1 and forward["datagrams"]["dropped"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                    timeout=10) as answer:  # fmt: skip
            scrape = answer.read().decode()
        assert 'reactor_mux_datagrams_total{outcome="dropped"} 1.0' in scrape, scrape
        assert wait_until(lambda: status(control)["forwards"][0]["datagrams"]["associations"]
                          == 0, timeout=10)  # fmt: skip
    finally:
        tunnel.close()
        target.sock.close()


class PythonEcho(Collector):
    """A UDP echo that loses nothing of its own (socat's fork mode does, now and
    then): what the resume test counts must be the tunnel's."""

    def _run(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(70_000)
                self.sock.sendto(data, source)
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()


def test_a_udp_mapping_survives_a_resume():
    echo = PythonEcho()
    tunnel = Tunnel()
    relay = ChaosRelay(tunnel.server_port)
    try:
        client = MuxProcess(["client", "--server", f"127.0.0.1:{relay.port}",
                             "--reconnect-min", "0.1", "--reconnect-max", "0.5",
                             "-L", f"udp:0:127.0.0.1:{echo.port}"])  # fmt: skip
        tunnel.clients.append(client)
        [(_, port, _)] = client.forwards(1, timeout=15)
        assert echo_from_sources(port, sources=2, count=10, seed=3) == []
        relay.cut()
        client.wait_event("channel_resumed", timeout=30)
        assert echo_from_sources(port, sources=2, count=10, seed=4) == []
        assert tunnel.server.count_event("channel_up") == 1
    finally:
        tunnel.close()
        relay.close()
        echo.close()


def test_a_name_that_resolves_where_the_rules_forbid_drops_its_datagrams_once_told():
    """``udp/*:PORT`` lets a name through as written; the loopback address it
    resolves to is not public, so every datagram is dropped and counted, with one
    line in the server's log for all of them (and one lookup)."""
    target = Collector()
    tunnel = Tunnel(("--allow-connect", f"udp/*:{target.port}"))
    try:
        _client, [(_, port, _)] = tunnel.client("-L", f"udp:0:localhost:{target.port}")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(20):
                sock.sendto(b"let me through", ("127.0.0.1", port))
        refused = tunnel.server.wait_event("stream_refused", timeout=10)
        assert "non-public address" in refused["reason"], refused
        time.sleep(1)  # time for the other nineteen to arrive (and be dropped)
        assert len(tunnel.server.events("stream_refused")) == 1
        assert target.received == []
    finally:
        tunnel.close()
        target.sock.close()
