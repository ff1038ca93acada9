"""Listeners: `client` on the gateway port, `peer` (mTLS) on the peer port.

The peer listener requires a client certificate signed by the mesh CA that names a
member of this mesh (SPIFFE URI SAN prefix, in the `mesh-ca` secret).
"""

from __future__ import annotations

from typing import Any

from services.router.xds import routes
from services.router.xds.clusters import MESH_CA, NODE_CERT
from services.router.xds.typed import ADS, Listener, make, typed
from services.router.xds.view import MeshView

# A client has this long to send its request headers (slowloris), and an idle keep-alive
# connection is closed after IDLE_TIMEOUT.
REQUEST_HEADERS_TIMEOUT, IDLE_TIMEOUT = "10s", "300s"
# Answers Envoy makes itself when a provider fails (no healthy host, connect failure,
# overflow, timeout, reset): in our JSON error shape, naming Envoy's reason, with a
# Retry-After. Our own direct responses carry no such flag and stay as they are.
PROVIDER_FAILURES = ("UH", "UF", "UO", "URX", "NC", "UT", "UC", "UPE", "OM")


def provider_failure_json() -> dict[str, Any]:
    return {"mappers": [{
        "filter": {"response_flag_filter": {"flags": list(PROVIDER_FAILURES)}},
        "headers_to_add": [{"header": {"key": "retry-after", "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}],
        "body_format_override": {"json_format": {"error": {
            "code": "%RESPONSE_CODE_DETAILS%", "message": "%LOCAL_REPLY_BODY%"}},
            "content_type": "application/json"},
    }]}


def http_manager(name: str, trusted_client: bool) -> dict[str, Any]:
    shape: dict[str, Any] = {
        "stat_prefix": name, "codec_type": "AUTO",
        "rds": {"route_config_name": name, "config_source": ADS},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": typed(
            "envoy.extensions.filters.http.router.v3.Router", {"suppress_envoy_headers": True})}],
        "request_headers_timeout": REQUEST_HEADERS_TIMEOUT,
        "common_http_protocol_options": {"idle_timeout": IDLE_TIMEOUT},
        "local_reply_config": provider_failure_json(),
    }
    if trusted_client:  # the address the client connected from is the one logged and forwarded
        shape["use_remote_address"] = True
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", shape)}


def bound(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def client_listener(view: MeshView) -> Listener:
    return make(Listener, {"name": routes.CLIENT, "address": bound(view.listen_host, view.client_port),
                           "filter_chains": [{"filters": [http_manager(routes.CLIENT, True)]}]})


def downstream_mtls() -> dict[str, Any]:
    return {"name": "envoy.transport_sockets.tls", "typed_config": typed(
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
            "require_client_certificate": True, "common_tls_context": {
                "tls_certificate_sds_secret_configs": [{"name": NODE_CERT, "sds_config": ADS}],
                "validation_context_sds_secret_config": {"name": MESH_CA, "sds_config": ADS}}})}


def peer_listener(view: MeshView) -> Listener:
    return make(Listener, {"name": routes.PEER, "address": bound(view.listen_host, view.peer_port),
                           "filter_chains": [{"filters": [http_manager(routes.PEER, False)],
                                              "transport_socket": downstream_mtls()}]})


def listeners(view: MeshView) -> list[Listener]:
    return [client_listener(view)] + ([peer_listener(view)] if view.tls is not None else [])
