"""The pure translation: which routes, clusters and secrets a mesh view becomes."""

from __future__ import annotations

import dataclasses
import json

from google.protobuf import json_format

from services.router.xds import clusters, resources
from services.router.xds.routes import LIMIT_FILTER, LOOKUP_ROUTE
from services.router.xds.view import LocalService, MeshView, Peer
from tests.unit.router.xds_fixtures import view


def as_dict(message) -> dict:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def client_routes(v: MeshView) -> list[dict]:
    config = as_dict(resources.build(v, 1).resources[resources.ROUTE]["client"])
    return config["virtual_hosts"][0]["routes"]


def peer_routes(v: MeshView) -> list[dict]:
    config = as_dict(resources.build(v, 1).resources[resources.ROUTE]["peer"])
    return config["virtual_hosts"][0]["routes"]


def matching(routes: list[dict], path: str | None = None, prefix: str | None = None) -> list[dict]:
    return [r for r in routes if (path and r["match"].get("path") == path)
            or (prefix and r["match"].get("prefix") == prefix)]


def post_route(routes: list[dict], name: str) -> dict:
    return next(r for r in matching(routes, path=f"/service/{name}")
                if any(h["name"] == ":method" for h in r["match"].get("headers", [])))


def test_a_healthy_local_service_is_wrapped_by_the_api_here(tmp_path):
    routes = client_routes(view(tmp_path))
    assert post_route(routes, "echo")["route"]["cluster"] == clusters.API
    below = matching(routes, prefix="/service/echo/")[0]["route"]
    assert below["cluster"] == "service:echo"  # local first, then the peers (aggregate)
    assert below["prefix_rewrite"] == "/"


def test_an_unhealthy_local_service_with_providers_is_wrapped_by_a_peer(tmp_path):
    v = view(tmp_path)
    v = dataclasses.replace(v, local=(LocalService(v.local[0].config, False), v.local[1]))
    envelope = post_route(client_routes(v), "echo")
    assert envelope["route"]["cluster"] == "remote:echo"
    assert {h["header"]["key"] for h in envelope["request_headers_to_add"]} == {"x-mesh-service", "x-mesh-envelope"}


def test_an_unhealthy_local_service_without_providers_stays_local(tmp_path):
    routes = client_routes(view(tmp_path))
    assert post_route(routes, "web")["route"]["cluster"] == clusters.API  # the api answers 503
    assert matching(routes, prefix="/service/web/")[0]["route"]["cluster"] == "local:web"


def test_a_remote_only_service_goes_to_its_peers_with_its_name(tmp_path):
    routes = client_routes(view(tmp_path))
    below = matching(routes, prefix="/service/ocr/")[0]
    assert below["route"]["cluster"] == "remote:ocr"
    assert {"key": "x-mesh-service", "value": "ocr"} in [h["header"] for h in below["request_headers_to_add"]]
    assert not any(c.name == "local:ocr" for c in clusters.clusters(view(tmp_path)))


def test_retries_after_sending_only_for_idempotent_services(tmp_path):
    routes = client_routes(view(tmp_path))
    echo = matching(routes, prefix="/service/echo/")[0]["route"]["retry_policy"]["retry_on"]
    ocr = matching(routes, prefix="/service/ocr/")[0]["route"]["retry_policy"]["retry_on"]
    assert "5xx" in echo.split(",") and "reset" in echo.split(",")
    assert ocr.split(",") == ["connect-failure", "reset-before-request", "retriable-headers"]
    unserved = matching(routes, prefix="/service/ocr/")[0]["route"]["retry_policy"]["retriable_headers"]
    assert unserved == [{"name": "x-mesh-unserved", "present_match": True}]


def test_the_service_timeout_is_the_route_timeout(tmp_path):
    assert matching(client_routes(view(tmp_path)), prefix="/service/web/")[0]["route"]["timeout"] == "5s"


def test_an_unknown_name_goes_to_the_api_which_may_redirect_once(tmp_path):
    routes = client_routes(view(tmp_path))
    lookup = matching(routes, prefix="/service/")[0]["route"]
    assert lookup["cluster"] == clusters.API
    assert lookup["internal_redirect_policy"] == {"max_internal_redirects": 1, "redirect_response_codes": [307]}
    # the request passes the filters again on the route it is redirected to: only there
    # does it take a token from its key's bucket
    assert matching(routes, prefix="/service/")[0]["name"] == LOOKUP_ROUTE
    assert matching(routes, prefix="/service/")[0]["typed_per_filter_config"][LIMIT_FILTER]["disabled"] is True
    assert routes.index(matching(routes, prefix="/service/")[0]) > routes.index(matching(
        routes, prefix="/service/ocr/")[0])


def test_a_declared_body_over_the_limit_is_refused_first(tmp_path):
    first = client_routes(view(tmp_path))[0]
    assert first["direct_response"]["status"] == 413
    assert first["match"]["headers"][0]["range_match"]["start"] == "1001"


