"""The failed-authentication table: penalties double, successes forget, size is bounded."""

from __future__ import annotations

import pytest

from reactor_mux.authlimit import FailureLimiter

pytestmark = pytest.mark.codec_independent


def test_penalties_double_up_to_the_maximum_and_expire():
    limiter = FailureLimiter(first=1, maximum=8)
    assert limiter.refuse("a", 0) == (False, False)
    assert [limiter.failed("a", 0) for _ in range(5)] == [1, 2, 4, 8, 8]
    assert limiter.refuse("a", 7.9) == (True, True)  # refused, and the first to say so
    assert limiter.refuse("a", 7.95) == (True, False)  # refused quietly
    assert limiter.refuse("a", 8.0) == (False, False)
    assert limiter.refuse("b", 1.0) == (False, False)


def test_a_success_forgets_the_address():
    limiter = FailureLimiter()
    limiter.failed("a", 0)
    limiter.succeeded("a")
    assert limiter.refuse("a", 0) == (False, False) and len(limiter) == 0


def test_the_table_is_bounded_and_drops_the_oldest():
    limiter = FailureLimiter(max_tracked=100)
    for i in range(1000):
        limiter.failed(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(limiter) == 100
    assert limiter.refuse("10.0.0.0", 0.5) == (False, False)  # forgotten
    assert limiter.refuse("10.0.3.231", 0.5)[0]  # the last one is still remembered
