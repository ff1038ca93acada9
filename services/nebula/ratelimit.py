"""Token buckets for join attempts: per source address, and one for all sources together.

A joiner needs one or two requests; a script guessing tokens needs millions. A bucket of
a few requests per address that refills slowly makes guessing hopeless (tokens carry 128
random bits anyway) and keeps a flood from costing the lighthouse a `nebula-cert` run per
request; the shared bucket bounds the cost of a flood from many addresses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_TRACKED = 4096  # addresses remembered; the fullest buckets are forgotten first


@dataclass
class Bucket:
    capacity: float
    refill_per_s: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill_per_s)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.refill_per_s


@dataclass
class JoinRateLimiter:
    per_source: float = 10.0  # burst per address
    per_source_refill_s: float = 0.2  # one more attempt every 5 s
    overall: float = 60.0
    overall_refill_s: float = 2.0
    _sources: dict[str, Bucket] = field(default_factory=dict)
    _overall: Bucket | None = None

    def check(self, source: str, now: float) -> float:
        """0.0 to admit the attempt; else how many seconds the source should wait."""
        if self._overall is None:
            self._overall = Bucket(self.overall, self.overall_refill_s, self.overall, now)
        bucket = self._sources.get(source)
        if bucket is None:
            self._forget_if_full()
            bucket = self._sources[source] = Bucket(self.per_source, self.per_source_refill_s,
                                                    self.per_source, now)
        wait = bucket.take(now)
        return wait or self._overall.take(now)

    def _forget_if_full(self) -> None:
        if len(self._sources) >= MAX_TRACKED:
            fullest = sorted(self._sources, key=lambda s: -self._sources[s].tokens)[: MAX_TRACKED // 4]
            for source in fullest:
                del self._sources[source]
