"""The /v1 translation: which route a model name takes, and how its providers are weighed."""

from __future__ import annotations

import dataclasses
import json

from google.protobuf import json_format

from services.common.models import Model
from services.router.xds import models, resources
from services.router.xds.view import ModelProvider, ModelRoute, Peer
from tests.unit.router.xds_fixtures import BIG, MINILM, SMOL, view


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def client_routes(v) -> list[dict]:
    return as_dict(resources.build(v, 1).resources[resources.ROUTE]["client"])["virtual_hosts"][0]["routes"]


def by_model(routes: list[dict], name: str) -> dict:
    return next(r for r in routes if {"name": "x-mesh-model", "string_match": {"exact": name}}
                in r["match"].get("headers", []))


def provider(name: str, load: int, local: bool = False) -> ModelProvider:
    return ModelProvider(Peer(name, f"10.0.0.{len(name)}", 8443), "llm", load, local)


def test_a_model_only_this_node_serves_goes_straight_to_its_backend(tmp_path):
    route = by_model(client_routes(view(tmp_path)), MINILM.id)
    assert route["route"]["cluster"] == "local:echo"
    assert {"header": {"key": "authorization", "value": "Bearer k1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} \
        in route["request_headers_to_add"]  # the backend's own key, sent only to it


def test_a_model_peers_serve_too_goes_to_its_model_cluster_and_names_the_route_by_endpoint(tmp_path):
    route = by_model(client_routes(view(tmp_path)), SMOL.id)
    assert route["route"]["cluster"] == "model:smol"
    assert route["response_headers_to_add"][0]["header"]["value"] == models.ROUTE_OF_ENDPOINT
    assert "request_headers_to_add" not in route or not any(
        h["header"]["key"] == "authorization" for h in route["request_headers_to_add"])  # never to a peer


def test_a_generation_is_not_retried_after_it_was_sent_but_an_embedding_is(tmp_path):
    routes = client_routes(view(tmp_path))
    assert "5xx" not in by_model(routes, SMOL.id)["route"]["retry_policy"]["retry_on"]
    assert "5xx" in by_model(routes, MINILM.id)["route"]["retry_policy"]["retry_on"]


def test_an_alias_rewrites_header_and_body_to_its_model(tmp_path):
    routes = client_routes(view(tmp_path))
    alias = by_model(routes, "gpt-4o-mini")
    config = alias["typed_per_filter_config"][models.ALIAS_FILTER]
    assert config["request_transformation"]["body_transformation"]["body_format"]["json_format"] == {"model": "smol"}
    assert alias["route"]["cluster"] == "model:smol"
    # an alias of a model nobody serves takes no route of its own: the api answers for it
    assert not any({"name": "x-mesh-model", "string_match": {"exact": "gone"}} in r["match"].get("headers", [])
                   for r in routes)


def test_a_post_before_its_model_is_known_has_the_body_read_and_unknown_names_go_to_the_api(tmp_path):
    routes = client_routes(view(tmp_path))
    unknown, needs = [r for r in routes if r["match"].get("prefix") == models.PREFIX
                      and r.get("route", {}).get("cluster") == "api"]
    assert unknown["match"]["headers"] == [{"name": "x-mesh-model", "present_match": True}]
    assert unknown["route"]["cluster"] == "api" and unknown["route"]["internal_redirect_policy"]
    assert models.MODEL_FILTER in needs["typed_per_filter_config"] and needs["route"]["cluster"] == "api"
    assert routes.index(unknown) > routes.index(by_model(routes, SMOL.id))


def test_model_clusters_and_endpoints_exist_only_for_models_peers_serve(tmp_path):
    built = resources.build(view(tmp_path), 1).resources
    assert {"model:smol", "model:big"} <= built[resources.CLUSTER].keys()
    assert "model:minilm" not in built[resources.CLUSTER]
    without_tls = resources.build(view(tmp_path, tls=None, models=(ModelRoute(MINILM, "echo"),)), 1).resources
    assert not [n for n in without_tls[resources.CLUSTER] if n.startswith("model:")]


def test_endpoints_carry_their_route_kind_and_load_weight(tmp_path):
    assignment = as_dict(resources.build(view(tmp_path), 1).resources[resources.ENDPOINT]["model:smol"])
    [local], [peer] = (g["lb_endpoints"] for g in assignment["endpoints"])
    assert local["metadata"]["filter_metadata"]["meshworker"]["route"] == "local"
    assert peer["metadata"]["filter_metadata"]["meshworker"]["route"] == "forwarded"
    assert local["load_balancing_weight"] == 100 and peer["load_balancing_weight"] == 71


def test_the_local_node_alone_comes_first_while_it_is_not_busier():
    route = ModelRoute(SMOL, "llm", (provider("me", 20, local=True), provider("b", 20), provider("c", 50)))
    assert [[p.peer.worker_id for p in g] for g in models.provider_groups(route)] == [["me"], ["b", "c"]]


def test_a_busier_local_node_shares_with_the_others_by_weight():
    route = ModelRoute(SMOL, "llm", (provider("me", 60, local=True), provider("b", 0)))
    assert [[p.peer.worker_id for p in g] for g in models.provider_groups(route)] == [["me", "b"]]
    assert models.weight(route.providers[1]) > models.weight(route.providers[0])


def test_a_saturated_provider_serves_only_once_no_other_has_room():
    route = ModelRoute(BIG, None, (provider("b", 150), provider("c", 10)))
    assert [[p.peer.worker_id for p in g] for g in models.provider_groups(route)] == [["c"], ["b"]]
    full = ModelRoute(BIG, None, (provider("b", 200), provider("cc", 300)))
    assert [[p.peer.worker_id for p in g] for g in models.provider_groups(full)] == [["b", "cc"]]
    assert models.weight(full.providers[0]) == 33 and models.weight(full.providers[1]) == 25


def test_a_provider_at_exactly_its_capacity_is_full_but_not_saturated():
    # One request in flight at a one-at-a-time backend (often the sender's own): nobody waits.
    route = ModelRoute(BIG, None, (provider("b", 100), provider("cc", 300)))
    assert [[p.peer.worker_id for p in g] for g in models.provider_groups(route)] == [["b"], ["cc"]]
    assert models.weight(route.providers[0]) == 50


def test_the_peer_listener_serves_a_forwarded_model_only_from_its_own_backend(tmp_path):
    peer = as_dict(resources.build(view(tmp_path), 1).resources[resources.ROUTE]["peer"])["virtual_hosts"][0]["routes"]
    served = {json.dumps(r["match"]["headers"]): r["route"]["cluster"] for r in peer
              if any(h["name"] == "x-mesh-model" for h in r["match"].get("headers", []))}
    assert sorted(served.values()) == ["local:echo", "local:echo"]  # smol and minilm; big is not served here
    assert not any("big" in key for key in served)


def test_v1_errors_of_envoy_itself_are_in_openais_shape(tmp_path):
    listener = as_dict(resources.build(dataclasses.replace(view(tmp_path)), 1).resources[resources.LISTENER]["client"])
    mappers = listener["filter_chains"][0]["filters"][0]["typed_config"]["local_reply_config"]["mappers"]
    on_v1 = [m for m in mappers if "and_filter" in m["filter"]]
    assert on_v1 and all(set(m["body_format_override"]["json_format"]["error"]) == {"message", "type", "param", "code"}
                         for m in on_v1)
    assert mappers.index(on_v1[-1]) < min(mappers.index(m) for m in mappers if m not in on_v1)


def test_model_ids_never_clash_with_service_names():
    assert models.cluster_name(Model("echo").id) == "model:echo"
