"""Each API key's use of this node: requests, errors and tokens, from Envoy's access log.

Envoy streams an entry for every request that carried a verified key once it is
answered (gRPC ALS, xds/auth.access_log), with the tokens its usage filter read from
the answer. Nothing here is on a request's path. Counted since the router started, on
/metrics (label `key`: the key's name, never its secret) and in `meshworker keys list`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from services.router import limits
from services.router.limits import Count
from services.router.xds.auth import KEY, USAGE
from services.router.xds.routes import LOOKUP_ROUTE


@dataclass
class KeyUse:
    requests: int = 0
    errors: int = 0  # answered 400 or above (refused by a rule, over a limit, or failed)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_used_at: float = 0.0


class Usage(Collector):
    def __init__(self) -> None:
        self.by_key: dict[str, KeyUse] = {}
        self.minutes: dict[str, tuple[int, Count]] = {}  # each key's use in its last minute here

    def in_window(self, window: int) -> dict[str, Count]:
        """Each key's use here in `window` (limits.window_of)."""
        return {name: count for name, (w, count) in self.minutes.items() if w == window}

    def count(self, entry: accesslog_pb2.HTTPAccessLogEntry, now: float) -> None:
        name = entry.request.request_headers.get(KEY)
        if not name or redirected(entry):
            return
        use = self.by_key.setdefault(name, KeyUse())
        use.requests += 1
        use.errors += entry.response.response_code.value >= 400
        tokens = entry.common_properties.metadata.filter_metadata.get(USAGE)
        prompt = int(tokens.fields["prompt_tokens"].number_value) if tokens is not None else 0
        completion = int(tokens.fields["completion_tokens"].number_value) if tokens is not None else 0
        use.prompt_tokens += prompt
        use.completion_tokens += completion
        use.last_used_at = now
        window, count = self.minutes.get(name, (limits.window_of(now), Count()))
        if window != limits.window_of(now):
            window, count = limits.window_of(now), Count()
        self.minutes[name] = (window, count + Count(1, prompt + completion))

    def collect(self) -> Iterator[Metric]:
        if not self.by_key:  # a family without samples says nothing (and none is made up)
            return
        requests = CounterMetricFamily("meshworker_key_requests", "Requests made with each API key here",
                                       labels=["key"])
        errors = CounterMetricFamily("meshworker_key_errors", "Requests with each API key answered 400 or above",
                                     labels=["key"])
        tokens = CounterMetricFamily("meshworker_key_tokens", "Tokens of answers to each API key, by kind",
                                     labels=["key", "kind"])
        for name, use in sorted(self.by_key.items()):
            requests.add_metric([name], use.requests)
            errors.add_metric([name], use.errors)
            tokens.add_metric([name, "prompt"], use.prompt_tokens)
            tokens.add_metric([name, "completion"], use.completion_tokens)
        yield from (requests, errors, tokens)


def redirected(entry: accesslog_pb2.HTTPAccessLogEntry) -> bool:
    """The first pass of a request Envoy sent through its routes again after a lookup
    (routes.api_lookup): counted once, where it ends."""
    return entry.common_properties.route_name == LOOKUP_ROUTE and entry.response.response_code.value == 307


class AccessLog(als_pb2_grpc.AccessLogServiceServicer):
    """Envoy's access log stream: what it says is counted as it arrives."""

    def __init__(self, usage: Usage):
        self.usage = usage

    async def StreamAccessLogs(self, request_iterator, context):
        async for message in request_iterator:
            for entry in message.http_logs.log_entry:
                self.usage.count(entry, time.time())
        return als_pb2.StreamAccessLogsResponse()
