"""Listeners: `client` on the gateway port, `peer` (mTLS) on the peer port.

The peer listener requires a client certificate signed by the mesh CA that names a
member of this mesh (SPIFFE URI SAN prefix, in the `mesh-ca` secret).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.common import errors
from services.common.keys import ApiKey
from services.router.xds import auth, models, routes
from services.router.xds.clusters import MESH_CA, NODE_CERT
from services.router.xds.typed import ADS, Listener, make, typed
from services.router.xds.view import MeshView

# A client has this long to send its request headers (slowloris), and an idle keep-alive
# connection is closed after IDLE_TIMEOUT.
REQUEST_HEADERS_TIMEOUT, IDLE_TIMEOUT = "10s", "300s"
# Envoy's defaults, named because our 431 says them: a request's headers are refused
# (431) beyond this size or number, before any of them is routed (issue 11, H1).
HEADERS_KB, HEADERS_COUNT = 60, 100
# Answers Envoy makes itself, in our JSON error shape: a provider that fails (by the
# response flag Envoy sets: no healthy host, connect failure, reset, overflow, timeout),
# and a body over the limit (our own 413 route, or the buffer filter's for a chunked
# one). Routes are named after their service, so a message can name it.
FAILURES = (
    (("UT",), 504, "backend_timeout", "%ROUTE_NAME% did not answer within its timeout"),
    (("UH", "UF", "URX", "UC", "UPE", "NC"), 503, "backend_unavailable",
     # Envoy's flags (e.g. UF,URX), not its details: those name upstream addresses and socket paths.
     "no provider of %ROUTE_NAME% could serve the request (%RESPONSE_FLAGS%)"),
    (("UO", "OM"), 503, "overloaded", "%ROUTE_NAME% is at its limit of requests in flight"),
)


# What a client may claim about where it came from: on the client listener X-Forwarded-For
# carries only the address Envoy appends, and no backend reads a client's Forwarded or
# X-Real-IP as ours (issue 11, L7). Peers' are kept: a peer appends the address it saw.
CLIENT_CLAIMS = ("x-forwarded-for", "forwarded", "x-real-ip")


def json_error(status: int, code: str, message: str) -> dict[str, Any]:
    """A local reply's body in our shape (Envoy's own answers: 503, 504, 413...)."""
    return {"json_format": errors.ours(code, message), "content_type": "application/json"}


def openai_json_error(status: int, code: str, message: str) -> dict[str, Any]:
    """A local reply's body in OpenAI's shape, on /v1."""
    return {"json_format": errors.openai(status, code, message), "content_type": "application/json"}


def local_replies(max_body_bytes: int, keys: tuple[ApiKey, ...] = ()) -> dict[str, Any]:
    """Envoy's own answers in our shape, and in OpenAI's on /v1 paths."""
    return {"mappers": [*answers(max_body_bytes, keys, openai_json_error, openai=True),
                        *answers(max_body_bytes, keys, json_error)]}


def key_answers(keys: tuple[ApiKey, ...], shape: Callable[[int, str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """A key refused (401), kept from a model (403), or over its limit (429, with how long
    its bucket takes to hold a token again: each limited key has its own)."""
    # Envoy counts a route's own answer as a local reply too: a key refused for its minute's
    # use across the mesh (auth.over_limit_routes) keeps the Retry-After its route says.
    by_key = [{"filter": {"and_filter": {"filters": [status_is(429), {"header_filter": {"header": {
                   "name": auth.KEY, "string_match": {"exact": name}}}}]}},
               "headers_to_add": [{"header": {"key": "retry-after", "value": str(wait)},
                                   "append_action": "ADD_IF_ABSENT"}],
               "body_format_override": shape(*auth.over_limit(name))} for name, wait in auth.retry_after(keys)]
    return by_key + [{"filter": status_is(status), "body_format_override": shape(status, code, message)}
                     for status, code, message in (auth.UNAUTHORIZED, auth.FORBIDDEN)]


def answers(max_body_bytes: int, keys: tuple[ApiKey, ...], shape: Callable[[int, str, str], dict[str, Any]],
            openai: bool = False) -> list[dict[str, Any]]:
    mappers = [{
        "filter": {"response_flag_filter": {"flags": list(flags)}},
        "headers_to_add": [{"header": {"key": "retry-after", "value": "1"},
                            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}] + (
            [{"header": {"key": routes.UNSERVED, "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
            if code == "backend_unavailable" else []),
        "body_format_override": shape(status, code, message),
    } for flags, status, code, message in FAILURES]
    mappers += [{"filter": status_is(413), "body_format_override": shape(
                    413, "body_too_large", f"request body exceeds the limit of {max_body_bytes} bytes")},
                # A request Envoy refuses itself (an encoded slash, a NUL, a bad header).
                {"filter": status_is(400), "body_format_override": shape(
                    400, "bad_request", "Envoy refused the request: %RESPONSE_CODE_DETAILS%")},
                {"filter": status_is(431), "body_format_override": shape(
                    431, "headers_too_large", f"request headers exceed {HEADERS_KB} KiB or {HEADERS_COUNT} fields")}]
    mappers += key_answers(keys, shape)
    if openai:
        on_v1 = {"header_filter": {"header": {"name": ":path", "string_match": {"prefix": models.PREFIX}}}}
        mappers = [m | {"filter": {"and_filter": {"filters": [on_v1, m["filter"]]}}} for m in mappers]
    return mappers


def status_is(status: int) -> dict[str, Any]:
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": {
        "default_value": status, "runtime_key": f"meshworker.local_reply_{status}"}}}}


def peer_only_headers_dropped() -> dict[str, Any]:
    """What only a peer or our own filters may say (x-mesh-*), gone before the route is
    picked (an early header mutation): a client's x-mesh-model must not choose a model
    route for a body that names another, or none. A client's claims of where it came
    from go too, before Envoy appends the address that connected."""
    return {"name": "meshworker.peer_only_headers", "typed_config": typed(
        "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation", {
            "mutations": [{"remove": h} for h in (*routes.PEER_ONLY_HEADERS, routes.UNSERVED, *CLIENT_CLAIMS)]})}


def http_manager(view: MeshView, name: str, key_required: bool = False) -> dict[str, Any]:
    """`key_required`: on the client listener, whether /v1 and /service need a valid API key."""
    client = name == routes.CLIENT
    shape: dict[str, Any] = {
        "stat_prefix": name, "codec_type": "AUTO",
        "rds": {"route_config_name": name, "config_source": ADS},
        "http_filters": [
            *(auth.key_filters(view.keys, key_required) if client else []),
            # A /v1 POST's first route turns the usage filter on (models.model_read).
            *([auth.usage_filter(), *models.filters()] if client else []),
            # After the model filter has picked the model's route, whose rule it applies.
            *(auth.rbac_filters(view.keys) if client else []),
            # Off unless a route turns it on: only a body of unknown length is held (routes.py).
            {"name": routes.BUFFER_FILTER, "disabled": True, "typed_config": typed(
                "envoy.extensions.filters.http.buffer.v3.Buffer", {"max_request_bytes": view.max_body_bytes})},
            {"name": "envoy.filters.http.router", "typed_config": typed(
                "envoy.extensions.filters.http.router.v3.Router", {"suppress_envoy_headers": True})}],
        **({"early_header_mutation_extensions": [peer_only_headers_dropped()],
            "access_log": auth.access_log(view.keys)} if client else {}),
        "request_headers_timeout": REQUEST_HEADERS_TIMEOUT,
        "common_http_protocol_options": {"idle_timeout": IDLE_TIMEOUT, "max_headers_count": HEADERS_COUNT},
        "max_request_headers_kb": HEADERS_KB,
        "local_reply_config": local_replies(view.max_body_bytes, view.keys if client else ()),
        # One path for one resource: dot segments resolved and slashes merged before
        # routing, and an encoded slash (which would name another service) refused.
        "normalize_path": True, "merge_slashes": True,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        # The address that connected is appended to X-Forwarded-For at each hop, so a
        # backend sees the client and the forwarding peer.
        "use_remote_address": True,
    }
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", shape)}


def bound(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


# Without SO_REUSEPORT a second node on the same port fails to bind (a NACK naming the
# address) instead of silently sharing its clients and peers with the first.
NOT_SHARED = {"enable_reuse_port": False}


LOOPBACK = [{"address_prefix": "127.0.0.0", "prefix_len": 8}, {"address_prefix": "::1", "prefix_len": 128}]


def client_chains(view: MeshView) -> list[dict[str, Any]]:
    """One chain per kind of client: those that need a key, and those exempt from it
    (loopback clients, unless client_auth_loopback is false; everyone when client_auth
    is "open"). Envoy picks the chain by the source address, before any byte is read."""
    if view.client_auth == "open":
        return [{"filters": [http_manager(view, routes.CLIENT)]}]
    required = {"filters": [http_manager(view, routes.CLIENT, key_required=True)]}
    if not view.loopback_exempt:
        return [required]
    return [{"filter_chain_match": {"source_prefix_ranges": LOOPBACK}, "filters": [http_manager(view, routes.CLIENT)]},
            required]


def client_listener(view: MeshView) -> Listener:
    return make(Listener, {"name": routes.CLIENT, "address": bound(view.listen_host, view.client_port), **NOT_SHARED,
                           "filter_chains": client_chains(view)})


def downstream_mtls() -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
            "require_client_certificate": True, "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": NODE_CERT, "sds_config": ADS}],
                "validation_context_sds_secret_config": {"name": MESH_CA, "sds_config": ADS}}})}


def overlay_only(view: MeshView) -> dict[str, Any]:
    """In an overlay, peers reach this node over it: the peer listener serves connections made
    to the overlay address (and this node's own, on loopback) and closes any other before
    TLS begins. The socket itself stays where it is bound: Envoy cannot move a listener that
    does not share its port to another address without a gap or a refusal."""
    if not view.overlay_address:
        return {}
    own = {"address_prefix": view.overlay_address, "prefix_len": 128 if ":" in view.overlay_address else 32}
    return {"filter_chain_match": {"prefix_ranges": [own, *LOOPBACK]}}


def peer_listener(view: MeshView) -> Listener:
    return make(Listener, {"name": routes.PEER, "address": bound(view.listen_host, view.peer_port), **NOT_SHARED,
                           "filter_chains": [{**overlay_only(view), "filters": [http_manager(view, routes.PEER)],
                                              "transport_socket": downstream_mtls()}]})


def listeners(view: MeshView) -> list[Listener]:
    return [client_listener(view)] + ([peer_listener(view)] if view.tls is not None else [])
