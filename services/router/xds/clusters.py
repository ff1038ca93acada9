"""Clusters and their endpoints: where Envoy sends a service's requests.

Per service: `local:<svc>` (this node's backend, actively health-checked), `remote:<svc>`
(the peers that host it, over mTLS, with outlier ejection; endpoints by EDS), and, when
both exist, `service:<svc>`: an aggregate cluster that tries them in that order, which
is Envoy's priority failover across clusters (priority 0 local, priority 1 remote) while
each keeps its own stats, so /stats can tell local from forwarded requests.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from services.router.xds.typed import (
    ADS,
    LUA,
    Cluster,
    ClusterLoadAssignment,
    address,
    make,
    typed,
)
from services.router.xds.view import LocalService, MeshView, RemoteService

API = "api"
CONNECT_TIMEOUT = "1s"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
NODE_CERT, MESH_CA = "node-cert", "mesh-ca"  # the SDS secrets (resources.secrets)


def local_name(service: str) -> str:
    return f"local:{service}"


def remote_name(service: str) -> str:
    return f"remote:{service}"


def aggregate_name(service: str) -> str:
    return f"service:{service}"


def circuit_breakers() -> dict[str, Any]:
    """Generous request limits (a GPU backend queues, it does not fail fast) and a retry
    budget: retries may add at most a fifth to the requests in flight (Envoy's
    recommended alternative to a fixed max_retries), but never fewer than 32 at once:
    when a peer dies, every request in flight to it must be able to move on, and at a
    few dozen requests in flight a fifth is a handful (measured: failures after a whole
    provider node was killed, with a floor of 3)."""
    return {"thresholds": [{
        "max_connections": 4096, "max_pending_requests": 4096, "max_requests": 4096,
        "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 32},
    }]}


def api_cluster(view: MeshView) -> Cluster:
    return make(Cluster, {
        "name": API, "type": "STATIC", "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {"cluster_name": API, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": address(f"unix:{view.api_socket}")}}]}]},
    })


def upstream_tls(svc: LocalService) -> dict[str, Any]:
    """An https:// backend: TLS with its host name as SNI."""
    host = urlsplit(svc.config.upstream).hostname or ""
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {"sni": host})}


def health_check(view: MeshView, svc: LocalService) -> dict[str, Any]:
    """Envoy checks its local backend itself, so a dead one is skipped within an interval
    or two (the router's own checks decide what the node announces)."""
    interval = f"{view.health_interval_s:.3f}s"
    return {
        "timeout": interval, "interval": interval, "no_traffic_interval": interval,
        "unhealthy_threshold": view.health_fail_threshold, "healthy_threshold": view.health_ok_threshold,
        "http_health_check": {"path": svc.config.health_path or "/health", "request_headers_to_add": [
            {"header": {"key": k, "value": v}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
            for k, v in svc.config.auth_headers.items()]},
    }


def one_request_per_connection() -> dict[str, Any]:
    """A backend may answer without reading a request's body; it then reads that body as
    its next request, and on a reused connection Envoy hands what it answers to the next
    client (issue 11, M6: a request hidden in a body answered another client's). Envoy
    cannot tell, so unless the service says it reads every body, no connection to its
    backend carries a second request."""
    return typed(HTTP_OPTIONS, {"explicit_http_config": {"http_protocol_options": {}},
                                "common_http_protocol_options": {"max_requests_per_connection": 1}})


# A provider whose backend dies between writing an answer's headers and its body (kill -9
# between uvicorn's two writes: bench failover) passes the headers on and then resets, and
# Envoy's router retries only before any response byte went downstream: the client read a
# 200 with half a body. For an idempotent service the forwarding node's upstream filters
# hold a peer's short answer (Content-Length up to this) until its last byte, so a cut one
# reaches the router as a reset before any response and is retried on another provider.
# Streams (SSE: no Content-Length) and longer bodies flow as they come. Only forwarded
# answers are held: holding a node's own backend's answers as well cost its local route
# ~0.03 ms p50 and 1.14x bare Envoy's CPU (bench, quick), past that route's targets.
WHOLE_RESPONSE_MAX_BYTES = 256 * 1024
HOLD_WHOLE_RESPONSE = f"""
function envoy_on_response(response)
  -- tonumber(nil) would raise, and a script that fails lets the response pass.
  local length = tonumber(response:headers():get("content-length") or "")
  if length ~= nil and length <= {WHOLE_RESPONSE_MAX_BYTES} then
    response:body()
  end
end
"""
UPSTREAM_CODEC = {"name": "envoy.filters.http.upstream_codec", "typed_config": typed(
    "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec")}


def whole_answers() -> dict[str, Any]:
    return typed(HTTP_OPTIONS, {"explicit_http_config": {"http_protocol_options": {}}, "http_filters": [
        {"name": "meshworker.whole_response", "typed_config": typed(
            LUA, {"default_source_code": {"inline_string": HOLD_WHOLE_RESPONSE}})}, UPSTREAM_CODEC]})


def backend_address(upstream: str) -> tuple[str, dict[str, Any]]:
    """The cluster type and address of a backend URL: an IP or a unix socket is STATIC,
    a host name is resolved by Envoy (STRICT_DNS)."""
    if upstream.startswith("unix:"):
        return "STATIC", address(upstream)
    parts = urlsplit(upstream)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS", address(f"{host}:{port}")
    return "STATIC", address(f"{host}:{port}")


def local_cluster(view: MeshView, svc: LocalService) -> Cluster:
    name = local_name(svc.name)
    upstream = svc.config.upstream
    kind, where = backend_address(upstream)
    shape: dict[str, Any] = {
        "name": name, "type": kind, "connect_timeout": CONNECT_TIMEOUT, "lb_policy": "LEAST_REQUEST",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": where, "hostname": view.worker_id}}]}]},
        "health_checks": [health_check(view, svc)],
        "circuit_breakers": circuit_breakers(),
    }
    if not svc.config.reuse_connections:
        shape["typed_extension_protocol_options"] = {HTTP_OPTIONS: one_request_per_connection()}
    if upstream.startswith("https://"):
        shape["transport_socket"] = upstream_tls(svc)
    return make(Cluster, shape)


def peer_tls(view: MeshView) -> dict[str, Any]:
    """mTLS to a peer's listener: our certificate, and theirs must name a member."""
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {"common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": NODE_CERT, "sds_config": ADS}],
            "validation_context_sds_secret_config": {"name": MESH_CA, "sds_config": ADS},
        }})}


