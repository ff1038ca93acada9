"""The scenarios, in the order a full run takes them. Each is one module with NAME and
run(ctx) -> ScenarioResult; add a module here to add a scenario."""

from __future__ import annotations

from bench.scenarios import (
    api_keys,
    discovery,
    failover,
    footprint,
    forwarded_route,
    large_body,
    local_route,
    lying_nodes,
    models,
    openai,
)

SCENARIOS = {module.NAME: module for module in (local_route, forwarded_route, large_body, discovery, failover,
                                                 footprint, models, openai, lying_nodes, api_keys)}
