"""Follows the node's Envoy over its ADS stream.

Each time a (re)started Envoy has taken its listeners, their ports are read from its admin
interface and written to gateway.json (services/common/runtime_files). Each time it leaves,
supervisord is asked how it stands: any request turns supervisord's loop, which would
otherwise notice the exit only at its next one-second poll, so a killed Envoy is back that
much sooner (issue 9: back within 2 s).
"""

from __future__ import annotations

import asyncio
import logging
import xmlrpc.client
from collections.abc import Callable

from services.common import runtime_files
from services.common.config import Config
from services.common.envoy_admin import EnvoyAdmin
from services.common.supervisor import Supervisor
from services.router.ads import AdsServer
from services.router.xds import resources, routes

log = logging.getLogger(__name__)
RETRY_S = 0.2
PROGRAM = "gateway"  # Envoy's program in supervisord.conf


def ports_of(listeners: dict) -> dict[str, int]:
    """Listener name -> bound port, from Envoy's `GET /listeners?format=json`."""
    return {status["name"]: status["local_address"]["socket_address"]["port_value"]
            for status in listeners.get("listener_statuses", [])
            if "socket_address" in status.get("local_address", {})}


async def follow(cfg: Config, ads: AdsServer, on_ports: Callable[[int, int], None]) -> None:
    """`on_ports(client, peer)`: told the bound ports each time they are written."""
    supervisord = Supervisor(cfg.runtime_dir)
    admin = EnvoyAdmin(cfg.envoy_admin_socket)
    try:
        while True:
            await ads.wait_until(lambda a: a.connected and a.holds(1, resources.LISTENER), None)
            ports = ports_of(await admin.listeners() or {})
            if routes.CLIENT not in ports:
                await asyncio.sleep(RETRY_S)
                continue
            client, peer = ports[routes.CLIENT], ports.get(routes.PEER, 0)
            runtime_files.write_gateway(cfg, runtime_files.GatewayAddress(cfg.gateway_host, client, peer))
            log.info("Envoy serves clients on %s:%d and peers on port %d", cfg.gateway_host, client, peer)
            on_ports(client, peer)
            await ads.wait_until(lambda a: not a.connected, None)
            await hurry_restart(supervisord)
    finally:
        await admin.close()


async def hurry_restart(supervisord: Supervisor) -> None:
    try:
        state = await asyncio.to_thread(supervisord.state_of, PROGRAM)
    except (OSError, xmlrpc.client.Fault) as err:  # not under supervisord (tests), or stopping
        log.debug("Envoy left; supervisord not asked: %s", err)
        return
    log.info("Envoy left its ADS stream; supervisord has it %s", state)
