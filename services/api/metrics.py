"""The node's one /metrics: the api's own families, every component's Collect, each local
backend's own /metrics, and Envoy's.

Each part is fetched on its own deadline; a part that does not answer is left out and
the rest still shows.

A backend's families are read, not copied: every sample gets a `service` label (the
node's name for that backend) and families of one name are merged into one, because two
backends of one kind (two embeddings services) serve the same families and the text
format allows one TYPE line per name ("Only one TYPE line may exist for a given metric
name", Prometheus exposition formats). The label is there even with one backend, so a
series keeps its identity when a second one is added.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence

import aiohttp
import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.api.backends import Backends
from services.common import upstream
from services.common.config import ServiceConfig
from services.common.grpcclient import HEALTH_DEADLINE_S
from services.common.rpc import metrics_pb2, metrics_pb2_grpc

# The envelope waits on a backend: embeddings answer in milliseconds, model calls in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# A backend busy with a model on the CPU answers later than a component; a scrape
# (Prometheus waits 10 s by default) still ends within about a second.
BACKEND_DEADLINE_S = 1.0
# identity: backend sessions pass bodies on as they came, and prometheus_client's own
# handlers (vLLM's, for one) gzip a page whenever the client accepts it.
BACKEND_HEADERS = {"accept": "text/plain; version=0.0.4", "accept-encoding": "identity"}
SERVICE_LABEL = "service"
# A backend's own `service` label is kept under this name, as Prometheus renames a
# scraped label that clashes with a target label (honor_labels: false).
EXPORTED_SERVICE_LABEL = "exported_service"


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meshworker_api_envelope_requests", "Envelope requests "
                                "(POST /service/{type}) the api served, by outcome",
                                ["service", "code"], registry=self.registry)
        self.latency = Histogram("meshworker_api_envelope_duration_seconds",
                                 "Time from an envelope request to its answer",
                                 ["service"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.component_up = Gauge("meshworker_component_up", "1 when the component is SERVING "
                                  "(gRPC health; Envoy: admin /ready)", ["component"], registry=self.registry)

    def observe(self, service: str, status: int, seconds: float) -> None:
        self.requests.labels(service, f"{status // 100}xx").inc()
        self.latency.labels(service).observe(seconds)


async def collect_component(channel: grpc.aio.Channel) -> str:
    try:
        reply = await metrics_pb2_grpc.MetricsStub(channel).Collect(
            metrics_pb2.CollectRequest(), timeout=HEALTH_DEADLINE_S)
    except grpc.aio.AioRpcError:
        return ""
    return reply.exposition


async def backend_page(svc: ServiceConfig, session: aiohttp.ClientSession) -> str | None:
    """The backend's GET /metrics; None when it has none (not 200) or does not answer in time."""
    try:
        async with asyncio.timeout(BACKEND_DEADLINE_S), session.get(
                upstream.base_url(svc.upstream) + "/metrics", headers={**svc.auth_headers, **BACKEND_HEADERS}
        ) as reply:
            body = await reply.read()
    except (TimeoutError, aiohttp.ClientError):
        return None
    return body.decode("utf-8", "replace") if reply.status == 200 else None


async def backend_pages(services: Sequence[ServiceConfig], backends: Backends) -> dict[str, str]:
    """Each local backend's /metrics by service name, read at once. Services that share one
    backend read it once, under the first one's name: its counts shown twice would add up
    to twice the truth."""
    first: dict[str, ServiceConfig] = {}
    for svc in services:
        first.setdefault(svc.upstream, svc)
    pages = await asyncio.gather(*(backend_page(s, backends.session(s.upstream)) for s in first.values()))
    return {s.name: page for s, page in zip(first.values(), pages, strict=True) if page is not None}


def family_key(name: str) -> str:
    """What two TYPE lines must not share: a counter is declared with and parsed without
    `_total`, so `x` (a counter) and `x_total` (say a gauge) clash."""
    return name.removesuffix("_total")


def declared(page: str) -> set[str]:
    """The family keys a text page declares (its TYPE lines)."""
    return {family_key(line.split()[2]) for line in page.splitlines()
            if line.startswith("# TYPE ") and len(line.split()) > 2}


def labelled(family: Metric, service: str) -> list[Sample]:
    """The family's samples with `service` on each."""
    samples = []
    for sample in family.samples:
        labels = dict(sample.labels)
        if SERVICE_LABEL in labels:
            labels[EXPORTED_SERVICE_LABEL] = labels.pop(SERVICE_LABEL)
        samples.append(sample._replace(labels={SERVICE_LABEL: service, **labels}))
    return samples


def merge_backends(pages: Mapping[str, str], taken: set[str]) -> list[Metric]:
    """Every backend's families, one per name, each sample labelled with its service.

    A page that is not the text format is left out whole. A family is left out when the
    page already declares its name (`taken`), or when another backend's family of that
    name is of another type (the first one read is kept): one family could not hold both.
    """
    merged: dict[str, Metric] = {}
    for service, page in pages.items():
        try:
            families = list(text_string_to_metric_families(page))
        except ValueError:
            continue
        for family in families:
            key = family_key(family.name)
            if key in taken:
                continue
            ours = merged.setdefault(key, Metric(family.name, family.documentation, family.type))
            if (ours.name, ours.type) == (family.name, family.type):
                ours.samples += labelled(family, service)
    return list(merged.values())


class Families:
    """A collector of families already made, for generate_latest to write."""

    def __init__(self, families: Iterable[Metric]):
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


async def exposition(own: ApiMetrics, channels: dict[str, grpc.aio.Channel], health: dict[str, str],
                     envoy: str, backends: Mapping[str, str]) -> str:
    """One page: ours, then each component's, each backend's (`backend_pages`), then Envoy's
    (`envoy_*` families)."""
    for component, status in health.items():
        own.component_up.labels(component).set(1.0 if status == "SERVING" else 0.0)
    parts = [generate_latest(own.registry).decode(),
             *await asyncio.gather(*(collect_component(c) for c in channels.values()))]
    taken = set().union(*map(declared, [*parts, envoy])) if backends else set()
    return "".join(parts) + generate_latest(Families(merge_backends(backends, taken))).decode() + envoy
