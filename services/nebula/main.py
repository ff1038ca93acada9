"""The nebula-agent process: reports on the Nebula overlay of this node.

No overlay can be configured yet, so the node works on its advertised URL and Status
says so, with the reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from services.common.config import Config
from services.common.grpcserver import ComponentServer
from services.common.rpc import nebula_pb2, nebula_pb2_grpc


def overlay_status(cfg: Config) -> nebula_pb2.StatusResponse:
    return nebula_pb2.StatusResponse(
        enabled=False,
        reason=f"no overlay configured for {cfg.worker_id}: peers reach this node on its "
               "advertised URL")


class NebulaAgentServicer(nebula_pb2_grpc.NebulaAgentServicer):
    def __init__(self, cfg: Config, registry: CollectorRegistry):
        self.cfg = cfg
        Gauge("meshworker_nebula_overlay_up", "1 when this node's overlay address is up",
              registry=registry).set_function(lambda: float(bool(overlay_status(cfg).overlay_ip)))

    async def Status(self, request, context):
        return overlay_status(self.cfg)


async def serve(cfg: Config) -> None:
    registry = CollectorRegistry()
    server = ComponentServer(cfg, "nebula-agent", registry)
    server.add(nebula_pb2_grpc.add_NebulaAgentServicer_to_server, NebulaAgentServicer(cfg, registry),
               nebula_pb2.DESCRIPTOR.services_by_name["NebulaAgent"].full_name)
    await server.start()
    await server.set_serving(True)
    await server.run_until_stopped()
