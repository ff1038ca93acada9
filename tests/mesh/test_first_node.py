"""The first node of a mesh, started as a new user would: no seeds, no overlay, no
MESHWORKER_ADVERTISE_URL. It learns from its DHT peers the address they see it at
(services/dht: rpc_observed) and advertises that, so a request for its service made at
another node is forwarded to it instead of to its host name, which no peer resolves.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from meshtest import wait_for
from netns import Lab

pytestmark = pytest.mark.timeout(180)
SECRET = "first-node-test-secret-0123"
TTL_S = 6
ECHO = Path(__file__).parent.parent / "echo_backend.py"
COMMON = {"MESHWORKER_MESH_SECRET": SECRET, "MESHWORKER_GATEWAY_PORT": "8000", "MESHWORKER_PEER_PORT": "8443",
          "MESHWORKER_DHT_PORT": "8468", "MESHWORKER_ANNOUNCE_TTL_S": str(TTL_S),
          "MESHWORKER_HEALTH_INTERVAL_S": "0.5"}


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


def provider_urls(node, service: str) -> list[str]:
    reply = node.get("/mesh/services")
    if reply.status != 200:
        return []
    return sorted(p["url"] for view in reply.json()["services"] if view["name"] == service
                  for p in view["providers"])


def test_the_first_node_is_reached_at_the_address_its_peers_see(lab, start_node, monkeypatch):
    monkeypatch.delenv("MESHWORKER_ADVERTISE_URL", raising=False)
    a, b = lab.add_host("a"), lab.add_host("b")
    echo = f'[service.echo]\nurl = "http://127.0.0.1:9100"\ncommand = "{sys.executable} {ECHO} 9100 echo"\n'
    first = start_node('services = ["echo"]\n' + echo, host=a, MESHWORKER_WORKER_ID="first",
                       MESHWORKER_DHT_SEEDS="", **COMMON)
    second = start_node("services = []\n", host=b, MESHWORKER_WORKER_ID="second",
                        MESHWORKER_DHT_SEEDS=f"{a.address}:8468", **COMMON)

    # Within one TTL of the second node's arrival the first re-announces at its bridge address.
    wait_for(lambda: provider_urls(second, "echo") == [f"https://{a.address}:8443"], TTL_S + 5,
             "the first node's record to carry the address its peer sees")
    reply = second.post_json("/service/echo", {"n": 1})

    assert reply.status == 200, reply.body
    assert reply.json()["data"] == {"name": "echo", "echo": {"n": 1}}
    assert (reply.headers["X-Mesh-Route"], reply.headers["X-Mesh-Worker"]) == ("forwarded", "first")
    assert first.get("/stats").json()["routing"]["local_requests"] >= 1
    # Both nodes hold one mesh's secret: neither has records it could not verify (ListPeers.unverified,
    # passed through by the api as JSON).
    assert second.get("/mesh/peers").json()["unverified"] == []
