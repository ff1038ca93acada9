"""Remote providers: the lookup cache.

Pure: the clock is passed in. A cached entry is bounded by its records' expiry (a
provider disappears when its record does) and refreshed before that. Services nobody
hosts are remembered briefly so a burst of requests for them costs one lookup; that is the
router's alone, never a route in Envoy (a route per unknown name would cost a push each,
issue 12 L3). Which provider serves a request is Envoy's choice (least request, outlier
ejection).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.common.models import Offer

NEGATIVE_TTL_S = 5.0
REFRESH_MARGIN = 0.25  # refresh when a record has less than this share of its life left


@dataclass(frozen=True)
class Provider:
    worker_id: str
    url: str
    issued_at: float
    expires_at: float
    idempotent: bool = False
    gpu_model: str = ""
    model: str = ""
    offers: tuple[Offer, ...] = ()  # on a catalog record: the models the worker serves

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

    def prune(self, now: float) -> bool:
        """Forget expired providers and negative entries; True when a route changed (a
        negative entry is no route)."""
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
        """When the first cached provider's record expires (inf: none)."""
        return min((p.expires_at for e in self.entries.values() for p in e.providers), default=float("inf"))

    def due_for_refresh(self, now: float, min_age_s: float = 1.0) -> list[str]:
        return [s for s, e in self.entries.items()
                if now - e.fetched_at >= min_age_s and any(p.refresh_due(now) for p in e.providers)]

    def __len__(self) -> int:
        return len(self.entries)
