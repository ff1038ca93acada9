"""Join attempts are rate-limited per source and overall (pure, on a clock the test moves)."""

from __future__ import annotations

from services.nebula.authority.ratelimit import JoinRateLimiter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_from_one_source_is_refused_then_trickles_in():
    clock = Clock()
    limiter = JoinRateLimiter(per_source=3, per_source_refill_s=0.5, clock=clock)
    results = [limiter.check("10.0.0.1") for _ in range(5)]

    assert results[:3] == [0.0, 0.0, 0.0] and all(w > 0 for w in results[3:])
    clock.now = 2.0
    assert limiter.check("10.0.0.1") == 0.0  # one more after 1/refill seconds


def test_other_sources_are_not_punished():
    limiter = JoinRateLimiter(per_source=1, clock=Clock())
    limiter.check("10.0.0.1")

    assert limiter.check("10.0.0.1") > 0
    assert limiter.check("10.0.0.2") == 0.0


def test_many_sources_together_hit_the_overall_limit():
    limiter = JoinRateLimiter(per_source=5, overall=10, overall_refill_s=1, clock=Clock())
    results = [limiter.check(f"10.0.{i}.1") for i in range(12)]

    assert results[:10] == [0.0] * 10 and results[10] > 0
