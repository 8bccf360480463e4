"""``--metrics HOST:PORT``: the Prometheus text format at ``/metrics``, served by
the reactor itself (no thread), so a scrape sees one consistent moment.

The text is written by ``prometheus_client`` (the field's library for the
exposition format) from a collector that reads the process's meter and its
live channels at scrape time; nothing is updated on the data path for it.
Names follow its conventions: ``reactor_mux_`` prefix, ``_total`` counters,
seconds and bytes.  The process's own CPU and memory come from its
``ProcessCollector`` (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, open file descriptors).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from reactor_mux import __version__
from reactor_mux.io.netutil import listen_sockets
from reactor_mux.io.reactor import Reactor
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.syntax import is_loopback
from reactor_mux.roles.server import Server
from reactor_mux.security.admission import Refusal
from reactor_mux.security.penalties import Offence
from reactor_mux.service.oneshot import OneShotServer
from reactor_mux.service.status import App, channels_of

log = logging.getLogger("reactor_mux")

MAX_METRICS_CONNECTIONS = 16
"""Scrapes served at once; more are closed."""
MAX_METRICS_REQUEST = 8192
"""Bytes of request line and headers; more is answered 431."""
METRICS_TIMEOUT = 10.0
"""Seconds a scrape may take, reading and writing included."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class AppCollector:
    """Reads ``app`` at each scrape (a prometheus_client custom collector)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app, meter = self.app, self.app.meter
        channels = channels_of(app)
        role = "server" if isinstance(app, Server) else "client"
        info = GaugeMetricFamily("reactor_mux_info", "Role and version of this process.",
                                 labels=["role", "version"])  # fmt: skip
        info.add_metric([role, __version__], 1)
        yield info
        yield GaugeMetricFamily("reactor_mux_channels_up", "Channels open (handshake done).",
                                value=sum(1 for channel in channels if channel.ready))  # fmt: skip
        yield CounterMetricFamily("reactor_mux_channels_opened", "Channels that completed "
                                  "the handshake.", value=meter.channels_opened)  # fmt: skip
        suspended = sum(1 for channel in channels if channel.suspended)
        yield GaugeMetricFamily("reactor_mux_channels_suspended", "Channels whose connection "
                                "broke, waiting for the client to resume them.",
                                value=suspended)  # fmt: skip
        yield CounterMetricFamily("reactor_mux_resumes", "Sessions resumed on a new "
                                  "connection.", value=meter.resumes)  # fmt: skip
        yield CounterMetricFamily("reactor_mux_reconnects", "Client: connection attempts "
                                  "after the first.", value=meter.reconnects)  # fmt: skip
        datagrams = CounterMetricFamily("reactor_mux_datagrams", "UDP forwards' datagrams: "
                                        "sent into the channel, received from it and handed "
                                        "on, and dropped (UDP's answer to a full queue).",
                                        labels=["outcome"])  # fmt: skip
        for outcome in ("sent", "received", "dropped"):
            datagrams.add_metric([outcome], getattr(meter.datagrams, outcome))
        yield datagrams

        open_streams: Counter[str] = Counter()
        sent, received = Counter(meter.bytes_sent), Counter(meter.bytes_received)
        inbound = outbound = 0
        refused = Counter(meter.refused)
        rtt = GaugeMetricFamily("reactor_mux_channel_rtt_seconds", "Last keepalive round "
                                "trip (PING to PONG) per channel.", labels=["peer"])  # fmt: skip
        for channel in channels:
            by_mapping, by_stream = channel.limit_refusals
            refused["mapping", "limit"] += by_mapping
            refused["stream", "limit"] += by_stream
            if channel.rtt is not None:
                rtt.add_metric([channel.peer], channel.rtt)
            for stream in channel.streams.values():
                open_streams[stream.mapping] += 1
                sent[stream.mapping] += stream.bytes_up
                received[stream.mapping] += stream.bytes_down
                inbound += stream.inbound_buffered
                outbound += channel.stream_report(stream)[2]
        yield rtt

        streams = GaugeMetricFamily("reactor_mux_streams_open", "Streams open, by mapping.",
                                    labels=["mapping"])  # fmt: skip
        for mapping in sorted(set(open_streams) | set(meter.streams_opened)):
            streams.add_metric([mapping], open_streams[mapping])  # 0 once its streams end
        yield streams
        opened = CounterMetricFamily("reactor_mux_streams_opened", "Streams opened, by mapping.",
                                     labels=["mapping"])  # fmt: skip
        for mapping, count in sorted(meter.streams_opened.items()):
            opened.add_metric([mapping], count)
        yield opened
        moved = CounterMetricFamily(
            "reactor_mux_stream_bytes",
            "Stream bytes by mapping: sent = read from local sockets into the channel, "
            "received = from the channel to local sockets.",
            labels=["mapping", "direction"],
        )
        for mapping in sorted(set(sent) | set(received)):
            moved.add_metric([mapping, "sent"], sent[mapping])
            moved.add_metric([mapping, "received"], received[mapping])
        yield moved
        errors = CounterMetricFamily("reactor_mux_stream_errors", "Streams that ended in a "
                                     "reset, by reason.", labels=["reason"])  # fmt: skip
        for reason, count in sorted(meter.stream_errors.items()):
            errors.add_metric([reason], count)
        yield errors
        refusals = CounterMetricFamily(
            "reactor_mux_refused",
            "Mappings and streams this side refused, by reason.",
            labels=["what", "reason"],
        )
        for (what, reason), count in sorted(refused.items()):
            refusals.add_metric([what, reason], count)
        yield refusals
        buffered = GaugeMetricFamily("reactor_mux_buffered_bytes", "Stream bytes held in "
                                     "memory: inbound waits for local sockets, outbound for "
                                     "the channel.", labels=["direction"])  # fmt: skip
        buffered.add_metric(["inbound"], inbound)
        buffered.add_metric(["outbound"], outbound)
        yield buffered
        if isinstance(app, Server):
            yield from _admission_metrics(app)


def _admission_metrics(server: Server) -> Iterator[Metric]:
    """What the server turned away before authentication, and why (docs/security.md)."""
    meter, admission = server.meter, server.gate.admission
    yield GaugeMetricFamily("reactor_mux_unauthenticated_connections", "Connections accepted "
                            "and not yet authenticated (--max-startups counts them).",
                            value=admission.startups)  # fmt: skip
    now = server.reactor.time()
    yield GaugeMetricFamily("reactor_mux_startup_protection_seconds", "How long after accept "
                            "an unauthenticated connection may be shielded from being dropped "
                            "to make room: a few times what recent handshakes took.",
                            value=admission.protection.seconds(now))  # fmt: skip
    refused = CounterMetricFamily("reactor_mux_connections_refused", "Connections turned away "
                                  "at accept, by reason.", labels=["reason"])  # fmt: skip
    for refusal in Refusal:
        refused.add_metric([refusal.value], meter.connections_refused[refusal.value])
    yield refused
    yield CounterMetricFamily("reactor_mux_startups_evicted", "Unauthenticated connections "
                              "closed to make room for a source that had none.",
                              value=meter.startups_evicted)  # fmt: skip
    penalties = CounterMetricFamily("reactor_mux_penalties", "Connections that ended before "
                                    "authenticating in a way their source is penalised for, "
                                    "by offence.", labels=["offence"])  # fmt: skip
    for offence in Offence:
        penalties.add_metric([offence.value], meter.penalties[offence.value])
    yield penalties
    yield GaugeMetricFamily("reactor_mux_sources_turned_away", "Source blocks serving a "
                            "penalty now.", value=admission.penalties.enforced(now))  # fmt: skip


def exposition(app: App) -> str:
    """``app``'s metrics as exposition text (a server worker's, for its supervisor)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AppCollector(app))
    ProcessCollector(registry=registry)
    return generate_latest(registry).decode()


