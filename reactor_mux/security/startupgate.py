"""The server's front door: a connection from accept until it authenticates.

``admission`` decides (which startups to take on, which sources serve a
penalty) and knows no sockets; here the decisions meet the sockets, the log
and the meter.  A refused connection is told ``busy`` (``busyreply``) or, from
a penalised source, closed without a word; a startup that ends is charged to
its source by how it ended (``ErrorCode`` to ``Offence``, and a peer's own
``ERROR`` counts as leaving without authenticating, whatever code it claims);
everything goes to the turned-away log (``turnedaway``) under labels from the
fixed tables below, never a peer's words.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable

from reactor_mux.io import fdlimit
from reactor_mux.io.netutil import abort_socket
from reactor_mux.io.reactor import Reactor
from reactor_mux.io.routereader import RouteReader
from reactor_mux.io.tls import TlsTransport
from reactor_mux.logformat import event as log_event
from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.protocol.session import error_frame
from reactor_mux.security.admission import (
    Admission,
    AdmissionConfig,
    Admitted,
    Refusal,
    Refused,
    SharedStartups,
    Startup,
)
from reactor_mux.security.busyreply import MAX_TLS_REPLIES, BusyReplies
from reactor_mux.security.penalties import Offence
from reactor_mux.security.turnedaway import TurnedAwayLog
from reactor_mux.tunnel.channel import Channel
from reactor_mux.tunnel.meter import Meter

log = logging.getLogger("reactor_mux")

FAILURE_LINES = 3
"""Connections from one source block that failed their handshake, logged in full
per summary interval; the rest are counted."""

OFFENCES = {
    ErrorCode.AUTH_FAILED: Offence.AUTH_FAILED,
    ErrorCode.HANDSHAKE_TIMEOUT: Offence.GRACE_EXCEEDED,
    ErrorCode.NO_ANSWER: Offence.GRACE_EXCEEDED,
    ErrorCode.PROTOCOL: Offence.PROTOCOL,
    ErrorCode.NOT_A_PEER: Offence.PROTOCOL,
    ErrorCode.TLS: Offence.TLS,
    ErrorCode.PEER_CLOSED: Offence.NO_AUTH,
}
"""What a connection that ended before authenticating is penalised for, by how it
ended; an end not listed (a local decision: shutting down, an unknown session to
resume) costs nothing."""

LABELS = {
    ErrorCode.AUTH_FAILED: "authentication failed",
    ErrorCode.HANDSHAKE_TIMEOUT: "handshake timed out",
    ErrorCode.NO_ANSWER: "handshake timed out",
    ErrorCode.PROTOCOL: "protocol error",
    ErrorCode.NOT_A_PEER: "protocol error",
    ErrorCode.TLS: "TLS handshake failed",
    ErrorCode.PEER_CLOSED: "closed before authenticating",
    ErrorCode.RESUME_REFUSED: "resume refused",
    ErrorCode.ELSEWHERE: "a resume of another host's session",
    ErrorCode.SHUTDOWN: "server shutting down",
    ErrorCode.WEB_REQUEST: "an HTTP request answered 404",
}
"""How the turned-away summaries name each way a startup ended."""
EVICTED_REASON = ("dropped before authenticating to make room for another source "
                  "(too many unauthenticated connections)")  # fmt: skip
CLOSED_BY_PEER = "the peer ended it with ERROR"
HEALTH_CHECK = "a load balancer's health check: PROXY LOCAL"
BAD_PROXY_HEADER = "no valid PROXY protocol header"
PROXY_BACKLOG = "too many connections still sending their PROXY header"
OTHER_END = "ended before authenticating"
EVICTED = "dropped to make room for another source"
REFUSED = {
    Refusal.PENALTY: "penalised",
    Refusal.PER_SOURCE: "too many unauthenticated connections from the source",
    Refusal.STARTUPS: "too many unauthenticated connections",
}


class StartupGate:
    """Admission, the busy replies and the turned-away log of one server."""

    name = "startup gate"

    def __init__(
        self,
        reactor: Reactor,
        config: AdmissionConfig,
        meter: Meter,
        *,
        keepalive_interval: float,
        shared: SharedStartups | None = None,
    ) -> None:
        """``shared``: the startups of a server's other workers, which count too."""
        self._reactor = reactor
        self.admission = Admission(config, shared=shared)
        self._meter = meter
        self._log = TurnedAwayLog(reactor)
        self._busy = BusyReplies(reactor, keepalive_interval)
        self.on_penalty: Callable[[str, Offence], None] | None = None
        """Told of every penalty given here (a server worker tells its siblings)."""

    @property
    def followed_blocks(self) -> int:
        """Source blocks the turned-away log follows now (for tests and status)."""
        return len(self._log)

    def admit(self, sock: socket.socket, address: str, where: str,
              tls: ssl.SSLContext | None, *,
              health_check: bool = False) -> Startup | None:  # fmt: skip
        """Take a new connection on (its startup; the caller makes its channel the
        ``owner``), or turn it away (None: the socket is dealt with)."""
        decision = self.admission.admit(address, self._reactor.time(), None,
                                        health_check=health_check)  # fmt: skip
        if isinstance(decision, Refused):
            self._refuse(sock, where, decision, tls)
            return None
        assert isinstance(decision, Admitted)
        if decision.evicted is not None:
            self._evict(decision.evicted)
        return decision.startup

    def refuse_unread(self, sock: socket.socket, balancer: str, where: str) -> None:
        """A balancer's connection beyond the bound on those still sending their PROXY
        header (the startups' FULL): reset, since nothing names its client yet."""
        self._meter.connections_refused[Refusal.STARTUPS.value] += 1
        self._log.note(balancer, PROXY_BACKLOG, logging.WARNING, "turned away a connection from "
                       "%s: %s", where, PROXY_BACKLOG,
                       extra=log_event("connection_refused", peer=where,
                                       reason=PROXY_BACKLOG))  # fmt: skip
        abort_socket(sock)

    def bad_proxy_header(self, balancer: str, where: str, why: str) -> None:
        """A balancer's connection sent no valid PROXY header: closed, logged, never
        penalised (the balancer's address is every client's)."""
        self._log.note(balancer, BAD_PROXY_HEADER, logging.WARNING, "%s: closed: %s", where,
                       why, burst=FAILURE_LINES,
                       extra=log_event("channel_down", peer=where, reason=why))  # fmt: skip

    def _refuse(
        self, sock: socket.socket, where: str, refused: Refused, tls: ssl.SSLContext | None
    ) -> None:
        """Silently for a penalised source, else with ``ERROR busy:`` (inside TLS where
        the server speaks it, within the busy replies' bounds)."""
        refusal = refused.refusal
        self._meter.connections_refused[refusal.value] += 1
        self._log.note(
            refused.block, REFUSED[refusal], logging.WARNING,
            "turned away a connection from %s: %s; more from %s are summarised every %g s",
            where, refusal.reason, refused.block, self._log.interval,
            extra=log_event("connection_refused", peer=where, reason=refusal.reason),
        )  # fmt: skip
        if refusal is Refusal.PENALTY:
            abort_socket(sock)
            return
        self._busy.tell(sock, refused.block, error_frame(ErrorCode.BUSY, refusal.reason), tls)

    def _evict(self, startup: Startup) -> None:
        """Close a startup to make room for a connection from a source with none: it is
        told ``busy`` (its client retries soon) and charged as leaving unauthenticated.
        One still in its TLS handshake cannot be told by its channel: the busy replies
        finish the handshake and tell it (within their bounds)."""
        self._meter.startups_evicted += 1
        owner = startup.owner
        if isinstance(owner, Channel):
            transport = owner.transport
            if isinstance(transport, TlsTransport) and not transport.established:
                owner.surrender_transport()
                self._busy.finish_tls(transport, startup.block,
                                      error_frame(ErrorCode.BUSY, EVICTED_REASON))  # fmt: skip
            owner.close(EVICTED_REASON, code=ErrorCode.BUSY, error=False)
        elif isinstance(owner, RouteReader):  # still naming its route (server --workers)
            owner.close()

    def handed_over(self, startup: Startup) -> None:
        """The connection went to the worker holding its session, which admits it."""
        self.admission.finish(startup)

    def authenticated(self, startup: Startup) -> None:
        """The connection proved itself (or said HELLO, without authentication)."""
        self.admission.authenticated(startup, self._reactor.time())

    def ended(self, startup: Startup, channel_name: str, peer: str, reason: str,
              code: ErrorCode | None, by_peer: bool, error: bool) -> None:  # fmt: skip
        """A connection ended before authenticating: penalise its source for how, and
        say so in the turned-away log (a stranger decides how many there are)."""
        self.admission.finish(startup)
        if startup.unpenalised:  # a balancer's health check, every few seconds
            log.debug("%s: closed: %s (%s)", channel_name, reason, HEALTH_CHECK,
                      extra=log_event("channel_down", channel=channel_name, peer=peer,
                                      reason=reason))  # fmt: skip
            return
        offence: Offence | None
        if startup.evicted:
            offence = Offence.NO_AUTH
            label = EVICTED
        elif by_peer:  # its own ERROR: whatever code it claims, it left unauthenticated
            offence, label = Offence.NO_AUTH, CLOSED_BY_PEER
        else:
            offence = OFFENCES.get(code) if code is not None else None
            label = LABELS.get(code, OTHER_END) if code is not None else OTHER_END
        if offence is not None:
            self._meter.penalties[offence.value] += 1
            now = self._reactor.time()
            until = self.admission.offended(startup.address, offence, now)
            if self.on_penalty is not None:
                self.on_penalty(startup.address, offence)
            if until is not None:
                self._log.announce(
                    logging.WARNING, "%s: %s is turned away for %.0f s: %s (it failed or "
                    "misbehaved before authenticating; --per-source-penalties)", channel_name,
                    startup.block, until - now, label,
                    **log_event("source_penalised", peer=startup.block, reason=offence.value,
                                delay=round(until - now, 3)),
                )  # fmt: skip
        level = logging.WARNING if error else logging.INFO
        self._log.note(
            startup.block, label, level, "%s: closed: %s", channel_name, reason,
            burst=FAILURE_LINES,
            extra=log_event("channel_down", channel=channel_name, peer=peer, reason=reason),
        )  # fmt: skip

    def check_descriptors(self, listeners: int, max_channels: int) -> None:
        """Say so in one line if the descriptor limit (raised to the hard one at start)
        caps what the server is configured for: the startups (strangers would use
        them all before a client gets one), or ``--max-channels`` (each channel takes
        a descriptor at least; docs/limits.md has the whole count)."""
        soft = fdlimit.soft_limit()
        if soft is None:
            return
        reserved = self.admission.config.max_startups.full + MAX_TLS_REPLIES + listeners + 32
        if soft < reserved:
            log.warning("this process may open %d descriptors (ulimit -n), fewer than the %d "
                        "that --max-startups (FULL %d) and a few clients need: strangers could "
                        "use them all; raise the limit or lower FULL",
                        soft, reserved, self.admission.config.max_startups.full)  # fmt: skip
        elif soft - reserved < max_channels:
            log.warning("the descriptor limit (%d, its hard limit) caps the channels at %d, "
                        "fewer than --max-channels %d (a channel takes one descriptor, and "
                        "one per -R listener and open stream): raise the hard limit "
                        "(ulimit -Hn, LimitNOFILE=) or lower --max-channels", soft,
                        soft - reserved, max_channels,
                        extra=log_event("descriptors_short",
                                        reason=f"{soft - reserved} < {max_channels}"))  # fmt: skip

    def reconfigure(self, config: AdmissionConfig) -> None:
        self.admission.reconfigure(config)

    def close(self) -> None:
        self._log.close()
        self._busy.close()
