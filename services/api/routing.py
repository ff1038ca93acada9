"""The seed's `routing` counters of /stats, from Envoy's cluster stats and the router's.

Envoy counts the requests it proxies, per cluster; the router counts cache misses and DHT
lookups; the api counts the envelope requests it serves itself. This module only adds
them up, so the arithmetic is tested without any of the three running.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.common.rpc import router_pb2

# Envoy writes a cluster's name into its stat names with ':' replaced by '_' (checked on
# Envoy 1.40: cluster `local:ocr` counts in `cluster.local_ocr.upstream_rq_total`). A
# service name has no '_' or '.', so the prefix tells local from remote unambiguously.
# The aggregate `service:<svc>` clusters are left out: their sub-clusters count the requests.
LOCAL_PREFIX, REMOTE_PREFIX = "cluster.local_", "cluster.remote_"
# RE2 syntax, for the admin's `GET /stats?filter=`: only the counters summed below.
STATS_FILTER = r"^cluster\.(local|remote)_[^.]+\.upstream_rq_(total|5xx)$"


@dataclass
class EnvelopeCounts:
    """Envelope requests (POST /service/{type}) the api served itself, and those it
    answered with a 5xx: Envoy counts them on its `api` cluster, not on `local:<svc>`."""

    served: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ClusterTotals:
    local: int = 0
    forwarded: int = 0
    failed: int = 0


def kind_of(name: str) -> str | None:
    """Which total an Envoy stat adds to: "local", "forwarded", "failed" or none.

    A connection Envoy could not make counts in upstream_rq_5xx but not in
    upstream_rq_total, so failed requests are summed on their own."""
    if not name.startswith((LOCAL_PREFIX, REMOTE_PREFIX)):
        return None
    if name.endswith(".upstream_rq_5xx"):
        return "failed"
    if name.endswith(".upstream_rq_total"):
        return "local" if name.startswith(LOCAL_PREFIX) else "forwarded"
    return None


def cluster_totals(counters: Mapping[str, int]) -> ClusterTotals:
    """Envoy's counters (by stat name) summed over local and remote clusters."""
    sums = {"local": 0, "forwarded": 0, "failed": 0}
    for name, value in counters.items():
        if (kind := kind_of(name)) is not None:
            sums[kind] += value
    return ClusterTotals(**sums)


class ClusterCounters:
    """Envoy's cluster counters, summed so that no total ever goes down. A remote cluster
    goes when its providers leave (or a service stops being asked for), and a restarted
    Envoy counts from 0: either would take requests already served out of /stats. What a
    counter had counted at its last read before it went (or fell) is kept; one that starts
    again counts on. The api reads them every second (node.CLUSTER_SAMPLE_S). (An Envoy
    restart is missed if its counters passed their old values between two reads.)"""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.gone: dict[str, int] = {}  # by stat name: what its earlier lives counted

    def update(self, stats: Iterable[Mapping]) -> ClusterTotals:
        """The totals after one read of Envoy's `{"name", "value"}` stats."""
        now = {s["name"]: int(s.get("value", 0)) for s in stats if kind_of(s.get("name", "")) is not None}
        for name, value in self.last.items():
            if now.get(name, 0) < value:
                self.gone[name] = self.gone.get(name, 0) + value
        self.last = now
        return cluster_totals({name: self.gone.get(name, 0) + now.get(name, 0) for name in {*self.gone, *now}})


def routing_stats(envoy: ClusterTotals, router: router_pb2.RouterCounters,
                  envelope: EnvelopeCounts) -> dict[str, int | float]:
    """The seed's routing fields. A request for a service found by a DHT lookup (a miss)
    is forwarded like any other, so hits are the forwarded requests that were not misses."""
    forwarded = envoy.forwarded
    hits = max(0, forwarded - router.misses_found)
    misses = router.cache_misses
    return {
        "local_requests": envoy.local + envelope.served,
        "forwarded_requests": forwarded,
        "cache_hits": hits,
        "cache_misses": misses,
        "dht_lookups": router.dht_lookups,
        "failed_requests": envoy.failed + envelope.failed,
        "cache_size": router.cache_size,
        "cache_hit_rate": hits / (hits + misses) if hits + misses else 0.0,
    }
