"""Rendering nebula's config.yml and deciding how nebula takes a change (pure).

Written as JSON, which is YAML too (YAML 1.2 is a superset of JSON, and nebula's go-yaml
reads it), so no YAML emitter is needed and the file is byte-for-byte reproducible: a
re-render that changes nothing leaves nebula alone. Keys follow nebula's example config
(https://github.com/slackhq/nebula/blob/v1.6.1/examples/config.yml).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from services.nebula.authority.tokens import BASE_GROUP

HEADER = "# Rendered by meshworker's nebula-agent; edits are overwritten. JSON is valid YAML.\n"
# Changes to these keys are applied by nebula on SIGHUP (its reload callbacks: pki incl. the
# blocklist, with disconnect_invalid tearing down blocked tunnels; firewall). Anything else
# needs a restart, including a new lighthouse list: nebula reports itself to its lighthouses
# when it starts and then only every lighthouse.interval, and a restart makes a new
# lighthouse learn of us at once (tunnels are re-made in milliseconds).
RELOADABLE = frozenset({"pki", "firewall"})
MTU = 1300  # nebula's default; leaves room for its 60-odd bytes of overhead on a 1500 link


@dataclass(frozen=True)
class NodeView:
    """Everything config.yml depends on, gathered from Config and the state directory."""

    ca: str
    cert: str
    key: str
    overlay_ip: str
    listen_port: int
    gateway_port: int
    peer_port: int
    dht_port: int
    am_lighthouse: bool = False
    lighthouses: dict[str, list[str]] = field(default_factory=dict)
    blocklist: tuple[str, ...] = ()
    debug: bool = False
    tun_dev: str = ""


def tun_dev_name(listen_port: int, state_dir: str) -> str:
    """A tun name unique per node on one host (IFNAMSIZ: at most 15 characters)."""
    if listen_port:
        return f"mesh{listen_port}"
    return "mesh" + hashlib.sha256(state_dir.encode()).hexdigest()[:8]


def _port(port: int) -> int | str:
    # Port 0 means "picked at bind time": the firewall cannot name it in advance.
    return port if port else "any"


def firewall(view: NodeView) -> dict[str, Any]:
    """Outbound anything; inbound only the gateway's two listeners, clients' and peers'
    (TCP), and the DHT (UDP), from mesh members."""
    return {
        "outbound": [{"port": "any", "proto": "any", "host": "any"}],
        "inbound": [
            {"port": _port(view.gateway_port), "proto": "tcp", "group": BASE_GROUP},
            {"port": _port(view.peer_port), "proto": "tcp", "group": BASE_GROUP},
            {"port": _port(view.dht_port), "proto": "udp", "group": BASE_GROUP},
        ],
    }


def stats(view: NodeView) -> dict[str, Any]:
    if not view.listen_port:
        return {"type": "none"}
    # TCP on loopback at the number of our UDP listen port: unique per node on one host
    # without another setting (TCP and UDP ports are separate spaces).
    return {"type": "prometheus", "listen": f"127.0.0.1:{view.listen_port}", "path": "/metrics",
            "namespace": "nebula", "subsystem": "", "interval": "2s",
            "message_metrics": True, "lighthouse_metrics": True}


def config(view: NodeView) -> dict[str, Any]:
    others = {ip: addrs for ip, addrs in sorted(view.lighthouses.items()) if ip != view.overlay_ip}
    return {
        # disconnect_invalid: tear down tunnels whose certificate became blocked or expired,
        # rather than only refusing new handshakes (nebula >= 1.6).
        "pki": {"ca": view.ca, "cert": view.cert, "key": view.key,
                "blocklist": sorted(view.blocklist), "disconnect_invalid": True},
        "static_host_map": others,
        # A lighthouse must not list upstream lighthouses (nebula warns and ignores them).
        "lighthouse": {"am_lighthouse": view.am_lighthouse, "interval": 60,
                       "hosts": [] if view.am_lighthouse else sorted(others)},
        "listen": {"host": "0.0.0.0", "port": view.listen_port},
        "punchy": {"punch": True, "respond": True},
        "tun": {"disabled": False, "dev": view.tun_dev, "drop_local_broadcast": True,
                "drop_multicast": True, "mtu": MTU},
        "logging": {"level": "debug" if view.debug else "info", "format": "json"},
        "stats": stats(view),
        "firewall": firewall(view),
    }


def render(view: NodeView) -> str:
    return HEADER + json.dumps(config(view), indent=2, sort_keys=True) + "\n"


def parse(text: str) -> dict[str, Any] | None:
    """A config we rendered, or None for anything else (a hand edit, an older format)."""
    try:
        value = json.loads(text.removeprefix(HEADER))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def reload_action(old_text: str | None, new_text: str) -> str:
    """"none", "hup" (nebula reloads it in place) or "restart" (it cannot)."""
    if old_text == new_text:
        return "none"
    old = parse(old_text) if old_text is not None else None
    new = parse(new_text) or {}
    if old is None:
        return "restart"
    changed = {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)}
    return "hup" if changed <= RELOADABLE else "restart"
