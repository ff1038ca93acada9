"""Where peers reach this node (services/router/address.py), and the router storing every
record again when that changes (RouterServicer.watch_node)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest
from announcer_double import CountingAnnouncer
from prometheus_client import CollectorRegistry

from services.common.config import load
from services.common.rpc import dht_pb2
from services.router import servicer as router_servicer
from services.router.address import advertised_url
from services.router.servicer import RouterServicer

pytestmark = pytest.mark.timeout(30)


def config(tmp_path, **env: str):
    return load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "s" * 32,
                 "MESHWORKER_SERVICES": "", "MESHWORKER_PEER_PORT": "8443", **env})


def test_the_overlay_comes_first_then_the_configured_url_then_what_the_peers_see(tmp_path):
    cfg = config(tmp_path)

    assert advertised_url(cfg, "10.42.0.2", 8443, "10.0.0.1") == "https://10.42.0.2:8443"
    assert advertised_url(config(tmp_path, MESHWORKER_ADVERTISE_URL="https://h:8443"), "", 8443, "10.0.0.1") \
        == "https://h:8443"
    assert advertised_url(cfg, "", 8443, "10.0.0.1") == "https://10.0.0.1:8443"
    assert advertised_url(cfg, "", 8443, "2001:db8::1") == "https://[2001:db8::1]:8443"
    assert advertised_url(cfg, "", 8443, "") == f"https://{socket.gethostname()}:8443"


def test_a_seed_names_the_address_this_host_uses_toward_it(tmp_path):
    cfg = config(tmp_path, MESHWORKER_DHT_SEEDS="127.0.0.1:8468")
    assert advertised_url(cfg, "", 8443, "10.0.0.1") == "https://127.0.0.1:8443"


def test_no_url_before_envoy_bound_the_peer_port(tmp_path):
    # A record must never say port 0 (peer_port 0: tests, several nodes on one host).
    assert advertised_url(config(tmp_path), "", 0, "10.0.0.1") is None
    assert advertised_url(config(tmp_path), "10.42.0.2", 0, "") is None


class SeenAt:
    """A Dht stub (a test double) whose Stats says where the DHT peers see this node."""

    def __init__(self, observed: str):
        self.observed = observed

    async def Stats(self, request, timeout):
        return dht_pb2.DhtStatsResponse(observed_address=self.observed)


async def test_the_first_node_of_a_mesh_is_announced_again_at_the_address_its_peers_see(tmp_path, monkeypatch):
    # No overlay, no advertise_url, no seeds: its host name, until a peer says where it sees it.
    monkeypatch.setattr(router_servicer, "NODE_CHECK_S", 0.01)
    cfg = dataclasses.replace(config(tmp_path), worker_id="first")
    cfg.runtime_dir.mkdir(parents=True)
    dht = SeenAt("")
    router = RouterServicer(cfg, CollectorRegistry(), dht, announcer := CountingAnnouncer())
    assert router.url() == f"https://{socket.gethostname()}:8443"
    task = asyncio.create_task(router.watch_node())
    try:
        await asyncio.sleep(0.05)
        assert announcer.republished == 0  # nothing changed

        dht.observed = "10.0.0.1"
        async with asyncio.timeout(5):
            while announcer.republished == 0:
                await asyncio.sleep(0.01)
        assert router.url() == "https://10.0.0.1:8443" and announcer.republished == 1
    finally:
        task.cancel()
