"""gateway.json: the ports Envoy's listeners are bound to, for the CLI, the dht and tests.

With gateway_port or peer_port 0 (tests, several nodes on one host) only Envoy knows
the real ports; each time a (re)started Envoy has taken its listeners, they are read
from its admin interface and written here atomically.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from services.common.config import Config
from services.common.envoy_admin import EnvoyAdmin
from services.common.statefile import write_atomically
from services.router.ads import AdsServer
from services.router.xds import resources, routes

log = logging.getLogger(__name__)
RETRY_S = 0.2


def ports_of(listeners: dict) -> dict[str, int]:
    """Listener name -> bound port, from Envoy's `GET /listeners?format=json`."""
    return {status["name"]: status["local_address"]["socket_address"]["port_value"]
            for status in listeners.get("listener_statuses", [])
            if "socket_address" in status.get("local_address", {})}


async def keep_written(cfg: Config, ads: AdsServer, on_ports: Callable[[int, int], None]) -> None:
    """`on_ports(client, peer)`: told the bound ports each time they are written."""
    admin = EnvoyAdmin(cfg.envoy_admin_socket)
    try:
        while True:
            await ads.wait_until(lambda a: a.connected and a.holds(1, resources.LISTENER), None)
            ports = ports_of(await admin.listeners() or {})
            if routes.CLIENT not in ports:
                await asyncio.sleep(RETRY_S)
                continue
            client, peer = ports[routes.CLIENT], ports.get(routes.PEER, 0)
            write_atomically(cfg.gateway_address_file, json.dumps(
                {"host": cfg.gateway_host, "port": client, "peer_port": peer}))
            log.info("Envoy serves clients on %s:%d and peers on port %d", cfg.gateway_host, client, peer)
            on_ports(client, peer)
            await ads.wait_until(lambda a: not a.connected, None)
    finally:
        await admin.close()
