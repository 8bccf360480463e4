"""Reconnect delays: doubling from the minimum, capped, jittered into [d/2, d]."""

from __future__ import annotations

import random

import pytest

from reactor_mux.roles.backoff import Backoff

pytestmark = pytest.mark.codec_independent


def test_delays_double_up_to_the_cap_with_jitter():
    backoff = Backoff(0.5, 8.0, random.Random(1))
    ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling


def test_jitter_spreads_clients_cut_off_together():
    delays = {round(Backoff(1, 1, random.Random(seed)).next_delay(), 6) for seed in range(50)}
    assert len(delays) > 40 and min(delays) >= 0.5 and max(delays) <= 1.0


def test_reset_starts_from_the_minimum_again():
    backoff = Backoff(1, 100, random.Random(2))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_a_long_outage_does_not_overflow():
    backoff = Backoff(0.5, 30, random.Random(3))
    for _ in range(10_000):
        assert backoff.next_delay() <= 30


@pytest.mark.parametrize(("low", "high"), [(0, 1), (2, 1), (-1, 5)])
def test_bad_ranges_are_refused(low, high):
    with pytest.raises(ValueError):
        Backoff(low, high)
