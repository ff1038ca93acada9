"""Writes meshworker-node.json, the Grafana dashboard of meshworker nodes:

    python3 deploy/grafana/dashboard.py

Plain Python (no grafanalib): the panels are data here, and the JSON beside this file is
what Grafana imports or provisions. tests/unit/deploy checks that the JSON is this script's
output; tests/integration/test_dashboard.py evaluates every query against a real node.

Every query reads the node's one page (`GET /metrics` on the gateway, job `meshworker` in
deploy/prometheus/prometheus.yml). Envoy names a cluster `local:<svc>` (this node's backend),
`remote:<svc>` (peers that host it) or `model:<id>` (a model balanced over several nodes);
its Prometheus page writes the `:` as `_`. Envoy's times are milliseconds, ours seconds.
Error rates are 0, not "no data", while a service has no 5xx: Envoy makes a status class's
series at its first answer of that class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("meshworker-node.json")
UID = "meshworker-node"
R = "$__rate_interval"
NODE = 'instance=~"$instance"'
SERVICE_CLUSTERS = '(local|remote)_($service)'  # a service's clusters, local and forwarded
AS_SERVICE = '"service", "$2", "envoy_cluster_name", "(local|remote)_(.+)"'


def sel(metric: str, *matchers: str) -> str:
    """metric{instance=~"$instance", matchers...}"""
    return f"{metric}{{{', '.join((NODE, *matchers))}}}"


def cluster(regex: str) -> str:
    return f'envoy_cluster_name=~"{regex}"'


def rate(selector: str) -> str:
    return f"rate({selector}[{R}])"


def per_service(inner: str) -> str:
    """inner's series of the service clusters (local and forwarded), summed by service."""
    return f"sum by (service) (label_replace({inner}, {AS_SERVICE}))"


def on_route(metric: str, prefix: str) -> str:
    """Requests/s per service on one route: `local` clusters, or `remote` (forwarded)."""
    inner = rate(sel(metric, cluster(f"{prefix}_($service)")))
    as_service = f'"service", "$1", "envoy_cluster_name", "{prefix}_(.+)"'
    return f"sum by (service) (label_replace({inner}, {as_service}))"


def by_model_cluster(inner: str) -> str:
    return f'sum by (model) (label_replace({inner}, "model", "$1", "envoy_cluster_name", "model_(.+)"))'


def or_zero(part: str, whole: str) -> str:
    """part, and 0 for every series of whole that part lacks."""
    return f"({part} or {whole} * 0)"


SERVICE_RQ = per_service(rate(sel("envoy_cluster_upstream_rq_total", cluster(SERVICE_CLUSTERS))))
SERVICE_5XX = or_zero(per_service(rate(sel("envoy_cluster_upstream_rq_xx", cluster(SERVICE_CLUSTERS),
                                           'envoy_response_code_class="5"'))), SERVICE_RQ)
ENVELOPE = ("meshworker_api_envelope_requests_total", 'service=~"$service"')
ENVELOPE_RQ = f"sum by (service) ({rate(sel(*ENVELOPE))})"
ENVELOPE_5XX = or_zero(f"""sum by (service) ({rate(sel(*ENVELOPE, 'code="5xx"'))})""", ENVELOPE_RQ)
MODEL = 'model=~"$model"'
CLIENT = 'envoy_http_conn_manager_prefix="client"'  # Envoy's listener for clients (:8000)
ROUTED = "(local|remote|model)_.+"  # every cluster requests are routed to (not the api's, not xds)
MODEL_RQ = f"sum by (model) ({rate(sel('meshworker_model_requests_total', MODEL))})"
MODEL_5XX = or_zero(
    f"""sum by (model) ({rate(sel('meshworker_model_requests_total', MODEL, 'code="5xx"'))})""", MODEL_RQ)


def quantiles(metric: str, by: str, *matchers: str, scale: str = "", qs=(0.5, 0.95, 0.99)) -> list[dict]:
    """One target per quantile of a histogram, by a label (`service` of a cluster: from its name)."""
    buckets = rate(sel(f"{metric}_bucket", *matchers))
    if metric.startswith("envoy_cluster_"):
        inner = f"sum by (service, le) (label_replace({buckets}, {AS_SERVICE}))"
    else:
        inner = f"sum by ({by}, le) ({buckets})"
    return [target(f"histogram_quantile({q}, {inner}){scale}", f"{{{{{by}}}}} p{round(q * 100)}") for q in qs]


