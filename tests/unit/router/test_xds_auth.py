"""API keys in the translation: which filter chain needs a key, each key's bucket, and
which routes a key kept to some models may take (xds/auth.py). Envoy itself runs them in
tests/integration/test_keys.py and test_xds_validate.py."""

from __future__ import annotations

import json

from services.common.keys import ApiKey
from services.router.xds import resources
from tests.unit.router.xds_fixtures import as_dict, view

CI = ApiKey("mk-000000000001", "ci", "x" * 43, requests_per_minute=120)
SMOL_ONLY = ApiKey("mk-000000000002", "smol-only", "y" * 43, models=("gpt-4o-mini",))


def client_chains(v) -> list[dict]:
    return as_dict(resources.build(v, 1).resources[resources.LISTENER]["client"])["filter_chains"]


def filters(chain: dict) -> dict[str, dict]:
    manager = chain["filters"][0]["typed_config"]
    return {f["name"]: f.get("typed_config", {}) for f in manager["http_filters"]}


def jwt_rules(chain: dict) -> list[dict]:
    return filters(chain)["envoy.filters.http.jwt_authn"]["rules"]


def test_network_clients_need_a_key_and_loopback_clients_only_may_show_one(tmp_path):
    loopback, network = client_chains(view(tmp_path, keys=(CI,)))
    ranges = loopback["filter_chain_match"]["source_prefix_ranges"]
    assert {(r["address_prefix"], r["prefix_len"]) for r in ranges} == {("127.0.0.0", 8), ("::1", 128)}
    assert "filter_chain_match" not in network  # every other source
    assert {r["match"]["prefix"] for r in jwt_rules(network)} == {"/v1/", "/service/"}  # /health, /metrics open
    assert all(r["requires"] == {"provider_name": "mesh-keys"} for r in jwt_rules(network))
    assert all("allow_missing_or_failed" in str(r["requires"]) for r in jwt_rules(loopback))


def test_without_the_loopback_exemption_or_in_open_mode_there_is_one_chain(tmp_path):
    [strict] = client_chains(view(tmp_path, loopback_exempt=False))
    assert jwt_rules(strict)[0]["requires"] == {"provider_name": "mesh-keys"}
    [open_] = client_chains(view(tmp_path, client_auth="open", keys=(CI,)))
    assert "allow_missing_or_failed" in str(jwt_rules(open_)[0]["requires"])


def test_a_filter_is_there_only_while_it_has_work(tmp_path):
    # No key in the mesh: nothing to check on loopback, and only the refusal for the network.
    loopback, network = client_chains(view(tmp_path))
    assert not {"envoy.filters.http.jwt_authn", "envoy.filters.http.local_ratelimit",
                "envoy.filters.http.rbac"} & set(filters(loopback))
    assert set(filters(network)) & {"envoy.filters.http.jwt_authn", "envoy.filters.http.local_ratelimit"} == {
        "envoy.filters.http.jwt_authn"}
    assert "access_log" not in loopback["filters"][0]["typed_config"]
    loopback, _ = client_chains(view(tmp_path, keys=(CI, SMOL_ONLY)))
    assert {"envoy.filters.http.jwt_authn", "envoy.filters.http.local_ratelimit",
            "envoy.filters.http.rbac"} <= set(filters(loopback))
    assert loopback["filters"][0]["typed_config"]["access_log"]


def test_envoy_verifies_each_key_by_its_id_and_names_it_in_a_header(tmp_path):
    provider = filters(client_chains(view(tmp_path, keys=(CI,)))[1])["envoy.filters.http.jwt_authn"]["providers"]
    jwks = json.loads(provider["mesh-keys"]["local_jwks"]["inline_string"])["keys"]
    assert (jwks[0]["kid"], jwks[0]["x"]) == ("mk-000000000001", "x" * 43)
    assert jwks[-1]["kid"] == "nobody"  # Envoy refuses an empty key set
    assert provider["mesh-keys"]["claim_to_headers"] == [{"header_name": "x-mesh-key", "claim_name": "sub"}]
    headers = {h["name"]: h.get("value_prefix") for h in provider["mesh-keys"]["from_headers"]}
    assert headers == {"authorization": "Bearer mk-", "x-api-key": "mk-"}


def test_a_limited_key_has_its_own_bucket_and_its_own_retry_after(tmp_path):
    v = view(tmp_path, keys=(CI, SMOL_ONLY))
    chain = client_chains(v)[1]
    limit = filters(chain)["envoy.filters.http.local_ratelimit"]
    [bucket] = limit["descriptors"]  # smol-only has no limit
    assert bucket["entries"] == [{"key": "key", "value": "ci"}]
    # 120 a minute: up to 120 at once, then one every half second.
    assert bucket["token_bucket"] == {"max_tokens": 120, "tokens_per_fill": 1, "fill_interval": "0.500s"}
    mappers = chain["filters"][0]["typed_config"]["local_reply_config"]["mappers"]
    waits = [m["headers_to_add"][0]["header"]["value"] for m in mappers if "rate_limit_exceeded" in json.dumps(m)]
    assert waits == ["1", "1"]  # OpenAI's shape on /v1, ours elsewhere


def test_a_key_kept_to_a_model_is_refused_other_models_and_services(tmp_path):
    v = view(tmp_path, keys=(CI, SMOL_ONLY))
    routes = as_dict(resources.build(v, 1).resources[resources.ROUTE]["client"])["virtual_hosts"][0]["routes"]
    rule = {r.get("name"): r.get("typed_per_filter_config", {}).get("envoy.filters.http.rbac")
            for r in routes if r["match"].get("headers", [{}])[0].get("name") == "x-mesh-model"}
    # smol-only may use smol (by its alias gpt-4o-mini), and no other model.
    assert rule["smol"] is None and "smol-only" in json.dumps(rule["minilm"])
    assert '"exact": "ci"' not in json.dumps(rule["minilm"])
    services = filters(client_chains(v)[1])["envoy.filters.http.rbac"]["rules"]
    assert "/service/" in json.dumps(services) and "smol-only" in json.dumps(services)


def test_a_key_past_a_limit_this_minute_is_answered_429_before_any_route(tmp_path):
    v = view(tmp_path, keys=(CI,), blocked=(("ci", 17),))
    routes = as_dict(resources.build(v, 1).resources[resources.ROUTE]["client"])["virtual_hosts"][0]["routes"]
    over = [r for r in routes if r.get("name") == "ci over its limit"]
    assert [r["match"]["prefix"] for r in over] == ["/v1/", "/"]
    assert routes.index(over[0]) <= 2  # only the body-size refusals come first
    for route in over:
        assert route["match"]["headers"] == [{"name": "x-mesh-key", "string_match": {"exact": "ci"}}]
        assert route["direct_response"]["status"] == 429
        assert {"header": {"key": "retry-after", "value": "17"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"} \
            in route["response_headers_to_add"]
    assert '"type":"invalid_request_error"' in over[0]["direct_response"]["body"]["inline_string"]  # OpenAI's on /v1
