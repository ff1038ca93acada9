"""deploy/grafana: the committed dashboard JSON is what dashboard.py writes, and it is well
formed (tests/integration/test_dashboard.py runs every query against a real node)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

GRAFANA = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
# Grafana's own variables a query may use; $1, $2 are label_replace's capture groups.
BUILTIN = {"__rate_interval", "__interval", "__range"}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("dashboard", GRAFANA / "dashboard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "meshworker-node.json").read_text())


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_committed_json_is_what_the_script_writes(script):
    assert (GRAFANA / "meshworker-node.json").read_text() == script.render(), \
        "deploy/grafana/meshworker-node.json is stale: run python3 deploy/grafana/dashboard.py"


def test_every_panel_has_a_title_a_unit_and_queries_with_a_legend(dashboard):
    for panel in panels(dashboard):
        assert panel["title"] and panel["description"] and panel["fieldConfig"]["defaults"]["unit"]
        targets = panel["targets"]
        assert targets and all(t["expr"] and t["legendFormat"] for t in targets), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_panel_ids_are_unique_and_panels_tile_the_grid_without_overlap(dashboard):
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_queries_use_only_defined_variables(dashboard):
    defined = {v["name"] for v in dashboard["templating"]["list"]} | BUILTIN
    used = {name for panel in panels(dashboard) for t in panel["targets"]
            for name in re.findall(r"\$\{?([A-Za-z_]\w*)", t["expr"])}

    assert used <= defined, used - defined
    assert {"instance", "service", "model"} <= used


def test_panels_cover_what_an_operator_watches(dashboard):
    """Issue 13: requests, errors, latency per service and model, tokens/s, in flight, routing,
    DHT peers, overlay tunnels, GPU use."""
    exprs = " ".join(t["expr"] for panel in panels(dashboard) for t in panel["targets"])
    for family in ("envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx",
                   "envoy_cluster_upstream_rq_time_bucket", "meshworker_model_requests_total",
                   "meshworker_model_time_to_first_token_seconds_bucket",
                   "meshworker_model_completion_tokens_total", "meshworker_model_requests_in_flight",
                   "meshworker_router_cache_misses_total", "meshworker_dht_known_peers",
                   "meshworker_nebula_tunnels", "meshworker_router_gpu_utilization_ratio"):
        assert family in exprs, family