def target(expr: str, legend: str) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend}


def panel(title: str, description: str, unit: str, *targets: dict, kind: str = "timeseries",
          width: int = 8) -> dict[str, Any]:
    return {"type": kind, "title": title, "description": description, "unit": unit, "targets": list(targets),
            "width": width}


ROWS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Node", [
        panel("Scrape up", "1 while Prometheus reads the node's /metrics (alert MeshworkerNodeDown).",
              "short",
              target(f"up{{{NODE}}}", "{{instance}}"), kind="stat", width=6),
        panel("Components serving", "1 when a component answers SERVING to gRPC health (Envoy: admin "
              "/ready); flapping here is a restart loop (alert MeshworkerComponentRestarting).", "short",
              target(sel("meshworker_component_up"), "{{instance}} {{component}}"), width=10),
        panel("Local services healthy", "1 while a local backend passes its health checks (damped).", "short",
              target(sel("meshworker_router_service_healthy", 'service=~"$service"'),
                     "{{instance}} {{service}}"),
              width=8),
    ]),
    ("Requests per service", [
        panel("Requests", "Requests/s Envoy sent to each service's own backend (local) or to peers "
              "(forwarded), and envelopes (POST /service/{type}) the api served.", "reqps",
              target(on_route("envoy_cluster_upstream_rq_total", "local"), "{{service}} local"),
              target(on_route("envoy_cluster_upstream_rq_total", "remote"), "{{service}} forwarded"),
              target(ENVELOPE_RQ, "{{service}} envelope")),
        panel("Errors", "5xx answers/s per service: from its backends or peers (Envoy) and from the "
              "envelope (api).", "reqps",
              target(SERVICE_5XX, "{{service}} 5xx"), target(ENVELOPE_5XX, "{{service}} envelope 5xx")),
        panel("Error ratio", "Share of a service's requests answered 5xx (alert MeshworkerServiceErrors).",
              "percentunit", target(f"{SERVICE_5XX} / {SERVICE_RQ}", "{{service}}"),
              target(f"{ENVELOPE_5XX} / {ENVELOPE_RQ}", "{{service}} envelope")),
        panel("Latency", "Time to a service's answer as Envoy saw it (its backend or a peer; alert "
              "MeshworkerSlowService).", "s",
              *quantiles("envoy_cluster_upstream_rq_time", "service", cluster(SERVICE_CLUSTERS),
                         scale=" / 1000")),
        panel("Envelope latency", "Time from an envelope request to its answer (api).", "s",
              *quantiles("meshworker_api_envelope_duration_seconds", "service", 'service=~"$service"',
                         qs=(0.5, 0.95))),
        panel("In flight", "Requests Envoy has in flight per service.", "short",
              target(per_service(sel("envoy_cluster_upstream_rq_active", cluster(SERVICE_CLUSTERS))),
                     "{{service}}")),
        panel("Gateway answers", "Answers to clients on :8000 by status class, Envoy's own (404 unknown "
              "service, 503 no provider, 504) included (alert MeshworkerGatewayErrors).", "reqps",
              target(f"sum by (envoy_response_code_class) "
                     f"({rate(sel('envoy_http_downstream_rq_xx', CLIENT))})",
                     "{{envoy_response_code_class}}xx"), width=12),
        panel("Gateway latency", "Time from a client's request on :8000 to the end of its answer.", "s",
              *quantiles("envoy_http_downstream_rq_time", "envoy_http_conn_manager_prefix", CLIENT,
                         scale=" / 1000", qs=(0.5, 0.95)), width=12),
    ]),
    ("Models", [
        panel("Requests per model", "Requests/s to each local model by status class.", "reqps",
              target(f"sum by (model, code) ({rate(sel('meshworker_model_requests_total', MODEL))})",
                     "{{model}} {{code}}")),
        panel("Model error ratio", "Share of a model's requests answered 5xx.", "percentunit",
              target(f"{MODEL_5XX} / {MODEL_RQ}", "{{model}}")),
        panel("Tokens", "Tokens/s each model read (prompts, texts embedded) and generated.", "short",
              target(f"sum by (model) ({rate(sel('meshworker_model_prompt_tokens_total', MODEL))})",
                     "{{model}} read"),
              target(f"sum by (model) ({rate(sel('meshworker_model_completion_tokens_total', MODEL))})",
                     "{{model}} generated")),
        panel("Time to first token", "From a request to its first generated token, waiting for the "
              "model included (alert MeshworkerSlowFirstToken).", "s",
              *quantiles("meshworker_model_time_to_first_token_seconds", "model", MODEL, qs=(0.5, 0.95))),
        panel("Time per output token", "Mean time between generated tokens after the first.", "s",
              *quantiles("meshworker_model_time_per_output_token_seconds", "model", MODEL, qs=(0.5, 0.95))),
        panel("Model requests in flight", "Requests each model is serving or has waiting.", "short",
              target(f"sum by (model) ({sel('meshworker_model_requests_in_flight', MODEL)})", "{{model}}")),
        panel("Balanced across nodes", "Requests/s Envoy spread over several nodes' providers of a "
              "model (cluster model:<id>, this node's own included), and their healthy providers.", "short",
              target(by_model_cluster(rate(sel("envoy_cluster_upstream_rq_total", cluster("model_.+")))),
                     "{{model}} requests/s"),
              target(by_model_cluster(sel("envoy_cluster_membership_healthy", cluster("model_.+"))),
                     "{{model}} providers"), width=24),
    ]),
    ("Routing", [
        panel("Routes", "Requests/s on each route: this node's backends, forwarded to a peer, "
              "balanced by model.", "reqps",
              *(target(f"sum({rate(sel('envoy_cluster_upstream_rq_total', cluster(f'{prefix}_.+')))})",
                       legend)
                for prefix, legend in (("local", "local"), ("remote", "forwarded"), ("model", "by model")))),
        panel("Lookups", "Requests for a service Envoy had no route for: each is looked up in the DHT "
              "once (cache miss), found or not; and the services with cached providers.", "short",
              target(rate(sel("meshworker_router_cache_misses_total")), "{{instance}} misses/s"),
              target(rate(sel("meshworker_router_cache_misses_found_total")), "{{instance}} found/s"),
              target(sel("meshworker_router_cache_size"), "{{instance}} cached services")),
        panel("Envoy configuration", "Configurations/s the router pushed to Envoy and those Envoy refused "
              "(NACK; alert MeshworkerConfigRejected).", "short",
              target(rate(sel("meshworker_router_config_pushes_total")), "{{instance}} pushed"),
              target(rate(sel("meshworker_router_config_rejections_total")), "{{instance}} refused")),
        panel("Healthy providers", "Healthy endpoints per cluster: this node's backend, the peers that host "
              "a service, a model's providers (alert MeshworkerProviderLost).", "short",
              target(sel("envoy_cluster_membership_healthy", cluster(ROUTED)), "{{envoy_cluster_name}}"),
              width=12),
        panel("Retries", "Requests/s Envoy tried again on another provider.", "reqps",
              target(f"sum by (envoy_cluster_name) "
                     f"({rate(sel('envoy_cluster_upstream_rq_retry', cluster(ROUTED)))})",
                     "{{envoy_cluster_name}}"), width=12),
    ]),
    ("Mesh", [
        panel("DHT peers", "Kademlia peers in the routing table (alert MeshworkerDhtNoPeers).", "short",
              target(sel("meshworker_dht_known_peers"), "{{instance}}")),
        panel("DHT records", "Provider records stored here, peers whose records failed verification, "
              "and announces and lookups served per second.", "short",
              target(sel("meshworker_dht_stored_records"), "{{instance}} records"),
              target(sel("meshworker_dht_unverified_peers"), "{{instance}} unverified peers"),
              target(rate(sel("meshworker_dht_announces_total")), "{{instance}} announces/s"),
              target(rate(sel("meshworker_dht_lookups_total")), "{{instance}} lookups/s")),
        panel("Overlay tunnels", "Nebula tunnels and handshakes in progress (none without an overlay).",
              "short",
              target(sel("meshworker_nebula_tunnels"), "{{instance}} tunnels"),
              target(sel("meshworker_nebula_pending_handshakes"), "{{instance}} handshaking")),
        panel("Overlay", "1 while the overlay address is up and a lighthouse answers (alert "
              "MeshworkerOverlayDown).", "short",
              target(sel("meshworker_nebula_overlay_up"), "{{instance}} overlay up"),
              target(sel("meshworker_nebula_lighthouse_reachable"), "{{instance}} lighthouse"), width=12),
        panel("Certificates expire in", "Time left on the TLS certificate Envoy holds for this node and "
              "on its Nebula certificate (alerts MeshworkerTlsCertificateExpiring, "
              "MeshworkerOverlayCertificateExpiring).", "s",
              target(f"({sel('meshworker_router_tls_cert_expiry_timestamp_seconds')} > 0) - time()",
                     "{{instance}} TLS"),
              target(f"({sel('meshworker_nebula_cert_expiry_timestamp_seconds')} > 0) - time()",
                     "{{instance}} Nebula"), width=12),
    ]),
    ("Resources", [
        panel("GPUs", "GPUs NVML sees on the node (0: none, or no driver).", "short",
              target(sel("meshworker_router_gpus"), "{{instance}}"), kind="stat", width=4),
        panel("GPU use", "Share of NVML's last sample period each GPU was busy.", "percentunit",
              target(sel("meshworker_router_gpu_utilization_ratio"), "{{instance}} GPU {{gpu}}"), width=6),
        panel("GPU memory", "Memory in use and in all, per GPU.", "bytes",
              target(sel("meshworker_router_gpu_memory_used_bytes"), "{{instance}} GPU {{gpu}} used"),
              target(sel("meshworker_router_gpu_memory_total_bytes"), "{{instance}} GPU {{gpu}} total"),
              width=7),
        panel("Backend memory", "Resident memory of each local backend, as it reports it.", "bytes",
              target(sel("meshworker_router_backend_resident_memory_bytes", 'service=~"$service"'),
                     "{{instance}} {{service}}"), width=7),
    ]),
]

