"""The seed's routing counters from Envoy's cluster stats, the router's and the api's own."""

from __future__ import annotations

import re

from services.api.routing import STATS_FILTER, ClusterCounters, ClusterTotals, EnvelopeCounts, routing_stats
from services.common.rpc import router_pb2


def stat(name: str, value: int) -> dict:
    return {"name": name, "value": value}


def test_cluster_totals_sum_local_and_remote_clusters_only():
    stats = [stat("cluster.local_echo.upstream_rq_total", 3), stat("cluster.local_ocr.upstream_rq_total", 4),
             stat("cluster.remote_llm.upstream_rq_total", 5), stat("cluster.remote_rag-x.upstream_rq_total", 6),
             stat("cluster.local_echo.upstream_rq_5xx", 1), stat("cluster.remote_llm.upstream_rq_5xx", 2),
             # the aggregate's sub-clusters count its requests; the api's are counted by the api
             stat("cluster.service_llm.upstream_rq_total", 100), stat("cluster.api.upstream_rq_total", 100),
             stat("cluster.api.upstream_rq_5xx", 100)]
    assert ClusterCounters().update(stats) == ClusterTotals(local=7, forwarded=11, failed=3)


def test_requests_of_a_cluster_that_went_stay_counted_and_a_new_one_counts_on():
    counters = ClusterCounters()
    counters.update([stat("cluster.remote_llm.upstream_rq_total", 5), stat("cluster.remote_llm.upstream_rq_5xx", 1),
                     stat("cluster.local_echo.upstream_rq_total", 3)])

    # llm's providers left: the router removed its cluster
    assert counters.update([stat("cluster.local_echo.upstream_rq_total", 4)]) == \
        ClusterTotals(local=4, forwarded=5, failed=1)
    # asked for again: a new cluster counting from 0
    assert counters.update([stat("cluster.remote_llm.upstream_rq_total", 2),
                            stat("cluster.local_echo.upstream_rq_total", 4)]) == ClusterTotals(4, 7, 1)


def test_a_restarted_envoy_counting_from_zero_takes_nothing_away():
    counters = ClusterCounters()
    counters.update([stat("cluster.local_echo.upstream_rq_total", 30), stat("cluster.remote_llm.upstream_rq_total", 9)])

    totals = counters.update([stat("cluster.local_echo.upstream_rq_total", 2),
                              stat("cluster.remote_llm.upstream_rq_total", 9)])

    assert totals == ClusterTotals(local=32, forwarded=9)


def test_the_admin_filter_selects_exactly_the_summed_counters():
    names = ["cluster.local_echo.upstream_rq_total", "cluster.remote_llm.upstream_rq_5xx",
             "cluster.local_echo.upstream_rq_503", "cluster.local_echo.external.upstream_rq_5xx",
             "cluster.service_llm.upstream_rq_total", "cluster.api.upstream_rq_total"]
    # Python's re agrees with RE2 on this pattern.
    assert [n for n in names if re.search(STATS_FILTER, n)] == names[:2]


def test_routing_adds_the_envelope_to_local_and_failed_and_derives_hits():
    counters = router_pb2.RouterCounters(cache_misses=2, dht_lookups=3, misses_found=1, cache_size=4)
    routing = routing_stats(ClusterTotals(local=5, forwarded=7, failed=1), counters, EnvelopeCounts(served=10, failed=2))
    assert routing == {"local_requests": 15, "forwarded_requests": 7, "cache_hits": 6, "cache_misses": 2,
                       "dht_lookups": 3, "failed_requests": 3, "cache_size": 4, "cache_hit_rate": 0.75}


def test_hits_are_never_negative_and_the_rate_of_nothing_is_zero():
    counters = router_pb2.RouterCounters(misses_found=3)
    assert routing_stats(ClusterTotals(forwarded=1), counters, EnvelopeCounts())["cache_hits"] == 0
    assert routing_stats(ClusterTotals(), router_pb2.RouterCounters(), EnvelopeCounts())["cache_hit_rate"] == 0.0
