"""``--metrics``: Prometheus text scraped from both processes during a transfer,
with the counters checked against the bytes the test itself moved."""

from __future__ import annotations

import socket
import struct
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import (
    MuxProcess,
    PortHolder,
    Tunnel,
    drain,
    payload,
    recv_exactly,
    send_all_then_eof,
    sha,
    socks5_connect,
    wait_until,
)

from reactor_mux.io.netutil import abort_socket
from reactor_mux.service.metrics import MAX_METRICS_CONNECTIONS, MAX_METRICS_REQUEST
from reactor_mux.tools.targets import ThreadedTCPServer

pytestmark = pytest.mark.codec_independent

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def metered(hash_target):
    """A server and a client, each with --metrics, and one -L to the hash target."""
    with PortHolder() as ports:
        server_metrics, client_metrics = ports.take(), ports.take()
        server = MuxProcess(["server", "--listen", "127.0.0.1:0",
                                    "--metrics", f"127.0.0.1:{server_metrics}"])  # fmt: skip
        client = None
        try:
            port = server.listening_port()
            client = MuxProcess([
                "client", "--server", f"127.0.0.1:{port}", "--keepalive-interval", "0.2",
                "--metrics", f"127.0.0.1:{client_metrics}",
                "-L", f"0:127.0.0.1:{hash_target.port}",
            ])  # fmt: skip
            [(_, local, _)] = client.forwards(1, timeout=15)
            yield server_metrics, client_metrics, local, port
        finally:
            for proc in (client, server):
                if proc is not None:
                    assert proc.stop() == 0
                    assert "Traceback" not in proc.log


def test_counters_match_the_bytes_moved_during_and_after_a_transfer(metered, hash_target):
    server_metrics, client_metrics, local, server_port = metered
    mapping = f"-L 0:127.0.0.1:{hash_target.port}"  # the client names it as the user did
    server_mapping = "-L"  # the server by kind only: the targets are the clients' to choose
    request_len, reply_len = 3_000_016, 2_000_000
    with socket.create_connection(("127.0.0.1", local), timeout=30) as conn:
        conn.sendall(struct.pack(">QQ", reply_len, 11))
        conn.sendall(payload(12, 1_000_000))
        assert recv_exactly(conn, reply_len) == payload(11, reply_len)

        # Mid-transfer: the stream is open, its bytes so far are counted exactly.
        def client_caught_up() -> bool:
            sent = value(scrape(client_metrics), "reactor_mux_stream_bytes_total",
                         mapping=mapping, direction="sent")  # fmt: skip
            return sent == 1_000_016

        assert wait_until(client_caught_up)
        during = scrape(client_metrics)
        assert value(during, "reactor_mux_streams_open", mapping=mapping) == 1
        assert value(during, "reactor_mux_stream_bytes_total", mapping=mapping,
                     direction="received") == reply_len  # fmt: skip
        assert value(during, "reactor_mux_channels_up") == 1
        on_server = scrape(server_metrics)
        assert value(on_server, "reactor_mux_stream_bytes_total", mapping=server_mapping,
                     direction="sent") == reply_len  # fmt: skip

        send_all_then_eof(conn, payload(13, request_len - 1_000_016))
        assert drain(conn) == (0, sha(b""))
    assert wait_until(lambda: 11 in hash_target.received)

    def ended(port: int, label: str) -> bool:
        samples = scrape(port)
        opened = value(samples, "reactor_mux_streams_opened_total", mapping=label)
        still_open = [count for (name, _), count in samples.items()
                      if name == "reactor_mux_streams_open" and count]  # fmt: skip
        return opened == 1 and not still_open

    assert wait_until(
        lambda: ended(client_metrics, mapping) and ended(server_metrics, server_mapping)
    )
    after = scrape(client_metrics)
    assert value(after, "reactor_mux_stream_bytes_total", mapping=mapping,
                 direction="sent") == request_len  # fmt: skip
    assert value(after, "reactor_mux_stream_bytes_total", mapping=mapping,
                 direction="received") == reply_len  # fmt: skip
    server_after = scrape(server_metrics)
    assert value(server_after, "reactor_mux_stream_bytes_total", mapping=server_mapping,
                 direction="received") == request_len  # fmt: skip
    assert value(server_after, "reactor_mux_channels_opened_total") == 1
    assert value(after, "reactor_mux_stream_errors_total", reason="reset_by_peer") is None
    assert value(after, "reactor_mux_buffered_bytes", direction="inbound") == 0
    assert wait_until(lambda: 0 < _rtt(scrape(client_metrics), f"127.0.0.1:{server_port}") < 5)
    assert (value(after, "process_resident_memory_bytes") or 0) > 1_000_000
    assert value(after, "process_cpu_seconds_total") is not None
    assert value(after, "reactor_mux_info", role="client", version=_version()) == 1


def _rtt(samples: Samples, peer: str) -> float:
    return value(samples, "reactor_mux_channel_rtt_seconds", peer=peer) or 0.0


