"""The mesh's OpenAI API on :8000: `/v1/*` routed by the `model` a request names.

Envoy reads `model` from the JSON body itself: the transform filter copies
`%REQUEST_BODY(model)%` into the x-mesh-model header and has the route picked again,
so no Python process is on a model request's path. A name clients already use
([models] aliases) is rewritten to the model's id, in the header and in the body, by a
second transform on the alias's route.

Per model, one of two routes:
- served only here (or without TLS): straight to the local backend's cluster;
- served by peers too: cluster `model:<id>` of every provider's peer listener, this
  node's own included (mTLS on loopback), so one least-request balancer weighs them
  all. Their priorities and weights come from the load each reports (provider_groups):
  the local node first while it is not busier than the others, a saturated provider
  only once no other has room.

Unknown names go to the api, which reads the catalog again (a model announced seconds
ago) and redirects back here, or answers 404 `model_not_found`. Every error on /v1 is
in OpenAI's shape.
"""

from __future__ import annotations

from typing import Any

from services.router.xds import auth, clusters, routes
from services.router.xds.typed import ClusterLoadAssignment, make, typed
from services.router.xds.view import MeshView, ModelProvider, ModelRoute

PREFIX = "/v1/"
MODEL = routes.MODEL
MODEL_FILTER, ALIAS_FILTER = "meshworker.model", "meshworker.alias"
TRANSFORM = "envoy.extensions.filters.http.transform.v3.TransformConfig"
METADATA = "meshworker"  # endpoint metadata: {"route": "local" | "forwarded"}
ROUTE_OF_ENDPOINT = f'%UPSTREAM_METADATA(["{METADATA}", "route"])%'


def cluster_name(model_id: str) -> str:
    return f"model:{model_id}"


def by_model(name: str) -> dict[str, Any]:
    return {"prefix": PREFIX, "headers": [{"name": MODEL, "string_match": {"exact": name}}]}


# --- filters (listeners.py puts them on the client listener, off unless a route turns them on)

def filters() -> list[dict[str, Any]]:
    return [{"name": name, "disabled": True, "typed_config": typed(TRANSFORM)} for name in (MODEL_FILTER, ALIAS_FILTER)]


