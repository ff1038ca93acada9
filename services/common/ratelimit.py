"""A token bucket per source (a host, a client address): `burst` requests at once, then
`rate_per_s`; the least recently seen sources are forgotten past `max_sources`, as a source
may be whatever a datagram or a header claims. Pure, with an injected clock."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_SOURCES = 4096


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: float, max_sources: int = MAX_SOURCES,
                 clock: Callable[[], float] = time.monotonic):
        self.rate_per_s, self.burst, self.max_sources, self.clock = rate_per_s, burst, max_sources, clock
        self.refused = 0  # requests refused since start, for the owner's counter
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def wait(self, source: str) -> float:
        """0.0 when `source` may go on (a token is taken), else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.pop(source, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        self._buckets[source] = bucket  # most recent last
        if len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        if bucket.tokens < 1:
            self.refused += 1
            return (1 - bucket.tokens) / self.rate_per_s
        bucket.tokens -= 1
        return 0.0

    def allow(self, source: str) -> bool:
        return self.wait(source) == 0.0
