"""Operator metrics (prometheus-client), in a registry of their own so several operators can live in one
process (tests) and the default registry's process metrics stay optional."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PHASES = ("Pending", "Running", "Degraded", "Paused", "Invalid")


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "gossip_operator_reconciles", "Reconcile passes by trigger and result.",
            ["trigger", "result"], registry=self.registry)
        self.errors = Counter(
            "gossip_operator_errors", "Failed reconcile or status passes by stage.", ["stage"],
            registry=self.registry)
        self.reconcile_seconds = Histogram(
            "gossip_operator_reconcile_duration_seconds", "Duration of reconcile passes.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.status_seconds = Histogram(
            "gossip_operator_status_duration_seconds", "Duration of status passes (agent queries included).",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=self.registry)
        self.writes = Counter(
            "gossip_operator_child_writes", "Writes to children by kind and verb.", ["kind", "verb"],
            registry=self.registry)
        self.agent_queries = Counter(
            "gossip_operator_agent_queries", "Agent status queries by result.", ["result"],
            registry=self.registry)
        self.zone_annotations = Counter(
            "gossip_operator_zone_annotations", "Agent pod zone annotations by result: written, error (the API "
            "refused the patch; retried), invalid_label (a node's zone label the agents would refuse; not used).",
            ["result"], registry=self.registry)
        self.clusters = Gauge(
            "gossip_operator_clusters", "GossipClusters by phase.", ["phase"], registry=self.registry)
        self._phases: dict[str, str] = {}
        for phase in PHASES:
            self.clusters.labels(phase=phase).set(0)

    def set_phase(self, key: str, phase: str | None) -> None:
        if phase is None:
            self._phases.pop(key, None)
        else:
            self._phases[key] = phase
        self._publish(self._phases)

    def _publish(self, phases: Mapping[str, str]) -> None:
        for phase in PHASES:
            self.clusters.labels(phase=phase).set(sum(1 for p in phases.values() if p == phase))

    def render(self) -> bytes:
        return generate_latest(self.registry)