VARIABLES = [  # name, label, Grafana's label_values() query, regex on its values
    ("instance", "Node", "label_values(meshworker_component_up, instance)", ""),
    ("service", "Service",
     ('label_values(envoy_cluster_upstream_rq_total{envoy_cluster_name=~"(local|remote)_.+"}, '
      'envoy_cluster_name)'),
     "/^(?:local|remote)_(.+)$/"),
    ("model", "Model", "label_values(meshworker_model_requests_total, model)", ""),
]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def grafana_panel(spec: dict[str, Any], panel_id: int, x: int, y: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": panel_id, "type": spec["type"], "title": spec["title"],
        "description": spec["description"], "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": spec["width"], "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": spec["unit"]}, "overrides": []},
        "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), **t}
                    for i, t in enumerate(spec["targets"])],
    }
    if out["type"] == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "none", "textMode": "value_and_name"}
    return out


def dashboard() -> dict[str, Any]:
    panels, y, panel_id = [], 0, 1
    for title, specs in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        panel_id, y, x = panel_id + 1, y + 1, 0
        for spec in specs:
            if x + spec["width"] > 24:
                x, y = 0, y + 8
            panels.append(grafana_panel(spec, panel_id, x, y))
            panel_id, x = panel_id + 1, x + spec["width"]
        y += 8
    templating = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                   "current": {}, "hide": 0}]
    templating += [{"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
                    "query": {"query": query, "refId": f"{name}-values"}, "definition": query, "regex": regex,
                    "refresh": 2, "multi": True, "includeAll": True, "allValue": ".+", "sort": 1,
                    "options": [], "current": {"text": ["All"], "value": ["$__all"]}, "hide": 0}
                   for name, label, query, regex in VARIABLES]
    return {
        "uid": UID, "title": "meshworker node", "description": "Requests, errors and latency per service "
        "and model, tokens, routing, DHT, overlay, certificates and GPUs of meshworker nodes.",
        "tags": ["meshworker"], "timezone": "browser", "editable": True, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
        "annotations": {"list": []}, "links": [], "templating": {"list": templating}, "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