def http_manager(v: MeshView, listener: str) -> dict:
    found = as_dict(resources.build(v, 1).resources[resources.LISTENER][listener])
    return found["filter_chains"][0]["filters"][0]["typed_config"]


def test_clients_cannot_set_peer_headers_before_a_route_is_picked(tmp_path):
    [early] = http_manager(view(tmp_path), "client")["early_header_mutation_extensions"]
    removed = {m["remove"] for m in early["typed_config"]["mutations"]}
    assert removed == {"x-mesh-service", "x-mesh-envelope", "x-mesh-worker", "x-mesh-route", "x-mesh-model",
                       "x-mesh-key", "x-mesh-unserved", "x-forwarded-for", "forwarded", "x-real-ip"}
    # a peer's own headers name the service or model it forwards: kept on the peer listener
    assert "early_header_mutation_extensions" not in http_manager(view(tmp_path), "peer")


def test_the_peer_listener_routes_only_to_local_backends(tmp_path):
    routes = peer_routes(view(tmp_path))
    targets = {r["route"]["cluster"] for r in routes if "route" in r}
    assert targets == {"api", "local:echo", "local:web"}
    assert routes[-1]["direct_response"]["status"] == 404  # anything else: not hosted here


def test_in_an_overlay_the_peer_listener_serves_connections_to_the_overlay_address_alone(tmp_path):
    def chain(v: MeshView) -> dict:
        [listener] = [as_dict(x) for x in resources.build(v, 1).resources[resources.LISTENER].values()
                      if x.name == "peer"]
        [only] = listener["filter_chains"]  # a connection no chain matches is closed before TLS
        return only

    assert "filter_chain_match" not in chain(view(tmp_path))  # no overlay: any address of the host
    ranges = chain(view(tmp_path, overlay_address="10.42.0.2"))["filter_chain_match"]["prefix_ranges"]
    assert {"address_prefix": "10.42.0.2", "prefix_len": 32} in ranges  # not the underlay's
    assert {"address_prefix": "127.0.0.0", "prefix_len": 8} in ranges  # this node's own model routes


def test_local_backends_get_their_api_key_and_peers_do_not(tmp_path):
    routes = client_routes(view(tmp_path))
    added = [h["header"] for h in matching(routes, prefix="/service/echo/")[0]["request_headers_to_add"]]
    assert {"key": "authorization", "value": "Bearer k1"} in added
    remote = [h["header"] for h in matching(routes, prefix="/service/ocr/")[0]["request_headers_to_add"]]
    assert not any(h["key"] == "authorization" for h in remote)


def test_without_credentials_there_is_no_peer_listener_and_no_forwarding(tmp_path):
    snapshot = resources.build(view(tmp_path, tls=None), 1)
    assert list(snapshot.resources[resources.LISTENER]) == ["client"]
    assert not snapshot.resources[resources.ENDPOINT] and not snapshot.resources[resources.SECRET]
    assert not any(n.startswith(("remote:", "service:")) for n in snapshot.resources[resources.CLUSTER])


def test_remote_endpoints_name_their_workers(tmp_path):
    assignment = as_dict(resources.build(view(tmp_path), 1).resources[resources.ENDPOINT]["remote:ocr"])
    hosts = [e["endpoint"] for e in assignment["endpoints"][0]["lb_endpoints"]]
    assert [(h["hostname"], h["address"]["socket_address"]["address"]) for h in hosts] == [
        ("node2", "10.0.0.2"), ("node3", "10.0.0.3")]


