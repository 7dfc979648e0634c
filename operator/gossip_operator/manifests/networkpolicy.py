"""Optional NetworkPolicy: agents reach each other on the agent port (UDP and TCP); the listed peers and the
operator reach the HTTP API. Everything else is denied ingress. Off unless `pod.networkPolicy.enabled`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossip_operator.manifests.common import Names, Owner, metadata, selector_labels
from gossip_operator.spec import ClusterSpec


def render(spec: ClusterSpec, owner: Owner, *, operator_namespace: str | None,
           operator_labels: Mapping[str, str]) -> dict[str, Any] | None:
    if not spec.pod.network_policy:
        return None
    peers = [{"podSelector": {"matchLabels": selector_labels(spec)}}]
    api_from: list[dict[str, Any]] = [*peers, *(dict(p) for p in spec.pod.network_policy_allow_from)]
    operator_peer: dict[str, Any] = {"podSelector": {"matchLabels": dict(operator_labels)}}
    if operator_namespace:
        operator_peer["namespaceSelector"] = {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}}
    api_from.append(operator_peer)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(spec, owner, Names.of(spec.name).network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(spec)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": peers,
                 "ports": [{"protocol": "UDP", "port": spec.port}, {"protocol": "TCP", "port": spec.port}]},
                {"from": api_from, "ports": [{"protocol": "TCP", "port": spec.port}]},
            ],
        },
    }