class WorkersCollector:
    """A supervisor's scrape: every worker's metrics, each sample labelled with its
    worker, so that ``sum without (worker)`` is the server's."""

    def __init__(self, scrape: Callable[[], list[tuple[int, str]]]) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker, text in self.scrape():
            for family in text_string_to_metric_families(text):
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation,
                                                        family.type)  # fmt: skip
                for sample in family.samples:
                    labels = {**sample.labels, "worker": str(worker)}
                    into.add_sample(sample.name, labels, sample.value)
        yield from merged.values()


class MetricsServer:
    """The HTTP endpoint: ``GET /metrics``; anything else gets a plain error."""

    def __init__(self, reactor: Reactor, host: str, port: int, app: App | None,
                 collector: WorkersCollector | None = None) -> None:  # fmt: skip
        self.registry = CollectorRegistry(auto_describe=False)
        if collector is not None:
            self.registry.register(collector)
        if app is not None:
            self.registry.register(AppCollector(app))
            ProcessCollector(registry=self.registry)
        self._server = OneShotServer(
            reactor, listen_sockets(host, port), name="metrics endpoint",
            terminator=b"\r\n\r\n", max_request=MAX_METRICS_REQUEST,
            max_connections=MAX_METRICS_CONNECTIONS, timeout=METRICS_TIMEOUT,
            handle=self.respond, too_large=_response(431, "request headers too large\n"),
        )  # fmt: skip
        self.address = " and ".join(listener.address for listener in self._server.listeners)
        log.info("metrics at http://%s/metrics", self._server.listeners[0].address,
                 extra=log_event("metrics_listening", address=self.address))  # fmt: skip
        if not is_loopback(self._server.listeners[0].host):
            log.warning("--metrics on %s is reachable from other hosts: the metrics show "
                        "its peers and how the tunnel is used", self.address,
                        extra=log_event("metrics_exposed", address=self.address))  # fmt: skip

    def respond(self, request: bytes) -> bytes:
        words = request.split(b"\r\n", 1)[0].split(b" ")
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            return _response(400, "bad request\n")
        method, target = words[0], words[1].split(b"?", 1)[0]
        if target != b"/metrics":
            return _response(404, "not found: try /metrics\n")
        if method not in (b"GET", b"HEAD"):
            return _response(405, "only GET\n")
        body = generate_latest(self.registry)
        return _response(200, body if method == b"GET" else b"", CONTENT_TYPE, len(body))

    def close(self) -> None:
        self._server.close()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}  # fmt: skip


def _response(status: int, body: str | bytes, content_type: str = "text/plain; charset=utf-8",
              length: int | None = None) -> bytes:  # fmt: skip
    data = body.encode() if isinstance(body, str) else body
    head = (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(data) if length is None else length}\r\n"
            "Connection: close\r\n\r\n")  # fmt: skip
    return head.encode() + data
