"""Spec changes the running agents cannot survive, found by comparing the spec with the live StatefulSet.

The CRD refuses these changes with CEL transition rules, but CEL runs only on Kubernetes 1.25+ (and not at all
when a client skips validation). So the operator checks them too, against what is actually deployed (the live
StatefulSet is the true "old" spec, whatever the object's history or the operator's restarts):

- `port` and `security.tlsSecret`: a rolling update would mix agents that cannot talk to each other. Allowed
  while the StatefulSet is scaled to zero with no pod left (nothing to mix);
- `storage.ephemeral`, `storage.size`, `storage.storageClassName`: they live in the StatefulSet's
  volumeClaimTemplates (or their absence), which the API server never lets change; applying the rest would
  leave a mount without its volume or silently ignore the change.
Pure: no I/O. Messages are spec.TRANSITION_MESSAGES, the CRD's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gossip_operator.manifests.common import CONTAINER_NAME, HTTP_PORT_NAME
from gossip_operator.spec import TRANSITION_MESSAGES, ClusterSpec, parse_quantity


def _pod_spec(sts: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((sts.get("spec") or {}).get("template") or {}).get("spec") or {}


def _live_port(sts: Mapping[str, Any]) -> int | None:
    for container in _pod_spec(sts).get("containers") or []:
        if container.get("name") == CONTAINER_NAME:
            for port in container.get("ports") or []:
                if port.get("name") == HTTP_PORT_NAME:
                    value = port.get("containerPort")
                    return value if isinstance(value, int) else None
    return None


def _live_tls_secret(sts: Mapping[str, Any]) -> str | None:
    for volume in _pod_spec(sts).get("volumes") or []:
        if volume.get("name") == "tls":
            return (volume.get("secret") or {}).get("secretName")
    return None


def _live_claim(sts: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for claim in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        if (claim.get("metadata") or {}).get("name") == "data":
            return claim.get("spec") or {}
    return None


def _scaled_to_zero(sts: Mapping[str, Any]) -> bool:
    spec_replicas = (sts.get("spec") or {}).get("replicas")
    status_replicas = (sts.get("status") or {}).get("replicas") or 0
    return spec_replicas == 0 and status_replicas == 0


def unsafe_transitions(spec: ClusterSpec, live: Mapping[str, Any] | None) -> list[str]:
    """The refused changes from the live StatefulSet to `spec` (empty: safe, or nothing deployed yet)."""
    if live is None:
        return []
    problems = []
    idle = _scaled_to_zero(live)
    live_port = _live_port(live)
    if live_port is not None and live_port != spec.port and not idle:
        problems.append(TRANSITION_MESSAGES["port"])
    if _live_tls_secret(live) != spec.tls_secret and not idle:
        problems.append(TRANSITION_MESSAGES["security.tlsSecret"])
    claim = _live_claim(live)
    if (claim is None) != spec.storage_ephemeral:
        problems.append(TRANSITION_MESSAGES["storage.ephemeral"])
    elif claim is not None:
        size = ((claim.get("resources") or {}).get("requests") or {}).get("storage")
        if parse_quantity(size) != parse_quantity(spec.storage_size):
            problems.append(TRANSITION_MESSAGES["storage.size"])
        if claim.get("storageClassName") != spec.storage_class_name:
            problems.append(TRANSITION_MESSAGES["storage.storageClassName"])
    return problems
