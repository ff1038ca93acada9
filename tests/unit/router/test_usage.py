"""A key's use, counted from Envoy's access log entries (services/router/usage.py)."""

from __future__ import annotations

from envoy.data.accesslog.v3 import accesslog_pb2
from google.protobuf import struct_pb2
from prometheus_client import CollectorRegistry, generate_latest

from services.router.limits import Count
from services.router.usage import Usage
from services.router.xds.routes import LOOKUP_ROUTE


def entry(key: str | None, status: int, tokens: tuple[int, int] | None = None,
          route: str = "echo") -> accesslog_pb2.HTTPAccessLogEntry:
    found = accesslog_pb2.HTTPAccessLogEntry()
    found.common_properties.route_name = route
    if key is not None:
        found.request.request_headers["x-mesh-key"] = key
    found.response.response_code.value = status
    if tokens is not None:
        usage = struct_pb2.Struct()
        usage.update({"prompt_tokens": tokens[0], "completion_tokens": tokens[1]})
        found.common_properties.metadata.filter_metadata["meshworker.usage"].CopyFrom(usage)
    return found


def test_requests_errors_and_tokens_add_up_per_key():
    usage = Usage()
    for e in (entry("ci", 200, (3, 7)), entry("ci", 429), entry("ci", 200, (2, 5)), entry("other", 503),
              entry(None, 200, (9, 9))):  # no key: not counted
        usage.count(e, 100.0)
    ci = usage.by_key["ci"]
    assert (ci.requests, ci.errors, ci.prompt_tokens, ci.completion_tokens, ci.last_used_at) == (3, 1, 5, 12, 100.0)
    assert set(usage.by_key) == {"ci", "other"} and usage.by_key["other"].errors == 1


def test_a_request_sent_through_the_routes_again_after_a_lookup_counts_once():
    usage = Usage()
    for e in (entry("ci", 307, route=LOOKUP_ROUTE), entry("ci", 200),  # one request, two passes
              entry("ci", 404, route=LOOKUP_ROUTE),  # found nowhere: the api's answer is the client's
              entry("ci", 307)):  # a backend's own redirect, on the route the request ended on
        usage.count(e, 100.0)
    assert (usage.by_key["ci"].requests, usage.by_key["ci"].errors) == (3, 1)
    assert usage.in_window(1) == {"ci": Count(3, 0)}


def test_a_keys_use_this_minute_starts_again_with_the_next():
    usage = Usage()
    usage.count(entry("ci", 200, (3, 7)), 60 * 100 + 1)
    usage.count(entry("ci", 200, (1, 1)), 60 * 100 + 59)
    assert usage.in_window(100) == {"ci": Count(2, 12)}
    usage.count(entry("ci", 200, (2, 2)), 60 * 101)
    assert usage.in_window(100) == {} and usage.in_window(101) == {"ci": Count(1, 4)}


def test_each_key_is_a_label_on_metrics():
    usage, registry = Usage(), CollectorRegistry()
    registry.register(usage)
    usage.count(entry("ci", 200, (3, 7)), 1.0)
    page = generate_latest(registry).decode()
    assert 'meshworker_key_requests_total{key="ci"} 1.0' in page
    assert 'meshworker_key_tokens_total{key="ci",kind="completion"} 7.0' in page
