"""nebula's own Prometheus stats, translated into a few meshworker_nebula_* families.

nebula serves its go-metrics registry (stats.type: prometheus, on loopback) with names and
labels of its own (gauges for counters, `type` labels on summaries). The node's /metrics
follows our naming rules, so the agent scrapes nebula and re-exposes a chosen set under
our names rather than passing nebula's through.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# our name -> (kind, help, nebula sample names summed)
TRANSLATION: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "meshworker_nebula_tunnels": (
        "gauge", "Tunnels in nebula's main host map", ("nebula_hostmap_main_hosts",)),
    "meshworker_nebula_pending_handshakes": (
        "gauge", "Handshakes nebula has in progress", ("nebula_hostmap_pending_hosts",)),
    "meshworker_nebula_handshakes_initiated": (
        "counter", "Handshakes nebula started", ("nebula_handshake_manager_initiated",)),
    "meshworker_nebula_handshakes_timed_out": (
        "counter", "Handshakes that got no answer", ("nebula_handshake_manager_timed_out",)),
    "meshworker_nebula_firewall_inbound_dropped_packets": (
        "counter", "Inbound overlay packets dropped by nebula's firewall",
        ("nebula_firewall_incoming_dropped_no_rule", "nebula_firewall_incoming_dropped_local_ip",
         "nebula_firewall_incoming_dropped_remote_ip")),
    "meshworker_nebula_firewall_outbound_dropped_packets": (
        "counter", "Outbound overlay packets dropped by nebula's firewall",
        ("nebula_firewall_outgoing_dropped_no_rule", "nebula_firewall_outgoing_dropped_local_ip",
         "nebula_firewall_outgoing_dropped_remote_ip")),
    "meshworker_nebula_conntrack_entries": (
        "gauge", "Flows in nebula's firewall conntrack table", ("nebula_firewall_conntrack_count",)),
    "meshworker_nebula_lighthouse_queries": (
        "counter", "Host queries sent to lighthouses", ("nebula_lighthouse_tx_HostQuery",)),
    "meshworker_nebula_recv_errors": (
        "counter", "recv_error messages received (a peer lost our tunnel)",
        ("nebula_messages_rx_recv_error",)),
}


def samples(exposition: str) -> dict[str, float]:
    """Unlabelled sample values by name (pure)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    return values


class NebulaStats(Collector):
    """The last scrape of nebula's stats endpoint, as meshworker families."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.up = False

    def update(self, exposition: str | None) -> None:
        if exposition is None:
            self.up, self.values = False, {}
            return
        try:
            self.values, self.up = samples(exposition), True
        except ValueError:
            self.up, self.values = False, {}

    def tunnels(self) -> int | None:
        value = self.values.get("nebula_hostmap_main_hosts")
        return None if value is None else int(value)

    def collect(self) -> Iterator:
        up = GaugeMetricFamily("meshworker_nebula_stats_up", "1 when the last scrape of nebula's stats "
                               "endpoint succeeded")
        up.add_metric([], 1.0 if self.up else 0.0)
        yield up
        for name, (kind, doc, sources) in TRANSLATION.items():
            present = [self.values[s] for s in sources if s in self.values]
            if present:
                family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                yield family(name, doc, value=sum(present))
