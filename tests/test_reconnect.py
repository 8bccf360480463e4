"""The client's reconnect policy (reconnect.py) on its own, with a fake clock and
no jitter: which delay follows which failure, when the backoff starts afresh,
and how loudly each failure is told (level, JSON event, attempts counted)."""

from __future__ import annotations

import logging
import random

import pytest
from fakeclock import FakeClock

from reactor_mux.protocol.errorcodes import ErrorCode
from reactor_mux.roles.reconnect import (
    HEALTHY_CHANNEL_SECONDS,
    OUTAGE_REPORT_INTERVAL,
    RESUME_RECONNECT_MAX,
    RESUME_RECONNECT_MIN,
    NextAttempt,
    ReconnectPolicy,
)

pytestmark = pytest.mark.codec_independent

MIN, MAX = 0.5, 30.0


class NoJitter(random.Random):
    """Every delay is its ceiling, so the test can name it."""

    def uniform(self, a: float, b: float) -> float:
        return b


def policy(clock: FakeClock) -> ReconnectPolicy:
    return ReconnectPolicy(clock.time, MIN, MAX, NoJitter())


def delays(policy: ReconnectPolicy, count: int, **options: bool) -> list[float]:
    return [policy.next_attempt("down", **options).delay for _ in range(count)]


def test_failures_back_off_doubling_to_the_maximum():
    assert delays(policy(FakeClock()), 8) == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_the_first_failure_of_an_outage_is_an_error_then_warnings_until_the_interval():
    clock = FakeClock()
    retries = policy(clock)
    first = retries.next_attempt("cannot connect")
    assert first == NextAttempt(0.5, logging.ERROR, "channel_down", "cannot connect")
    clock.advance(OUTAGE_REPORT_INTERVAL - 1)
    second = retries.next_attempt("cannot connect")
    assert (second.level, second.reason) == (logging.WARNING, "cannot connect")
    clock.advance(1)
    third = retries.next_attempt("cannot connect")
    assert (third.level, third.event) == (logging.ERROR, "channel_down")
    assert third.reason == "cannot connect (3 attempts so far)", "a loud line counts them"


def test_a_channel_that_comes_up_ends_the_outage():
    clock = FakeClock()
    retries = policy(clock)
    for _ in range(3):
        retries.next_attempt("cannot connect")
    retries.channel_up()
    again = retries.next_attempt("lost")
    assert (again.level, again.reason) == (logging.ERROR, "lost"), "a new outage, told at once"
    assert again.delay == 4.0, "but a channel that did not stay up keeps the backoff"


def test_only_a_healthy_channel_resets_the_backoff():
    clock = FakeClock()
    retries = policy(clock)
    assert delays(retries, 3) == [0.5, 1.0, 2.0]
    retries.channel_up()
    clock.advance(HEALTHY_CHANNEL_SECONDS - 1)
    retries.channel_closed(ErrorCode.PEER_CLOSED)
    assert delays(retries, 1) == [4.0]
    retries.channel_up()
    clock.advance(HEALTHY_CHANNEL_SECONDS)
    retries.channel_closed(ErrorCode.PEER_CLOSED)
    assert delays(retries, 1) == [0.5]
    retries.channel_closed(ErrorCode.PEER_CLOSED)
    assert delays(retries, 1) == [1.0], "a channel that never came up is not healthy"


def test_a_resumed_channel_counts_as_up_from_the_resume():
    clock = FakeClock()
    retries = policy(clock)
    delays(retries, 3)
    clock.advance(100)
    retries.channel_resumed()
    clock.advance(HEALTHY_CHANNEL_SECONDS)
    retries.channel_closed(None)
    assert delays(retries, 1) == [0.5]


def test_an_authentication_failure_waits_the_longest_at_once():
    clock = FakeClock()
    retries = policy(clock)
    retries.channel_up()
    clock.advance(HEALTHY_CHANNEL_SECONDS)
    retries.channel_closed(ErrorCode.AUTH_FAILED)
    assert delays(retries, 2) == [MAX, MAX], "even after a healthy channel"


def test_while_streams_wait_for_a_resume_it_retries_at_the_resume_pace_with_warnings():
    clock = FakeClock()
    retries = policy(clock)
    delays(retries, 5)  # the ordinary backoff is long by now
    retries.channel_suspended()
    attempts = [retries.next_attempt("refused", resuming=True) for _ in range(6)]
    assert [attempt.delay for attempt in attempts] == [
        RESUME_RECONNECT_MIN, 0.4, 0.8, 1.6, RESUME_RECONNECT_MAX, RESUME_RECONNECT_MAX
    ]  # fmt: skip
    assert {(attempt.level, attempt.event, attempt.reason) for attempt in attempts} == {
        (logging.WARNING, "resume_retry", "refused")
    }
    retries.channel_suspended()
    assert retries.next_attempt("refused", resuming=True).delay == RESUME_RECONNECT_MIN
    assert delays(retries, 1) == [16.0], "the ordinary backoff went on where it was"


def test_a_busy_server_is_asked_again_soon_with_a_warning():
    retries = policy(FakeClock())
    busy = [retries.next_attempt("server is busy", soon=True) for _ in range(2)]
    assert busy == [
        NextAttempt(0.2, logging.WARNING, "server_busy", "server is busy"),
        NextAttempt(0.4, logging.WARNING, "server_busy", "server is busy"),
    ]
    retries.channel_up()
    assert retries.next_attempt("server is busy", soon=True).delay == 0.2


def test_an_orderly_end_is_told_at_info_and_may_be_retried_at_once():
    retries = policy(FakeClock())
    older = retries.next_attempt("unsupported", orderly=True, immediate=True)
    assert older == NextAttempt(0.0, logging.INFO, "channel_down", "unsupported")
    shut_down = retries.next_attempt("server shut down", orderly=True)
    assert (shut_down.delay, shut_down.level) == (0.5, logging.INFO)
    failed = retries.next_attempt("cannot connect")
    assert failed.level == logging.ERROR, "orderly ends were not loud, so this one is"
    assert failed.reason == "cannot connect (3 attempts so far)"
