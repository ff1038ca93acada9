"""The token bucket per source (services/common/ratelimit.py) the dht and the router share."""

from __future__ import annotations

import pytest

from services.common.ratelimit import RateLimiter


def test_a_bucket_refills_at_its_rate_up_to_its_burst():
    clock = [0.0]
    limiter = RateLimiter(rate_per_s=10, burst=5, clock=lambda: clock[0])

    assert [limiter.allow("h") for _ in range(6)] == [True] * 5 + [False]
    clock[0] += 0.2  # two tokens
    assert [limiter.allow("h") for _ in range(3)] == [True, True, False]
    clock[0] += 100
    assert sum(limiter.allow("h") for _ in range(10)) == 5
    assert limiter.allow("other") is True
    assert limiter.refused == 1 + 1 + 5


def test_a_refusal_says_how_long_until_the_next_token():
    clock = [0.0]
    limiter = RateLimiter(rate_per_s=2, burst=1, clock=lambda: clock[0])

    assert limiter.wait("h") == 0.0
    assert limiter.wait("h") == pytest.approx(0.5)
    clock[0] += 0.4
    assert limiter.wait("h") == pytest.approx(0.1)


def test_the_table_of_sources_is_bounded():
    limiter = RateLimiter(rate_per_s=1, burst=1, max_sources=3, clock=lambda: 0.0)

    for host in ("a", "b", "c", "d"):
        assert limiter.allow(host)

    assert limiter.allow("a") is True  # forgotten: a new bucket
    assert limiter.allow("d") is False
