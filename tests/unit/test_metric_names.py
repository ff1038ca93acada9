"""Prometheus naming rules for every component's registry (they are concatenated into one /metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from services.api.metrics import ApiMetrics
from services.common.config import load
from services.dht.main import DhtServicer, Overlay
from services.dht.node import DhtNode, Signer
from services.identity.node_key import NodeIdentity
from services.identity.trust import mesh_trust
from services.nebula.agent.main import NebulaAgentServicer
from services.router.servicer import RouterServicer

ALLOWED_LABELS = {"service", "route", "code", "component", "result", "gpu", "model", "endpoint"}
STRUCTURAL_LABELS = {"le"}  # added by prometheus_client to histogram buckets
NON_BASE_UNITS = {"ms", "milliseconds", "us", "microseconds", "ns", "nanoseconds", "minutes", "hours",
                  "kb", "mb", "gb", "kib", "mib", "gib", "kilobytes", "megabytes", "percent"}


@pytest.fixture
async def registries(tmp_path) -> AsyncIterator[dict[str, CollectorRegistry]]:
    """Each component's registry built as its main.py does, with one sample in every labelled family."""
    cfg = load({"MESHWORKER_STATE_DIR": str(tmp_path), "MESHWORKER_MESH_SECRET": "x" * 32})
    # Started (UDP on 127.0.0.1, any port): the dht gauges read the live routing table.
    signer = Signer(NodeIdentity.load_or_create(cfg.state_dir), mesh_trust(cfg))
    node = DhtNode(cfg.worker_id, 60, signer)
    await node.start("127.0.0.1", 0, [])
    api = ApiMetrics()
    api.observe("vision-ocr", 200, 0.01)
    api.component_up.labels("router").set(1)
    dht, router, nebula = CollectorRegistry(), CollectorRegistry(), CollectorRegistry()
    DhtServicer(node, dht, Overlay())
    # The dht stub is only called when a route is resolved; constructing needs none.
    RouterServicer(cfg, router, object()).pushes.inc()
    NebulaAgentServicer(cfg, nebula)
    yield {"api": api.registry, "dht": dht, "router": router, "nebula-agent": nebula}
    node.stop()


@pytest.fixture
def families(registries) -> list[Metric]:
    return [family for registry in registries.values() for family in registry.collect()]


def test_every_component_has_metrics(registries):
    assert {name: bool(list(r.collect())) for name, r in registries.items()} == dict.fromkeys(registries, True)


def test_names_start_with_meshworker(families):
    assert [f.name for f in families if not f.name.startswith("meshworker_")] == []


def test_counter_samples_end_in_total(families):
    counters = [f for f in families if f.type == "counter"]
    assert counters
    for family in counters:
        assert not family.name.endswith("_total"), family.name
        values = [s.name for s in family.samples if not s.name.endswith("_created")]
        assert values and all(name == family.name + "_total" for name in values), (family.name, values)


def test_units_are_base_units(families):
    offending = [f.name for f in families if NON_BASE_UNITS & set(f.name.split("_"))]
    assert offending == []


def test_envelope_latency_histogram_in_seconds(families):
    by_name = {f.name: f for f in families}

    assert by_name["meshworker_api_envelope_duration_seconds"].type == "histogram"


def test_label_names_are_bounded(families):
    labels = {label for f in families for s in f.samples for label in s.labels}

    assert labels - STRUCTURAL_LABELS <= ALLOWED_LABELS, labels - STRUCTURAL_LABELS - ALLOWED_LABELS


def test_family_names_are_unique_across_components(families):
    names = [f.name for f in families]

    assert sorted(n for n in set(names) if names.count(n) > 1) == []