def _version() -> str:
    from reactor_mux import __version__

    return __version__


def test_refusals_and_errors_are_counted_by_reason(hash_target):
    with PortHolder() as ports:
        metrics, closed = ports.take(), ports.take()
        server = MuxProcess(["server", "--listen", "127.0.0.1:0", "--metrics",
                                    f"127.0.0.1:{metrics}", "--allow-connect",
                                    f"127.0.0.1:{hash_target.port}"])  # fmt: skip
        client = None
        try:
            port = server.listening_port()
            client = MuxProcess(["client", "--server", f"127.0.0.1:{port}",
                                        "-L", "0:10.1.2.3:80", "-D", "0"])  # fmt: skip
            forwards = client.forwards(1, timeout=15)
            client.wait_event("forward_refused", mapping="-L 0:10.1.2.3:80")
            [(_, socks_port, _)] = [f for f in forwards if f[0] == "D"]
            for target_port in (closed, closed):  # forbidden by --allow-connect
                sock, code = socks5_connect(socks_port, "127.0.0.1", target_port)
                sock.close()
                assert code == 2
            samples = scrape(metrics)
            assert value(samples, "reactor_mux_refused_total", what="mapping",
                         reason="forbidden") == 1  # fmt: skip
            assert value(samples, "reactor_mux_refused_total", what="stream",
                         reason="forbidden") == 2  # fmt: skip
        finally:
            for proc in (client, server):
                if proc is not None:
                    assert proc.stop() == 0


def test_other_paths_methods_and_oversized_requests(metered):
    server_metrics, _, _, _ = metered
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"http://127.0.0.1:{server_metrics}/", timeout=10)
    assert missing.value.code == 404
    post = urllib.request.Request(f"http://127.0.0.1:{server_metrics}/metrics", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as wrong_method:
        urllib.request.urlopen(post, timeout=10)
    assert wrong_method.value.code == 405
    with socket.create_connection(("127.0.0.1", server_metrics), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_METRICS_REQUEST)
        assert drain(sock)[0] > 0  # answered (431) and closed, not left hanging
    with socket.create_connection(("127.0.0.1", server_metrics), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_METRICS_REQUEST)
        assert sock.recv(100).startswith(b"HTTP/1.1 431 ")
    assert value(scrape(server_metrics), "reactor_mux_channels_up") == 1


def test_scrapers_beyond_the_limit_are_turned_away(metered):
    server_metrics, _, _, _ = metered
    idle = [socket.create_connection(("127.0.0.1", server_metrics), timeout=10)
            for _ in range(MAX_METRICS_CONNECTIONS)]  # fmt: skip
    try:
        assert wait_until(lambda: _closed_at_once(server_metrics))
    finally:
        for sock in idle:
            sock.close()
    assert wait_until(lambda: _scrapes(server_metrics))


def _scrapes(port: int) -> bool:
    try:
        return value(scrape(port), "reactor_mux_channels_up") == 1
    except OSError:  # the server has not seen the idle ones go yet
        return False


def _closed_at_once(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
        try:
            return sock.recv(100) == b""
        except ConnectionResetError:
            return True


class ResettingTarget(ThreadedTCPServer):
    """Reads one byte, then resets the connection."""

    def handle(self, conn: socket.socket) -> None:
        conn.recv(1)
        abort_socket(conn)


def test_resets_and_reconnects_are_counted():
    target = ResettingTarget()
    with PortHolder() as ports:
        server_metrics, client_metrics = ports.take(), ports.take()
        tunnel = Tunnel(server_args=("--metrics", f"127.0.0.1:{server_metrics}"))
        try:
            _client, [(_, local, _)] = tunnel.client(
                "-L", f"0:127.0.0.1:{target.port}",
                extra=("--metrics", f"127.0.0.1:{client_metrics}", "--reconnect-max", "0.5"),
            )  # fmt: skip
            with socket.create_connection(("127.0.0.1", local), timeout=10) as conn:
                conn.sendall(b"x")
                with pytest.raises(ConnectionResetError):
                    while conn.recv(100):
                        pass
            mapping = f"-L 0:127.0.0.1:{target.port}"
            errors = "reactor_mux_stream_errors_total"
            assert wait_until(
                lambda: value(scrape(client_metrics), errors, reason="reset_by_peer") == 1
            )
            assert value(scrape(server_metrics), errors, reason="local_error") == 1
            assert value(scrape(client_metrics), "reactor_mux_streams_opened_total",
                         mapping=mapping) == 1  # fmt: skip
            assert value(scrape(client_metrics), "reactor_mux_reconnects_total") == 0
            tunnel.restart_server()
            assert wait_until(lambda: value(scrape(client_metrics),
                                            "reactor_mux_channels_opened_total") == 2)  # fmt: skip
            assert (value(scrape(client_metrics), "reactor_mux_reconnects_total") or 0) >= 1
            assert value(scrape(client_metrics), "reactor_mux_channels_up") == 1
        finally:
            tunnel.close()
            target.close()
