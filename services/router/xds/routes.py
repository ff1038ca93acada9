"""Route configurations: `client` for :8000, `peer` for the mTLS listener.

`client` sends each known service to its cluster and hands any other `/service/<name>`
to the api, which asks the router to look the name up (or answers 404 from the router's
brief memory of names found nowhere) and answers 307 to the same URL: Envoy follows that
redirect internally (internal_redirect_policy), so the first request for a new service
reaches its provider with one lookup (api_lookup; unknown /v1 models go the same way).

`peer` routes only to this node's own backends: a forwarded request is never forwarded
again, by construction.
"""

from __future__ import annotations

import json
from typing import Any

from services.common import errors
from services.router.xds import clusters
from services.router.xds.typed import RouteConfiguration, make, typed
from services.router.xds.view import LocalService, MeshView

CLIENT, PEER = "client", "peer"
WORKER, ROUTE = "x-mesh-worker", "x-mesh-route"
# Headers only peers (and our own filters) may set: dropped from what a client sends to
# :8000 before any route is picked (listeners.py).
SERVICE, ENVELOPE, MODEL = "x-mesh-service", "x-mesh-envelope", "x-mesh-model"
KEY = "x-mesh-key"  # the name of the client's API key, once jwt_authn verified it (auth.py)
CLIENT_CREDENTIALS = ("authorization", "x-api-key")  # where a client's API key comes from
PEER_ONLY_HEADERS = (WORKER, ROUTE, SERVICE, ENVELOPE, MODEL, KEY)
# A service without a timeout of ours (remote only): its peer applies the backend's own.
REMOTE_TIMEOUT_S = 300.0
# Nothing reached a backend yet: the connection failed, or a peer said so (UNSERVED).
SAFE_RETRIES = "connect-failure,reset-before-request,retriable-headers"
UNSERVED = "x-mesh-unserved"
BUFFER_FILTER = "envoy.filters.http.buffer"
API_ROUTE = "the node's api"
LOOKUP_ROUTE = "the node's api, looking a name up"
# A key's token bucket (auth.py); named here, where the lookup route turns it off.
LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
IDEMPOTENT_RETRIES = SAFE_RETRIES + ",5xx,gateway-error,reset"
# The envelope's body is read whole and parsed by the api, where JSON costs up to 25 times
# its size and parsing it holds every other request the api serves, /health included
# (issue 11, M2: 30 MiB of [{},{},...] took 770 MB and 1.3 s). Larger bodies go to the
# backend's own API, /service/{type}/{path}, which streams them.
ENVELOPE_MAX_BYTES = 8 * 1024 * 1024


def header(key: str, value: str, action: str = "OVERWRITE_IF_EXISTS_OR_ADD") -> dict[str, Any]:
    return {"header": {"key": key, "value": value}, "append_action": action}


def answer(status: int, body: dict[str, Any], *headers: dict[str, Any]) -> dict[str, Any]:
    """A route that answers this JSON itself."""
    return {"direct_response": {"status": status, "body": {"inline_string": json.dumps(body, separators=(",", ":"))}},
            "response_headers_to_add": [header("content-type", "application/json"), *headers]}


def error(status: int, code: str, message: str) -> dict[str, Any]:
    """A route that answers our JSON error shape itself."""
    return answer(status, errors.ours(code, message))


def openai_error(status: int, code: str, message: str) -> dict[str, Any]:
    """A route that answers OpenAI's error shape itself."""
    return answer(status, errors.openai(status, code, message))


def envelope_limit(view: MeshView) -> int:
    return min(view.max_body_bytes, ENVELOPE_MAX_BYTES)


