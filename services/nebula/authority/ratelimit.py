"""Join attempts: a token bucket per source address, and one for all sources together
(both services/common/ratelimit's).

A joiner needs one or two requests; a script guessing tokens needs millions. A bucket of
a few requests per address that refills slowly makes guessing hopeless (tokens carry 128
random bits anyway) and keeps a flood from costing the lighthouse a `nebula-cert` run per
request; the shared bucket bounds the cost of a flood from many addresses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from services.common.ratelimit import RateLimiter

EVERYONE = "*"  # the shared bucket's one source


class JoinRateLimiter:
    def __init__(self, per_source: float = 10.0, per_source_refill_s: float = 0.2, overall: float = 60.0,
                 overall_refill_s: float = 2.0, clock: Callable[[], float] = time.monotonic):
        """Bursts of `per_source` (`overall`), then `per_source_refill_s` (`overall_refill_s`) a second."""
        self.sources = RateLimiter(per_source_refill_s, per_source, clock=clock)
        self.overall = RateLimiter(overall_refill_s, overall, max_sources=1, clock=clock)

    def check(self, source: str) -> float:
        """0.0 to admit the attempt; else how many seconds the source should wait."""
        return self.sources.wait(source) or self.overall.wait(EVERYONE)
