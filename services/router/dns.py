"""Providers' advertised host names resolved here: Envoy's EDS takes addresses, and a
provider without an overlay or advertise_url advertises a name (services/dht/main.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from services.router.providers import Provider

log = logging.getLogger(__name__)


async def addressed(provider: Provider) -> Provider | None:
    """The provider with its advertised host name resolved: Envoy's EDS takes addresses.
    None (and a warning naming it) when the name does not resolve here."""
    parts = urlsplit(provider.url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return provider
    except ValueError:
        pass
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, parts.port, type=socket.SOCK_STREAM)
    except OSError as err:
        log.warning("provider %s advertises %s, whose host does not resolve here (%s): not used",
                    provider.worker_id, provider.url, err)
        return None
    address = infos[0][4][0]
    netloc = f"[{address}]:{parts.port}" if ":" in address else f"{address}:{parts.port}"
    return dataclasses.replace(provider, url=parts._replace(netloc=netloc).geturl())
