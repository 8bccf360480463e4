"""When the client connects to the server again, and how loudly it says so.

After a failure the client waits for its ``Backoff`` (``--reconnect-min`` up to
``--reconnect-max``), except while streams wait for a resume or the server
said it was only busy: then it tries at the resume pace, which stays short
next to the resume window.  A channel that stayed up HEALTHY_CHANNEL_SECONDS
starts the next outage's backoff afresh; an authentication failure waits the
longest delay at once, since retrying soon cannot help.

Some endings say that the server cannot be used as the client is configured
(``retry_cannot_help``): without ``--persist`` the client exits at once (255,
as ssh does) instead of retrying; with it, it keeps retrying, as a service
must through a server's misconfiguration or a key rotation.

A failure is logged as an ERROR once per OUTAGE_REPORT_INTERVAL of an outage
and as a WARNING in between, so ``-q`` still shows that the server stays out
of reach without a line per attempt; an orderly end (the server shut down or
is older than resume) is only INFO, and a retry within the resume window, or
at a busy server, is a WARNING.

The policy decides and the client acts: it keeps the timer and logs the line
the policy describes.  The policy knows only a clock, so it is tested with
plain numbers.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles.backoff import Backoff

UNUSABLE_SERVER = frozenset((ErrorCode.AUTH_FAILED, ErrorCode.REVOKED, ErrorCode.NOT_A_PEER))
"""Endings that say, whenever they come, that the server refuses this client as it
is configured (a secret, a name, a certificate or pin) or is not a reactor-mux server."""

UNUSABLE_IN_HANDSHAKE = frozenset((ErrorCode.TLS, ErrorCode.PROTOCOL))
"""Endings that say the same before the server's HELLO (TLS against plaintext or the
reverse, a protocol version it does not speak); after it they are a connection that
broke, which a retry may fix."""


def retry_cannot_help(code: ErrorCode | None, heard_hello: bool) -> bool:
    """A channel that ended with ``code`` shows the server unusable as configured."""
    return code in UNUSABLE_SERVER or (code in UNUSABLE_IN_HANDSHAKE and not heard_hello)


HEALTHY_CHANNEL_SECONDS = 10.0
"""A channel that lived this long resets the backoff: the next outage starts afresh."""

RESUME_RECONNECT_MIN = 0.2
RESUME_RECONNECT_MAX = 2.0
"""While streams wait for a resume, reconnect at once, then every 0.2 s doubling
to 2 s: the resume window (30 s by default) is short next to the usual backoff."""

OUTAGE_REPORT_INTERVAL = 60.0
"""While the server stays out of reach, one failure per this many seconds is logged
as an ERROR (the others as WARNINGs), so ``-q`` still shows that it is failing."""


@dataclass(frozen=True)
class NextAttempt:
    """When to connect again, and the log line that says so."""

    delay: float
    level: int
    """The logging level of the line."""
    event: str
    """Its JSON ``event`` key."""
    reason: str
    """Why, as the line gives it (with the attempts so far when an outage is reported)."""


class ReconnectPolicy:
    """The client's reconnect delays, and how loudly each failure is told."""

    def __init__(
        self,
        time: Callable[[], float],
        reconnect_min: float,
        reconnect_max: float,
        rng: random.Random | None = None,
    ) -> None:
        self._time = time
        self._backoff = Backoff(reconnect_min, reconnect_max, rng)
        self._resume_backoff = Backoff(RESUME_RECONNECT_MIN, RESUME_RECONNECT_MAX, rng)
        self._failed_attempts = 0
        """Connects and channels that failed since a channel was last up."""
        self._loud_at: float | None = None
        """When a failure was last logged as an ERROR (OUTAGE_REPORT_INTERVAL)."""
        self._channel_up_since: float | None = None

    def channel_up(self) -> None:
        """A new channel finished its handshake: the outage, if any, is over."""
        self._resume_backoff.reset()
        self._channel_up_since = self._time()
        self._failed_attempts = 0
        self._loud_at = None

    def channel_resumed(self) -> None:
        """A suspended channel resumed: the outage, if any, is over."""
        self._failed_attempts = 0
        self._loud_at = None
        self._channel_up_since = self._time()

    def channel_suspended(self) -> None:
        """The channel broke and its streams wait: resume attempts start at once."""
        self._resume_backoff.reset()

    def channel_closed(self, code: ErrorCode | None) -> None:
        """The channel ended with ``code``: a healthy one resets the backoff, an
        authentication failure makes it wait the longest from now."""
        up_since, self._channel_up_since = self._channel_up_since, None
        if up_since is not None and self._time() - up_since >= HEALTHY_CHANNEL_SECONDS:
            self._backoff.reset()
        if code is ErrorCode.AUTH_FAILED:
            self._backoff.give_up_fast()

    def next_attempt(
        self,
        reason: str,
        *,
        resuming: bool = False,
        orderly: bool = False,
        immediate: bool = False,
        soon: bool = False,
    ) -> NextAttempt:
        """An attempt failed, or a channel ended, for ``reason``: when to try again
        and how to say so.  ``resuming``: streams wait for a resume; ``orderly``: not
        a failure (INFO); ``immediate``: no delay; ``soon``: the server was only busy,
        so at the resume pace."""
        if immediate:
            delay = 0.0
        elif resuming or soon:
            delay = self._resume_backoff.next_delay()  # the streams wait: no long pauses
        else:
            delay = self._backoff.next_delay()
        now = self._time()
        self._failed_attempts += 1
        if orderly:
            level = logging.INFO
        elif resuming or soon:  # within the resume window, or a busy server: not a failure
            level = logging.WARNING
        elif self._loud_at is None or now - self._loud_at >= OUTAGE_REPORT_INTERVAL:
            level, self._loud_at = logging.ERROR, now
            if self._failed_attempts > 1:
                reason = f"{reason} ({self._failed_attempts} attempts so far)"
        else:
            level = logging.WARNING
        event = "resume_retry" if resuming else "server_busy" if soon else "channel_down"
        return NextAttempt(delay, level, event, reason)
