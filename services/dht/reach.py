"""Which address to advertise when a node knows none better than what its peers see.

libp2p's identify protocol has each peer tell a node the address its connection came
from (observedAddr); a node behind no NAT, with no overlay and no configured URL, is
reached at exactly that address. Here the peers answer kademlia's `observed` RPC
(services/dht/node.py). Pure functions only.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable


def usable(peer_ip: str, seen: object) -> str | None:
    """The address a peer says it saw, in canonical form, if peers can be sent to it.

    A loopback answer is only believed from a peer on loopback itself (it says nothing
    about how a peer on another host reaches this one); unspecified, multicast and IPv6
    link-local addresses (a URL cannot carry the zone) never.
    """
    if not isinstance(seen, str):
        return None
    try:
        ip = ipaddress.ip_address(seen)
        peer = ipaddress.ip_address(peer_ip)
    except ValueError:
        return None
    ip = getattr(ip, "ipv4_mapped", None) or ip  # a dual-stack socket's ::ffff:a.b.c.d
    peer = getattr(peer, "ipv4_mapped", None) or peer
    if ip.is_unspecified or ip.is_multicast or (ip.version == 6 and ip.is_link_local):
        return None
    if ip.is_loopback and not peer.is_loopback:
        return None
    return str(ip)


def choose_observed(answers: Iterable[tuple[str, object]], current: str = "") -> str | None:
    """The address most peers see this node at; None when no answer is usable.

    answers: (the answering peer's IP, the address it says the request came from). A tie
    keeps `current` when it is among the leaders (no flapping between two networks),
    else goes to the lowest address, so the same answers always give the same choice.
    """
    counts = Counter(ip for peer, seen in answers if (ip := usable(peer, seen)) is not None)
    if not counts:
        return None
    most = max(counts.values())
    leaders = sorted((ip for ip, n in counts.items() if n == most),
                     key=lambda ip: (ipaddress.ip_address(ip).version, int(ipaddress.ip_address(ip))))
    return current if current in leaders else leaders[0]
