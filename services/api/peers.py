"""What this node's Envoy knows of the peers it forwards to: for /mesh/peers.

A provider whose advertised URL cannot be reached shows here with its connection
failures and whether Envoy ejected it, instead of only as 503s for the requests sent
to it. Pure: from Envoy's `GET /clusters?format=json`.
"""

from __future__ import annotations

REMOTE = "remote:"


def _counts(host: dict) -> dict[str, int]:
    return {s["name"]: int(s.get("value", 0)) for s in host.get("stats", []) if "name" in s}


def _address(host: dict) -> str:
    where = host.get("address", {}).get("socket_address", {})
    return f"{where.get('address', '?')}:{where.get('port_value', '?')}"


def forwarding(clusters: dict) -> list[dict]:
    """One entry per (service, peer) in the remote clusters, with what Envoy saw of it."""
    found = []
    for cluster in clusters.get("cluster_statuses", []):
        if not cluster.get("name", "").startswith(REMOTE):
            continue
        for host in cluster.get("host_statuses", []):
            counts, health = _counts(host), host.get("health_status", {})
            failed = counts.get("cx_connect_fail", 0)
            reached = counts.get("cx_total", 0) > failed
            found.append({
                "service": cluster["name"].removeprefix(REMOTE), "worker_id": host.get("hostname", ""),
                "address": _address(host), "requests": counts.get("rq_total", 0),
                "connect_failures": failed, "ejected": bool(health.get("failed_outlier_check")),
                "reachable": None if not counts.get("cx_total") else reached,
            })
    return sorted(found, key=lambda p: (p["service"], p["worker_id"]))
