"""Typed Envoy messages from plain dicts, checked against the xDS schema as they are made.

Envoy's own docs and examples write configuration as YAML; writing the same shape as a
dict keeps the translation readable, and `ParseDict` refuses any field the schema lacks,
so a typo fails in a unit test, not as a NACK at run time. The imports register every
message type an `@type` below may name.
"""

from __future__ import annotations

from typing import Any, TypeVar

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.access_loggers.grpc.v3 import als_pb2  # noqa: F401
from envoy.extensions.clusters.aggregate.v3 import cluster_pb2 as aggregate_pb2  # noqa: F401
from envoy.extensions.filters.http.buffer.v3 import buffer_pb2  # noqa: F401
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_authn_pb2  # noqa: F401
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2  # noqa: F401
from envoy.extensions.filters.http.lua.v3 import lua_pb2  # noqa: F401
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.http.transform.v3 import transform_pb2  # noqa: F401
from envoy.extensions.filters.http.upstream_codec.v3 import upstream_codec_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.http.early_header_mutation.header_mutation.v3 import header_mutation_pb2  # noqa: F401
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2  # noqa: F401
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2  # noqa: F401
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format
from google.protobuf.message import Message

Listener = listener_pb2.Listener
RouteConfiguration = route_pb2.RouteConfiguration
Cluster = cluster_pb2.Cluster
ClusterLoadAssignment = endpoint_pb2.ClusterLoadAssignment
Secret = secret_pb2.Secret

M = TypeVar("M", bound=Message)
TYPES = "type.googleapis.com/"
LUA = "envoy.extensions.filters.http.lua.v3.Lua"


def make(message_type: type[M], shape: dict[str, Any]) -> M:
    return json_format.ParseDict(shape, message_type())


def typed(type_name: str, shape: dict[str, Any] | None = None) -> dict[str, Any]:
    """An `Any` field's value: `{"@type": ..., **shape}`."""
    return {"@type": TYPES + type_name, **(shape or {})}


ADS = {"ads": {}, "resource_api_version": "V3"}  # every resource comes over the one ADS stream


def address(upstream: str) -> dict[str, Any]:
    """An Envoy address from "unix:/path" or a host and port."""
    if upstream.startswith("unix:"):
        return {"pipe": {"path": upstream.removeprefix("unix:")}}
    host, _, port = upstream.rpartition(":")
    return {"socket_address": {"address": host.strip("[]"), "port_value": int(port)}}
