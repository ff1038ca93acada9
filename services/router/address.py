"""Where this node's peers reach its peer listener: the URL every record of this node carries.

The router chooses it, from what it knows (this node's overlay address from its membership,
the port Envoy bound, the configuration) and from the dht (the address its DHT peers see
this node at, libp2p's observedAddr: services/dht/reach.py). Pure but for one connected UDP
socket, which sends nothing.
"""

from __future__ import annotations

import socket

from services.common.config import Config


def advertised_url(cfg: Config, overlay_address: str, peer_port: int, observed: str) -> str | None:
    """Over the overlay when the node is in one; else the configured URL, else the address
    this host uses toward its first seed, else the address its DHT peers see it at, else its
    host name; with the port Envoy really bound (None until it has)."""
    if overlay_address and peer_port:
        return f"https://{url_host(overlay_address)}:{peer_port}"
    if cfg.advertise_url:
        return cfg.advertise_url
    if not peer_port:
        return None
    host = url_host(observed) if observed else socket.gethostname()
    if cfg.dht_seeds:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.connect(cfg.dht_seeds[0])
                host = url_host(probe.getsockname()[0])
            except OSError:
                pass
    return f"https://{host}:{peer_port}"


def url_host(ip: str) -> str:
    """An IP address as the host of a URL (RFC 3986: an IPv6 literal goes in brackets)."""
    return f"[{ip}]" if ":" in ip else ip
