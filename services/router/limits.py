"""A key's limits per minute, counted over the whole mesh. Pure.

Every node counts what each limited key used at it in the current minute (wall-clock
minutes, so all nodes count the same ones) from Envoy's access log, and publishes those
counts in its key record. A router adds its own counts to its peers' as it last read
them; a key at or past a limit is answered 429 by Envoy until the minute ends
(xds/auth.over_limit_routes).

How far a client can go past a limit: on one node, requests are held at once by the key's
own token bucket (xds/auth.py), and tokens stop within the access log's 0.1 s flush and
one push. Across nodes, a peer's counts arrive within the 2 s its record may wait to be
stored and the 5 s until the next read: a client spreading its calls over n nodes gets
past a limit by at most what it sends in those ~7 s, and never by more than n times the
requests limit in a minute (each node's bucket still holds). Clocks must agree to a few
seconds, as the records' expiry already asks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from services.common.keys import ApiKey

WINDOW_S = 60


def window_of(now: float) -> int:
    return int(now // WINDOW_S)


@dataclass(frozen=True)
class Count:
    requests: int = 0
    tokens: int = 0

    def __add__(self, other: Count) -> Count:
        return Count(self.requests + other.requests, self.tokens + other.tokens)


@dataclass(frozen=True)
class Published:
    """A peer's count for one key in one minute, as its key record says."""

    key: str
    window: int
    count: Count


def mesh_counts(own: dict[str, Count], published: Iterable[Published], window: int) -> dict[str, Count]:
    """Each key's use of the mesh in `window`: this node's and its peers'."""
    total = dict(own)
    for p in published:
        if p.window == window:
            total[p.key] = total.get(p.key, Count()) + p.count
    return total


def over(key: ApiKey, used: Count) -> bool:
    return bool(key.requests_per_minute and used.requests >= key.requests_per_minute
                or key.tokens_per_minute and used.tokens >= key.tokens_per_minute)


def blocked(keys: Iterable[ApiKey], counts: dict[str, Count], now: float) -> tuple[tuple[str, int], ...]:
    """(key name, seconds until its minute ends) of each key at or past a limit."""
    wait = max(1, math.ceil((window_of(now) + 1) * WINDOW_S - now))
    return tuple((k.name, wait) for k in keys if over(k, counts.get(k.name, Count())))
