"""The mesh's models as routes, from this node's offers and its peers' catalog records."""

from __future__ import annotations

from services.common.models import Model, Offer
from services.router import catalog
from services.router.providers import Provider
from services.router.xds.view import Peer

SMOL, MINILM = Model("smol", "chat", 8192), Model("minilm", "embedding", 256)
ME = Peer("me", "127.0.0.1", 8443)


def record(worker: str, url: str, *offers: tuple[Model, str, int]) -> Provider:
    return Provider(worker, url, 0.0, 1e12, offers=tuple(Offer(m, worker, s, load) for m, s, load in offers))


def test_a_peers_catalog_becomes_its_offers_with_where_to_reach_it():
    found = catalog.remote_offers([record("b", "https://10.0.0.2:8443", (SMOL, "llm", 30)),
                                   record("c", "http://nope", (MINILM, "emb", 0))])
    assert found == [(Peer("b", "10.0.0.2", 8443), Offer(SMOL, "b", "llm", 30))]  # c has no peer listener URL


def test_a_model_served_here_and_by_a_peer_lists_this_node_first():
    remote = catalog.remote_offers([record("b", "https://10.0.0.2:8443", (SMOL, "llm", 30))])
    [route] = catalog.model_routes([Offer(SMOL, "me", "llm-inference", 0)], remote, ME)
    assert route.local_service == "llm-inference"
    assert [(p.peer.worker_id, p.local, p.load_percent) for p in route.providers] == [("me", True, 0), ("b", False, 30)]


def test_a_model_served_only_here_has_no_providers_to_balance():
    [route] = catalog.model_routes([Offer(MINILM, "me", "emb", 0)], [], ME)
    assert route.providers == () and route.local_service == "emb"


def test_before_envoy_bound_its_peer_port_a_local_model_is_served_only_here():
    remote = catalog.remote_offers([record("b", "https://10.0.0.2:8443", (SMOL, "llm", 30))])
    [route] = catalog.model_routes([Offer(SMOL, "me", "llm", 0)], remote, None)
    assert route.providers == ()


def test_a_model_only_peers_serve_is_routed_to_them():
    remote = catalog.remote_offers([record("b", "https://10.0.0.2:8443", (SMOL, "llm", 30)),
                                    record("c", "https://10.0.0.3:8443", (SMOL, "vllm", 0), (MINILM, "emb", 0))])
    routes = {r.model.id: r for r in catalog.model_routes([], remote, ME)}
    assert routes.keys() == {"smol", "minilm"} and routes["smol"].local_service is None
    assert [p.peer.worker_id for p in routes["smol"].providers] == ["b", "c"]
    assert [p.service for p in routes["smol"].providers] == ["llm", "vllm"]


def test_a_model_only_a_failing_local_backend_serves_keeps_its_route_here():
    [route] = catalog.model_routes([], [], ME, down=[Offer(SMOL, "me", "llm", 0)])
    assert route.local_service == "llm" and route.providers == ()  # Envoy answers 503, not 404


def test_a_model_a_peer_serves_while_the_local_backend_fails_goes_to_the_peer():
    remote = catalog.remote_offers([record("b", "https://10.0.0.2:8443", (SMOL, "llm", 30))])
    [route] = catalog.model_routes([], remote, ME, down=[Offer(SMOL, "me", "llm", 0)])
    assert route.local_service is None and [p.peer.worker_id for p in route.providers] == ["b"]


def test_the_catalog_is_read_again_before_a_records_life_runs_out():
    long, short = Provider("b", "u", 0.0, 100.0), Provider("c", "u", 0.0, 4.0)
    assert catalog.next_read_in([long], 0.0, 5.0) == 5.0
    assert catalog.next_read_in([long, short], 0.0, 5.0) == 2.0  # half of c's 4 s left
    assert catalog.next_read_in([Provider("d", "u", 0.0, 0.1)], 0.0, 5.0) == catalog.MIN_READ_INTERVAL_S
    assert catalog.next_read_in([Provider("e", "u", 0.0, -1.0)], 0.0, 5.0) == 5.0  # expired: not waited on