# A peer is also checked by connecting to it (mTLS included): a dead one is marked down
# and stays down until it answers, where outlier ejection alone lets it back in for a
# try when the ejection ends, and least-request balancing sends it the most (it has no
# requests in flight), so a burst of requests failed there each time (bench failover).
# Checked as often without traffic (Envoy's default then is once a minute): a peer that was
# cut off while idle is marked down in seconds, not kept as a host pending removal.
PEER_CHECK = {"timeout": "1s", "interval": "2s", "no_traffic_interval": "2s", "unhealthy_threshold": 2,
              "healthy_threshold": 1, "tcp_health_check": {}}


def peers_cluster(view: MeshView, name: str, idempotent: bool = False) -> Cluster:
    """Peers' listeners by EDS; one that fails in a row is ejected for a while (outlier
    detection), and its connection failures count apart from the answers its backend gives.
    An idempotent service's short answers are held whole (HOLD_WHOLE_RESPONSE)."""
    held = {"typed_extension_protocol_options": {HTTP_OPTIONS: whole_answers()}} if idempotent else {}
    return make(Cluster, {**held,
        "name": name, "type": "EDS", "connect_timeout": CONNECT_TIMEOUT,
        "eds_cluster_config": {"eds_config": ADS}, "lb_policy": "LEAST_REQUEST",
        "transport_socket": peer_tls(view), "health_checks": [PEER_CHECK],
        "outlier_detection": {
            "consecutive_5xx": 5, "consecutive_gateway_failure": 3, "interval": "2s",
            "base_ejection_time": "10s", "max_ejection_percent": 100,
            "split_external_local_origin_errors": True, "consecutive_local_origin_failure": 2,
        },
        "circuit_breakers": circuit_breakers(),
    })


def remote_endpoints(remote: RemoteService) -> ClusterLoadAssignment:
    return make(ClusterLoadAssignment, {"cluster_name": remote_name(remote.name), "endpoints": [{
        "lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": p.host, "port_value": p.port}},
            "hostname": p.worker_id}} for p in remote.peers]}]})


def aggregate_cluster(service: str) -> Cluster:
    return make(Cluster, {
        "name": aggregate_name(service), "connect_timeout": CONNECT_TIMEOUT, "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {"name": "envoy.clusters.aggregate", "typed_config": typed(
            "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
            {"clusters": [local_name(service), remote_name(service)]})},
    })


def target(view: MeshView, service: str) -> str | None:
    """The cluster a service's transparent path goes to; None when nobody hosts it."""
    local = any(s.name == service for s in view.local)
    remote = view.tls is not None and view.remote_of(service) is not None
    if local and remote:
        return aggregate_name(service)
    return local_name(service) if local else remote_name(service) if remote else None


def clusters(view: MeshView) -> list[Cluster]:
    found = [api_cluster(view), *(local_cluster(view, s) for s in view.local)]
    if view.tls is not None:
        found += [peers_cluster(view, remote_name(r.name), r.idempotent) for r in view.remote]
        local = {s.name for s in view.local}
        found += [aggregate_cluster(r.name) for r in view.remote if r.name in local]
    return found


def endpoints(view: MeshView) -> list[ClusterLoadAssignment]:
    return [remote_endpoints(r) for r in view.remote] if view.tls is not None else []
