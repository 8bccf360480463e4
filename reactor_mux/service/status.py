"""What a running process is doing, as plain data, for ``reactor-mux status``
(``/metrics`` walks the same channels, through ``channels_of``).

Built on request from the live objects (channels, streams, listeners), never
kept up to date on the data path.  Times are seconds; ``age`` counts from
when a channel or stream was opened.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from reactor_mux import __version__
from reactor_mux.io.listener import ListenerSet
from reactor_mux.protocol.syntax import format_host_port
from reactor_mux.roles.client import Client
from reactor_mux.roles.forwardtable import ForwardState
from reactor_mux.roles.server import Server
from reactor_mux.tunnel.channel import Channel
from reactor_mux.tunnel.localstream import LocalStream
from reactor_mux.tunnel.udp import DatagramCounts, UdpListener

App = Server | Client


def channels_of(app: App) -> list[Channel]:
    if isinstance(app, Server):
        return list(app.clients)
    return [app.channel] if app.channel is not None else []


def snapshot(app: App) -> dict[str, Any]:
    """Every channel, mapping and open stream of ``app``; for a server, connections still
    in their handshake are counted, not listed (strangers decide how many there are)."""
    now = app.reactor.time()
    channels = channels_of(app)
    report: dict[str, Any] = {
        "role": "server" if isinstance(app, Server) else "client",
        "version": __version__,
        "pid": os.getpid(),
        "uptime": round(now - app.started_at, 3),
        "listening": _listening(app),
        "forwards": _forwards(app) if isinstance(app, Client) else [],
    }
    if isinstance(app, Server):
        admission = app.gate.admission
        channels = [channel for channel in channels if not app.is_startup(channel)]
        report["admission"] = {
            "unauthenticated": admission.startups,
            "sources_turned_away": admission.penalties.enforced(now),
        }
    report["channels"] = [_channel(app, channel, now) for channel in channels]
    return report


def _listening(app: App) -> list[dict[str, Any]]:
    if isinstance(app, Server):
        return [address for listeners in app.listeners for address in _addresses(listeners)]
    return []


def _bound(state: ForwardState | None) -> dict[str, Any] | None:
    """Where the server listens for an ``-R``, as its BIND OK said."""
    if state is None or state.bound is None:
        return None
    if isinstance(state.bound, str):
        return {"path": state.bound}
    return {"host": state.bound[0], "port": state.bound[1]}


def _addresses(listeners: ListenerSet) -> list[dict[str, Any]]:
    """Each socket's address as data (``{"host": "::1", "port": 8080}``, or
    ``{"path": "/run/x.sock"}`` for a Unix socket), for programs: the display form
    joins them with "and"."""
    if listeners.path is not None:
        return [{"path": listeners.path}]
    return [{"host": one.host, "port": one.port} for one in listeners.listeners]


def _forwards(client: Client) -> list[dict[str, Any]]:
    forwards = []
    table = client.forward_table
    for mapping, spec in table.mappings.items():
        listener = client.local_listeners.get(mapping)
        udp = client.udp_ends.get(mapping)
        listening = _addresses(listener) if listener is not None else []
        if isinstance(udp, UdpListener):
            listening = [{"host": sock.getsockname()[0], "port": sock.getsockname()[1]}
                         for sock in udp.sockets]  # fmt: skip
        forward = {
            "mapping": mapping,
            "forward": spec.flag,
            "listening": listening,
            "bound": _bound(table.state.get(mapping)),
            "state": str(table.state.get(mapping, "waiting for a channel")),
        }
        if spec.udp:
            counts = udp.counts if udp is not None else DatagramCounts()
            forward["datagrams"] = {"sent": counts.sent, "received": counts.received,
                                    "dropped": counts.dropped,
                                    "associations": udp.associations if udp else 0}  # fmt: skip
        forwards.append(forward)
    return forwards


def _channel(app: App, channel: Channel, now: float) -> dict[str, Any]:
    report: dict[str, Any] = {
        "name": channel.name,
        "peer": channel.peer,
        "state": "suspended" if channel.suspended else channel.state.value,
        "suspended_for": None
        if channel.suspended_at is None
        else round(now - channel.suspended_at, 3),
        "resume_left": None
        if channel.suspended_at is None
        else round(max(0.0, channel.suspended_at + channel.settings.resume_timeout - now), 3),
        "age": round(now - channel.opened_at, 3),
        "rtt": None if channel.rtt is None else round(channel.rtt, 6),
    }
    if isinstance(app, Server):
        state = app.clients.get(channel)
        report["client"] = state.client_name if state is not None else None
        report["mappings"] = _server_mappings(app, channel)
    report["streams"] = [_stream(channel, stream, now) for stream in channel.streams.values()]
    return report


def _server_mappings(server: Server, channel: Channel) -> list[str]:
    state = server.clients.get(channel)
    if state is None:
        return []
    numbers = sorted({*state.targets, *state.dynamic, *state.binds, *state.udp})
    return [server.mapping_label(channel, number) for number in numbers]


def _stream(channel: Channel, stream: LocalStream, now: float) -> dict[str, Any]:
    in_flight, window, waiting = channel.stream_report(stream)
    return {
        "id": stream.id,
        "mapping": stream.mapping,
        "peer": _peer(stream.sock),
        "age": round(now - stream.opened_at, 3),
        "bytes_sent": stream.bytes_up,
        "bytes_received": stream.bytes_down,
        "in_flight": in_flight,
        "window": window,
        "buffered": waiting + stream.inbound_buffered,
    }


def _peer(sock: socket.socket) -> str | None:
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return None
    return format_host_port(host, port)


def render_text(report: dict[str, Any]) -> str:
    """``reactor-mux status`` without ``--json``: one line per thing, for people."""
    lines = [f"reactor-mux {report['role']} {report['version']}, pid {report['pid']}, "
             f"up {_duration(report['uptime'])}"]  # fmt: skip
    if report["listening"]:
        lines.append(f"listening on {_display(report['listening'])}")
    admission = report.get("admission")
    if admission is not None:
        lines.append(f"{admission['unauthenticated']} connection(s) still in their handshake, "
                     f"{admission['sources_turned_away']} source(s) turned away for a "
                     "penalty")  # fmt: skip
    for worker in report.get("workers", []):  # server --workers
        pid = worker["pid"] if worker["pid"] is not None else "-"
        what = f"error: {worker['error']}" if "error" in worker else (
            f"{worker['channels']} channel(s)")  # fmt: skip
        lines.append(f"worker {worker['worker']}: pid {pid}, {what}, "
                     f"restarted {worker['restarts']} time(s)")  # fmt: skip
    for forward in report["forwards"]:
        where = f", listening on {_display(forward['listening'])}" if forward["listening"] else ""
        lines.append(f"forward {forward['forward']}: {forward['state']}{where}")
    if not report["channels"]:
        lines.append("no channel")
    for channel in report["channels"]:
        rtt = "" if channel["rtt"] is None else f", rtt {channel['rtt'] * 1000:.1f} ms"
        who = f", client {channel['client']!r}" if channel.get("client") else ""
        state = channel["state"]
        if channel.get("suspended_for") is not None:
            left = _duration(channel["resume_left"])
            state += (
                f" for {_duration(channel['suspended_for'])} (waiting for a resume, {left} left)"
            )
        where = f"worker {channel['worker']}: " if "worker" in channel else ""
        lines.append(f"{where}{channel['name']}: {state}, peer {channel['peer']}, "
                     f"up {_duration(channel['age'])}{rtt}{who}, "
                     f"{len(channel['streams'])} stream(s)")  # fmt: skip
        for mapping in channel.get("mappings", []):
            lines.append(f"  mapping {mapping}")
        for stream in channel["streams"]:
            lines.append(
                f"  stream {stream['id']} {stream['mapping']} peer {stream['peer']}: "
                f"age {_duration(stream['age'])}, sent {stream['bytes_sent']} B, "
                f"received {stream['bytes_received']} B, in flight {stream['in_flight']}"
                f"/{stream['window']} B, buffered {stream['buffered']} B"
            )
    return "\n".join(lines) + "\n"


def _display(addresses: list[dict[str, Any]]) -> str:
    return " and ".join(
        one["path"] if "path" in one else format_host_port(one["host"], one["port"])
        for one in addresses
    )


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return (f"{days}d " if days else "") + f"{hours:02d}:{minutes:02d}:{secs:02d}"
