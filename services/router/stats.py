"""The routing counters only the router can keep: lookups. Envoy counts the requests."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.rpc import router_pb2


@dataclass
class RouterCounters:
    cache_misses: int = 0
    dht_lookups: int = 0
    misses_found: int = 0  # misses whose lookup found a provider: each forwards its request

    def as_proto(self, cache_size: int) -> router_pb2.RouterCounters:
        return router_pb2.RouterCounters(cache_misses=self.cache_misses, dht_lookups=self.dht_lookups,
                                         misses_found=self.misses_found, cache_size=cache_size)
