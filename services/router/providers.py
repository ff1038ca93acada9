"""Remote providers: the lookup cache, smoothed latencies, and the order to try them in.

Pure: the clock and the random source are passed in. A cached entry is bounded by its
records' expiry (a provider disappears when its record does), refreshed before that,
and loses a provider as soon as a forward to it fails. Services nobody hosts are
remembered briefly so a burst of requests for them costs one lookup.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

NEGATIVE_TTL_S = 5.0
PENALTY_S = 30.0  # a provider whose forward failed is tried last for this long
REFRESH_MARGIN = 0.25  # refresh when a record has less than this share of its life left
LATENCY_ALPHA = 0.3  # weight of a new sample in the smoothed latency (an EWMA, as Envoy's)


@dataclass(frozen=True)
class Provider:
    worker_id: str
    url: str
    issued_at: float
    expires_at: float
    idempotent: bool = False
    gpu_model: str = ""
    model: str = ""

    def refresh_due(self, now: float) -> bool:
        return self.expires_at - now < (self.expires_at - self.issued_at) * REFRESH_MARGIN


@dataclass
class Entry:
    providers: list[Provider]
    fetched_at: float


@dataclass
class ProviderCache:
    entries: dict[str, Entry] = field(default_factory=dict)
    negative: dict[str, float] = field(default_factory=dict)  # service -> until

    def get(self, service: str, now: float) -> list[Provider] | None:
        """Live providers; [] when nobody hosts it (remembered); None when not cached."""
        if self.negative.get(service, 0.0) > now:
            return []
        entry = self.entries.get(service)
        if entry is None:
            return None
        live = [p for p in entry.providers if p.expires_at > now]
        return live or None

    def put(self, service: str, providers: Iterable[Provider], now: float) -> None:
        live = [p for p in providers if p.expires_at > now]
        if live:
            self.entries[service] = Entry(live, now)
            self.negative.pop(service, None)
        else:
            self.entries.pop(service, None)
            self.negative[service] = now + NEGATIVE_TTL_S

    def invalidate(self, service: str) -> bool:
        """Forget a service's providers, so the next request looks them up afresh (a
        provider that failed may be back, or gone for good)."""
        return self.entries.pop(service, None) is not None

    def prune(self, now: float) -> bool:
        """Forget expired providers and negative entries; True when a route changed."""
        changed = False
        for service in list(self.entries):
            live = [p for p in self.entries[service].providers if p.expires_at > now]
            if len(live) != len(self.entries[service].providers):
                changed = True
                if live:
                    self.entries[service].providers = live
                else:
                    del self.entries[service]
        self.negative = {s: until for s, until in self.negative.items() if until > now}
        return changed

    def next_expiry(self) -> float:
        """When the first cached provider's record expires (inf with none cached)."""
        return min((p.expires_at for e in self.entries.values() for p in e.providers), default=float("inf"))

    def due_for_refresh(self, now: float, min_age_s: float = 1.0) -> list[str]:
        return [s for s, e in self.entries.items()
                if now - e.fetched_at >= min_age_s and any(p.refresh_due(now) for p in e.providers)]

    def __len__(self) -> int:
        return len(self.entries)


@dataclass
class Latencies:
    """Smoothed latency per provider, and providers whose forward failed recently."""

    smoothed: dict[str, float] = field(default_factory=dict)
    penalized_until: dict[str, float] = field(default_factory=dict)

    def observe(self, worker_id: str, seconds: float) -> None:
        old = self.smoothed.get(worker_id)
        self.smoothed[worker_id] = seconds if old is None else old + LATENCY_ALPHA * (seconds - old)
        self.penalized_until.pop(worker_id, None)

    def penalize(self, worker_id: str, now: float) -> None:
        self.penalized_until[worker_id] = now + PENALTY_S

    def penalized(self, worker_id: str, now: float) -> bool:
        return self.penalized_until.get(worker_id, 0.0) > now


def preference_order(providers: list[Provider], latencies: Latencies, rng: random.Random,
                     prefer_gpu: bool = False, now: float = 0.0) -> list[Provider]:
    """Providers that failed recently last (still a last resort: they may be back); GPU
    providers first when the service runs faster on one; then lowest smoothed latency (a
    provider never measured counts as 0 so new ones get tried); ties in random order."""
    return sorted(providers, key=lambda p: (latencies.penalized(p.worker_id, now), prefer_gpu and not p.gpu_model,
                                            latencies.smoothed.get(p.worker_id, 0.0), rng.random()))