def too_large(match: dict[str, Any], limit: int) -> dict[str, Any]:
    return {"match": match | {"headers": [*match.get("headers", []), {"name": "content-length", "range_match": {
                "start": limit + 1, "end": 2**62}}]},
            **error(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")}


def refusals(view: MeshView) -> list[dict[str, Any]]:
    """Before any route: a declared Content-Length over the limit (the envelope's, for an
    envelope) is refused before any byte moves on. (Paths Envoy cannot normalize, with a
    NUL or an encoded slash, never get this far: listeners.py.)"""
    return [too_large({"prefix": "/"}, view.max_body_bytes),
            too_large(post({"safe_regex": {"regex": "/service/[^/]+"}}), envelope_limit(view))]


def buffered(limit: int) -> dict[str, Any]:
    """The buffer filter turned on for a route: a body over `limit` is refused with 413."""
    return {BUFFER_FILTER: typed("envoy.extensions.filters.http.buffer.v3.BufferPerRoute",
                                 {"buffer": {"max_request_bytes": limit}})}


def held_whole(envelope: dict[str, Any], view: MeshView) -> dict[str, Any]:
    """An envelope is held whole, so a chunked one that grows past its limit is refused
    before the api reads it (one with a Content-Length was refused up front)."""
    return envelope | {"typed_per_filter_config": buffered(envelope_limit(view))}


def held_if_chunked(route: dict[str, Any], view: MeshView) -> list[dict[str, Any]]:
    """A body of unknown length (chunked: no Content-Length) is held until it ends, so one
    that grows past the limit is refused with 413 and never reaches a backend half sent;
    a declared length was checked up front and streams (a 10 MiB upload costs no 10 MiB
    here). A request without a body passes the buffer at once."""
    chunked = {**route, "match": {**route["match"], "headers": [
        *route["match"].get("headers", []), {"name": "content-length", "present_match": False}]},
        "typed_per_filter_config": buffered(view.max_body_bytes)}
    return [chunked, route]


def retry_policy(idempotent: bool) -> dict[str, Any]:
    """Retry on another host when nothing reached a backend; after that only for
    idempotent services (a repeated POST to an LLM would bill twice)."""
    return {"retry_on": IDEMPOTENT_RETRIES if idempotent else SAFE_RETRIES, "num_retries": 2,
            "retriable_headers": [{"name": UNSERVED, "present_match": True}],
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts", "typed_config": typed(
                "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate")}],
            "host_selection_retry_max_attempts": 5}