def model_read() -> dict[str, Any]:
    """The model filter's work, on the route that takes a request before its model is known.
    Envoy decides which filters a request passes from this first route, so the alias
    filter is turned on here too: it then does what the alias's route says, if any; and
    so is the filter that reads a keyed answer's token usage (auth.py)."""
    return {MODEL_FILTER: typed(TRANSFORM, {"clear_route_cache": True, "request_transformation": {
        "headers_mutations": [{"append": {"header": {"key": MODEL, "value": "%REQUEST_BODY(model)%"},
                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}]}}),
            ALIAS_FILTER: typed(TRANSFORM)} | auth.usage_read()


def renamed_to(model_id: str) -> dict[str, Any]:
    """An alias's route: the request names the model's id from here on, body included."""
    return {ALIAS_FILTER: typed(TRANSFORM, {"clear_route_cache": True, "request_transformation": {
        "headers_mutations": [{"append": {"header": {"key": MODEL, "value": model_id},
                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}],
        "body_transformation": {"action": "MERGE", "body_format": {"json_format": {"model": model_id}}}}})}


# --- clusters and endpoints

def provider_groups(route: ModelRoute) -> list[list[ModelProvider]]:
    """Envoy's priorities, first to last. The local node alone first while it has room and
    no other provider is less loaded (no hop, no TLS); else every provider with room,
    weighted by load; saturated ones last, used only while no other can serve."""
    open_ = [p for p in route.providers if not p.saturated]
    local = [p for p in open_ if p.local]
    others = [p for p in open_ if not p.local]
    full = [p for p in route.providers if p.saturated]
    if local and all(local[0].load_percent <= p.load_percent for p in others):
        groups = [local, others, full]
    else:
        groups = [open_, full]
    return [g for g in groups if g]


def weight(provider: ModelProvider) -> int:
    """Fewer new requests for a busier provider: 100 idle, 50 at its capacity, 25 at 3x."""
    return max(1, round(10000 / (100 + provider.load_percent)))


def model_endpoints(route: ModelRoute) -> ClusterLoadAssignment:
    name = cluster_name(route.model.id)
    return make(ClusterLoadAssignment, {"cluster_name": name, "endpoints": [
        {"priority": priority, "lb_endpoints": [{
            "endpoint": {"address": {"socket_address": {"address": p.peer.host, "port_value": p.peer.port}},
                         "hostname": p.peer.worker_id},
            "load_balancing_weight": weight(p),
            "metadata": {"filter_metadata": {METADATA: {"route": "local" if p.local else "forwarded"}}},
        } for p in group]} for priority, group in enumerate(provider_groups(route))]})


def balanced(view: MeshView) -> list[ModelRoute]:
    """The models whose requests a `model:` cluster spreads over several nodes."""
    return [r for r in view.models if r.providers and view.tls is not None]


def routable(view: MeshView) -> list[ModelRoute]:
    """The models a request can reach from here: served here, or by peers over mTLS."""
    local = {s.name for s in view.local}
    return [r for r in view.models if r.local_service in local or (r.providers and view.tls is not None)]


def model_clusters(view: MeshView) -> list:
    return [clusters.peers_cluster(view, cluster_name(r.model.id)) for r in balanced(view)]


def endpoints(view: MeshView) -> list[ClusterLoadAssignment]:
    return [model_endpoints(r) for r in balanced(view)]


# --- routes

def idempotent(route: ModelRoute) -> bool:
    """An embedding may be computed twice; a generation may not (it would bill twice)."""
    return route.model.kind == "embedding"


def action(view: MeshView, route: ModelRoute) -> dict[str, Any]:
    svc = next((s for s in view.local if s.name == route.local_service), None)
    timeout = svc.config.timeout_s if svc else routes.REMOTE_TIMEOUT_S
    if route.providers and view.tls is not None:
        found = routes.forward(cluster_name(route.model.id), timeout, idempotent(route), False, None)
        found["response_headers_to_add"] = [routes.header(routes.ROUTE, ROUTE_OF_ENDPOINT)]
        return found
    assert svc is not None, "a model without peers is served here"
    return routes.forward(clusters.local_name(svc.name), timeout, idempotent(route), False, "local",
                          routes.auth(svc))


def client_routes(view: MeshView) -> list[dict[str, Any]]:
    known = {r.model.id: r for r in routable(view)}
    found = [routes.to_api({"path": "/v1/models", "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]})]
    found += [{"name": r.model.id, "match": by_model(r.model.id), **action(view, r),
               **per_filter(auth.model_rule(view.keys, view.names_of(r.model.id)) | auth.usage_read())}
              for r in known.values()]
    found += [{"name": target, "match": by_model(alias), **action(view, known[target]),
               **per_filter(renamed_to(target) | auth.model_rule(view.keys, view.names_of(target)) | auth.usage_read())}
              for alias, target in view.aliases if target in known and alias not in known]
    return found + [unknown_model(view), needs_model(view),
                    {"match": {"prefix": PREFIX}, **routes.openai_error(404, "unknown_url", "no such /v1 endpoint here; "
                                                                 "this gateway serves /v1/models, /v1/chat/"
                                                                 "completions, /v1/completions, /v1/embeddings")}]


def per_filter(configs: dict[str, Any]) -> dict[str, Any]:
    return {"typed_per_filter_config": configs} if configs else {}


def unknown_model(view: MeshView) -> dict[str, Any]:
    """A name no route knows: the api reads the catalog again and redirects back here once
    (Envoy replays the held body), or answers 404 model_not_found."""
    return routes.api_lookup(view, {"prefix": PREFIX, "headers": [{"name": MODEL, "present_match": True}]})


def needs_model(view: MeshView) -> dict[str, Any]:
    """A POST before its model is known: the model filter reads the body and the route is
    picked again. One still here named no model (or was not a JSON object): the api
    answers why."""
    route = routes.to_api({"prefix": PREFIX, "headers": [{"name": ":method", "string_match": {"exact": "POST"}}]})
    return route | {"typed_per_filter_config": model_read(), "request_body_buffer_limit": view.max_body_bytes}


def peer_routes(view: MeshView) -> list[dict[str, Any]]:
    """A peer's request for a model served here (aliases were resolved by the peer)."""
    local = {s.name: s for s in view.local}
    found = []
    for route in view.models:
        svc = local.get(route.local_service or "")
        if svc is not None:
            found.append({"name": svc.name, "match": by_model(route.model.id), **routes.forward(
                clusters.local_name(svc.name), svc.config.timeout_s, idempotent(route), False, "forwarded",
                routes.auth(svc))})
    return found
