"""Envoy's bootstrap for one node: who it is, where its admin and its control plane are.

Everything else (listeners, routes, clusters, endpoints, secrets) comes from the router
over one ADS stream, so a restarted Envoy asks the router and has its whole
configuration again within a second. The admin interface is a unix socket of mode 0600:
it can drain listeners and dump secrets, so it is never on TCP.
"""

from __future__ import annotations

from typing import Any

from services.common.config import Config

XDS_CLUSTER = "xds"
# Connections beyond this are refused at accept, so a flood of idle connections cannot
# take every file descriptor (Envoy's overload manager; it warns when none is set).
MAX_DOWNSTREAM_CONNECTIONS = 20_000
ADS = {"ads": {}, "resource_api_version": "V3"}
ADMIN_MODE = 0o600


def control_plane_address(cfg: Config) -> dict[str, Any]:
    return {"pipe": {"path": cfg.grpc_target("router").removeprefix("unix:")}}


def xds_cluster(cfg: Config) -> dict[str, Any]:
    """The router's gRPC server (HTTP/2), reconnected to quickly after it restarts."""
    return {
        "name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}}},
        "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": control_plane_address(cfg)}}]}]},
    }


def max_connections(open_files: int) -> int:
    """The cap on client connections where Envoy may hold `open_files` descriptors: half of
    them, since each client may hold a backend connection too and Envoy needs some of its
    own. A cap at the limit itself bites only once accept() already fails (issue 11, M1:
    20,600 slowloris connections took every descriptor of the old gateway)."""
    return min(MAX_DOWNSTREAM_CONNECTIONS, open_files // 2)


def bootstrap(cfg: Config, open_files: int) -> dict[str, Any]:
    return {
        "node": {"id": cfg.worker_id, "cluster": "meshworker"},
        "admin": {"address": {"pipe": {"path": str(cfg.envoy_admin_socket), "mode": ADMIN_MODE}}},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "set_node_on_first_message_only": True,
                           "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER},
                                              "retry_policy": {"retry_back_off": {
                                                  "base_interval": "0.1s", "max_interval": "1s"}}}]},
            "lds_config": ADS, "cds_config": ADS,
        },
        "static_resources": {"clusters": [xds_cluster(cfg)]},
        "overload_manager": {"resource_monitors": [{
            "name": "envoy.resource_monitors.global_downstream_max_connections", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3."
                         "DownstreamConnectionsConfig",
                "max_active_downstream_connections": max_connections(open_files)}}]},
    }


def command(cfg: Config, envoy: str, config_path: str) -> list[str]:
    # No hot restart: supervisord restarts Envoy, and several nodes share a test host.
    return [envoy, "-c", config_path, "--concurrency", str(cfg.gateway_workers),
            "--disable-hot-restart", "--log-level", "warning" if cfg.log_level != "DEBUG" else "debug",
            "--log-format", "gateway         | %Y-%m-%d %T.%e %l envoy %n - %v"]