def forward(cluster: str, timeout_s: float, idempotent: bool, rewrite: bool, route_kind: str | None,
            extra_headers: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """A route to a cluster. `route_kind` None: either may answer (the aggregate cluster);
    a peer's answer then names itself and the route, and the virtual host fills in ours."""
    action: dict[str, Any] = {"cluster": cluster, "timeout": f"{timeout_s:.3f}s",
                              "retry_policy": retry_policy(idempotent)}
    if rewrite:  # /service/<name>/<path> reaches the backend as /<path> (the match is that prefix)
        action["prefix_rewrite"] = "/"
    # A client's credentials are for the mesh (auth.py), never for a backend or a peer: a
    # backend that needs a key gets its own (`auth`, in extra_headers). Only here: a route to
    # the api keeps them, for a request it sends through the routes again (a 307).
    return {"route": action, "request_headers_to_add": list(extra_headers),
            "request_headers_to_remove": list(CLIENT_CREDENTIALS),
            "response_headers_to_add": [header(ROUTE, route_kind)] if route_kind else []}


def auth(svc: LocalService) -> tuple[dict[str, Any], ...]:
    return tuple(header(k, v) for k, v in svc.config.auth_headers.items())


def naming(name: str, envelope: bool = False) -> tuple[dict[str, Any], ...]:
    """What tells a peer which of its services a forwarded request is for: the path of a
    transparent request was already rewritten here (one rewrite serves both halves of
    the aggregate cluster)."""
    return (header(SERVICE, name),) + ((header(ENVELOPE, "1"),) if envelope else ())


def exact(name: str) -> dict[str, Any]:
    return {"path": f"/service/{name}"}


def below(name: str) -> dict[str, Any]:
    return {"prefix": f"/service/{name}/"}


def post(match: dict[str, Any]) -> dict[str, Any]:
    return match | {"headers": [*match.get("headers", []), {"name": ":method", "string_match": {"exact": "POST"}}]}


def named(match: dict[str, Any], *headers: str) -> dict[str, Any]:
    return match | {"headers": [*match.get("headers", []), *({"name": h, "present_match": True} for h in headers)]}


def envelope_only_post(name: str) -> dict[str, Any]:
    return {"match": exact(name), **error(405, "method_not_allowed",
                                          "use POST /service/{type}, or /service/{type}/{path} for the backend's API")}


def to_api(match: dict[str, Any], route_kind: str = "local") -> dict[str, Any]:
    # Named, as every route is: Envoy's own error messages name the route (listeners.py).
    return {"name": API_ROUTE, "match": match, "route": {"cluster": clusters.API, "timeout": "0s"},
            "response_headers_to_add": [header(ROUTE, route_kind)]}


def forwarded_envelope(name: str, timeout_s: float, idempotent: bool) -> dict[str, Any]:
    return {"match": post(exact(name)), **forward(clusters.remote_name(name), timeout_s, idempotent, False,
                                                  "forwarded", naming(name, envelope=True))}


def service_routes(view: MeshView, name: str, envelope: dict[str, Any], below_route: dict[str, Any]
                   ) -> list[dict[str, Any]]:
    """One service's routes, each named after it (Envoy's error messages name the route)."""
    found = [held_whole(envelope, view), envelope_only_post(name), *held_if_chunked(below_route, view)]
    return [{**route, "name": name} for route in found]


def local_routes(view: MeshView, svc: LocalService) -> list[dict[str, Any]]:
    """A service this node hosts: the envelope by the api here while the backend is
    healthy, else by a peer's; the backend's own API by its cluster (local first)."""
    name, remote = svc.name, view.tls is not None and view.remote_of(svc.name) is not None
    envelope = to_api(post(exact(name))) if svc.healthy or not remote else forwarded_envelope(
        name, svc.config.timeout_s, svc.config.idempotent)
    only_local = not remote
    return service_routes(view, name, envelope, {"match": below(name), **forward(
        clusters.target(view, name), svc.config.timeout_s, svc.config.idempotent, True,
        "local" if only_local else None, auth(svc) + (() if only_local else naming(name)))})


def remote_routes(view: MeshView) -> list[dict[str, Any]]:
    """Services only peers host."""
    local = {s.name for s in view.local}
    found = []
    for remote in view.remote:
        if remote.name in local or view.tls is None:
            continue
        found += service_routes(
            view, remote.name, forwarded_envelope(remote.name, REMOTE_TIMEOUT_S, remote.idempotent),
            {"match": below(remote.name), **forward(clusters.remote_name(remote.name), REMOTE_TIMEOUT_S,
                                                    remote.idempotent, True, "forwarded", naming(remote.name))})
    return found


def api_lookup(view: MeshView, match: dict[str, Any]) -> dict[str, Any]:
    """A name no route knows: the api looks it up and redirects back here once. Envoy
    replays the body from its buffer, so it may hold a whole one (the first request for
    a name only; later ones stream on their own route).

    The redirected request passes every filter again, so this first pass takes nothing
    from the key's token bucket, and the access log's entry for its 307 is not counted
    (usage.py): a request costs its key one, on the route it ends on."""
    route = to_api(match)
    route["name"] = LOOKUP_ROUTE
    route["route"]["internal_redirect_policy"] = {"max_internal_redirects": 1,
                                                  "redirect_response_codes": [307]}
    route["request_body_buffer_limit"] = view.max_body_bytes
    route["typed_per_filter_config"] = {LIMIT_FILTER: typed("envoy.config.route.v3.FilterConfig", {"disabled": True})}
    return route


def client_routes(view: MeshView, openai: list[dict[str, Any]], over_limit: list[dict[str, Any]]
                  ) -> RouteConfiguration:
    """`openai`: the /v1 routes (models.py); `over_limit`: keys refused this minute (auth.py)."""
    routes = refusals(view) + over_limit
    for svc in view.local:
        routes += local_routes(view, svc)
    routes += remote_routes(view) + openai + [api_lookup(view, {"prefix": "/service/"}), to_api({"prefix": "/"})]
    return make(RouteConfiguration, {
        # The routes' additions win over the virtual host's (the default order is the reverse).
        "name": CLIENT, "most_specific_header_mutations_wins": True,
        "virtual_hosts": [{"name": CLIENT, "domains": ["*"], "routes": routes,
                           "response_headers_to_add": [header(WORKER, view.worker_id, "ADD_IF_ABSENT"),
                                                       header(ROUTE, "local", "ADD_IF_ABSENT")],
                           "response_headers_to_remove": [UNSERVED]}],
    })


def peer_routes(view: MeshView, openai: list[dict[str, Any]]) -> RouteConfiguration:
    """Forwarded requests name their service (or `openai`: their model) in a header; only
    local backends serve."""
    routes = refusals(view) + openai
    for svc in view.local:
        service_header = {"name": SERVICE, "string_match": {"exact": svc.name}}
        envelope = named(post(exact(svc.name)), ENVELOPE)
        routes += [{**route, "name": svc.name} for route in [
            held_whole(to_api(envelope | {"headers": [service_header, *envelope["headers"]]}, "forwarded"), view),
            *held_if_chunked({"match": {"prefix": "/", "headers": [service_header]}, **forward(
                clusters.local_name(svc.name), svc.config.timeout_s, svc.config.idempotent, False,
                "forwarded", auth(svc))}, view)]]
    routes.append({"match": {"prefix": "/"}, **error(
        404, "not_hosted_here", f"{view.worker_id} does not host this service itself")})
    return make(RouteConfiguration, {
        "name": PEER, "virtual_hosts": [{"name": PEER, "domains": ["*"], "routes": routes,
                                         "response_headers_to_add": [header(WORKER, view.worker_id)]}],
    })
