"""The seed's routing counters, each event counted once."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from services.common.rpc import router_pb2


@dataclass
class RoutingCounters:
    local_requests: int = 0
    forwarded_requests: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    dht_lookups: int = 0
    failed_requests: int = 0

    def record(self, outcome: router_pb2.Outcome) -> None:
        if outcome.kind == router_pb2.ROUTE_KIND_LOCAL:
            self.local_requests += 1
        elif outcome.kind == router_pb2.ROUTE_KIND_FORWARDED:
            self.forwarded_requests += 1
            # The gateway used the route the router cached and pushed: no lookup was needed.
            self.cache_hits += outcome.from_table
        if not outcome.success:
            self.failed_requests += 1

    def as_proto(self, cache_size: int) -> router_pb2.RoutingStats:
        looked_up = self.cache_hits + self.cache_misses
        rate = self.cache_hits / looked_up if looked_up else 0.0
        return router_pb2.RoutingStats(**asdict(self), cache_size=cache_size, cache_hit_rate=rate)