def test_a_local_backend_by_host_name_is_resolved_by_envoy(tmp_path):
    web = as_dict(next(c for c in clusters.clusters(view(tmp_path)) if c.name == "local:web"))
    assert web["type"] == "STRICT_DNS"
    assert web["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "localhost", "port_value": 9000}}


def test_peer_urls_other_than_https_are_not_peers():
    assert Peer.from_url("n2", "https://10.0.0.2:8443") == Peer("n2", "10.0.0.2", 8443)
    assert Peer.from_url("n2", "http://10.0.0.2:8000") is None
    assert Peer.from_url("n2", "https://10.0.0.2") is None


def test_each_version_is_the_snapshot_version(tmp_path):
    assert resources.build(view(tmp_path), 7).version == 7


def test_an_overlays_revocation_list_reaches_envoy_with_the_mesh_ca(tmp_path):
    v = view(tmp_path)
    assert "crl" not in as_dict(resources.build(v, 1).resources[resources.SECRET]["mesh-ca"])["validation_context"]
    revoking = dataclasses.replace(v, tls=dataclasses.replace(v.tls, revocation_list_pem=b"a CRL"))
    validation = as_dict(resources.build(revoking, 1).resources[resources.SECRET]["mesh-ca"])["validation_context"]
    assert validation["crl"] == {"inline_bytes": "YSBDUkw="}


def test_a_body_of_unknown_length_is_held_to_the_limit_and_a_declared_one_streams(tmp_path):
    routes = matching(client_routes(view(tmp_path)), prefix="/service/echo/")
    held, streamed = routes
    assert {"name": "content-length", "present_match": False} in held["match"]["headers"]
    buffer = held["typed_per_filter_config"]["envoy.filters.http.buffer"]
    assert buffer["buffer"]["max_request_bytes"] == 1000
    assert "typed_per_filter_config" not in streamed
    assert held["route"] == streamed["route"]


def test_routes_are_named_after_their_service_for_envoys_own_error_messages(tmp_path):
    routes = client_routes(view(tmp_path))
    assert {r.get("name") for r in matching(routes, prefix="/service/ocr/")} == {"ocr"}
    listener = as_dict(resources.build(view(tmp_path), 1).resources[resources.LISTENER]["client"])
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    mappers = manager["local_reply_config"]["mappers"]
    timeout = next(m for m in mappers if m.get("filter", {}).get("response_flag_filter", {}).get("flags") == ["UT"])
    assert timeout["body_format_override"]["json_format"]["error"] == {
        "code": "backend_timeout", "message": "%ROUTE_NAME% did not answer within its timeout"}
    unavailable = next(m for m in mappers if "UF" in m.get("filter", {}).get("response_flag_filter", {}).get(
        "flags", []))
    assert {"key": "x-mesh-unserved", "value": "1"} in [h["header"] for h in unavailable["headers_to_add"]]
    assert manager["normalize_path"] and manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"


def test_a_dropped_cluster_stays_until_the_routes_that_named_it_are_gone(tmp_path):
    before = resources.build(view(tmp_path), 1)
    after = resources.build(view(tmp_path, remote=()), 2)
    assert after.drops_clusters_of(before) and not before.drops_clusters_of(before)
    bridge = after.keeping_clusters_of(before)
    assert bridge.version == 2
    assert bridge.resources[resources.ROUTE] == after.resources[resources.ROUTE]  # the new routes
    assert {"remote:ocr", "service:echo"} <= set(bridge.resources[resources.CLUSTER])  # the old clusters
    assert "remote:ocr" in bridge.resources[resources.ENDPOINT]


def test_listeners_are_not_shared_with_another_process_on_the_same_port(tmp_path):
    for listener in resources.build(view(tmp_path), 1).resources[resources.LISTENER].values():
        assert listener.enable_reuse_port.value is False and listener.HasField("enable_reuse_port")


def test_the_first_request_for_a_service_may_be_replayed_whole_and_retries_have_room(tmp_path):
    lookup = matching(client_routes(view(tmp_path)), prefix="/service/")[0]
    assert int(lookup["request_body_buffer_limit"]) == 1000  # max_body_bytes
    remote = as_dict(next(c for c in clusters.clusters(view(tmp_path)) if c.name == "remote:ocr"))
    assert remote["circuit_breakers"]["thresholds"][0]["retry_budget"]["min_retry_concurrency"] == 32


def test_peers_are_checked_by_connecting_so_a_dead_one_stays_out(tmp_path):
    remote = as_dict(next(c for c in clusters.clusters(view(tmp_path)) if c.name == "remote:ocr"))
    assert remote["health_checks"][0]["tcp_health_check"] == {}
    assert remote["outlier_detection"]["consecutive_local_origin_failure"] == 2


def test_envoys_own_503_names_the_route_but_no_upstream_address(tmp_path):
    # The details of a failed connection name the upstream's address or socket path.
    manager = http_manager(view(tmp_path), "client")
    unavailable = [m for m in manager["local_reply_config"]["mappers"]
                   if m["body_format_override"]["json_format"]["error"]["code"] == "backend_unavailable"]
    assert unavailable and all("%RESPONSE_CODE_DETAILS%" not in json.dumps(m) for m in unavailable)
    # every route that can fail upstream is named: "%ROUTE_NAME%" is never "-"
    assert all(r.get("name") for r in client_routes(view(tmp_path)) if "route" in r)


def test_a_backend_gets_a_second_request_on_a_connection_only_when_its_service_says_it_may(tmp_path):
    # echo (fixtures): a user service, so one request per connection; web says it reads every body.
    local = view(tmp_path).local
    web = dataclasses.replace(local[1], config=dataclasses.replace(local[1].config, reuse_connections=True))
    found = as_dict_clusters(view(tmp_path, local=(local[0], web)))
    options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    echo_options = found["local:echo"]["typed_extension_protocol_options"][options]
    assert echo_options["common_http_protocol_options"]["max_requests_per_connection"] == 1
    assert "typed_extension_protocol_options" not in found["local:web"]


def as_dict_clusters(v: MeshView) -> dict[str, dict]:
    return {name: as_dict(c) for name, c in resources.build(v, 1).resources[resources.CLUSTER].items()}
