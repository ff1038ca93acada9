"""Channels to the node's components, and the health check every caller uses.

Every call made through these helpers carries a deadline: a component that hangs must
cost its caller a bounded wait, never a stuck request.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import Config

DEADLINE_S = 2.0
HEALTH_DEADLINE_S = 0.5


def channel(cfg: Config, component: str) -> grpc.aio.Channel:
    # A component restarted by supervisord must be reachable again quickly, so keep the
    # reconnect backoff short (gRPC's default grows to two minutes).
    return grpc.aio.insecure_channel(cfg.grpc_target(component), options=[
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ])


async def health_status(chan: grpc.aio.Channel, timeout: float = HEALTH_DEADLINE_S) -> str:
    """SERVING, NOT_SERVING, or UNREACHABLE when the component does not answer in time."""
    try:
        reply = await health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout)
    except grpc.aio.AioRpcError:
        return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
