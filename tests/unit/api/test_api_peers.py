"""/mesh/peers' view of the peers Envoy forwards to, from its /clusters answer."""

from __future__ import annotations

from services.api.peers import forwarding


def host(worker: str, port: int, **stats) -> dict:
    return {"hostname": worker, "address": {"socket_address": {"address": "10.0.0.2", "port_value": port}},
            "stats": [{"name": k, "value": str(v)} for k, v in stats.items()] + [{"name": "rq_error"}],
            "health_status": {"eds_health_status": "HEALTHY"}}


def test_each_remote_host_with_what_envoy_saw():
    reached = host("a", 8443, cx_total=2, rq_total=5)
    refused = host("b", 8444, cx_total=3, cx_connect_fail=3)
    refused["health_status"]["failed_outlier_check"] = True
    clusters = {"cluster_statuses": [
        {"name": "local:echo", "host_statuses": [host("me", 1)]},
        {"name": "remote:echo", "host_statuses": [refused, reached, host("c", 8445)]}]}

    assert forwarding(clusters) == [
        {"service": "echo", "worker_id": "a", "address": "10.0.0.2:8443", "requests": 5, "connect_failures": 0,
         "ejected": False, "reachable": True},
        {"service": "echo", "worker_id": "b", "address": "10.0.0.2:8444", "requests": 0, "connect_failures": 3,
         "ejected": True, "reachable": False},
        {"service": "echo", "worker_id": "c", "address": "10.0.0.2:8445", "requests": 0, "connect_failures": 0,
         "ejected": False, "reachable": None},  # not tried yet
    ]


def test_no_remote_clusters_no_entries():
    assert forwarding({"cluster_statuses": [{"name": "api", "host_statuses": [host("me", 1)]}]}) == []
    assert forwarding({}) == []
