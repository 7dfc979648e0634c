"""Which zone each agent pod is in: the decision, without I/O.

A pod's zone is its node's `topology.kubernetes.io/zone` label, and a pod has a node only once it is
scheduled, so the zone cannot be in the StatefulSet's pod template. The operator copies it onto the pod as
the annotation `ZONE_ANNOTATION`; the pod template projects that annotation into a file with a downward-API
volume (manifests/statefulset.py), which the kubelet rewrites when the annotation changes, and the agent
re-reads the file live (its `topology.zoneFile` setting). So a pod that started before the operator
annotated it, or whose node is relabelled, learns its zone without a restart.

The node label is validated with the agent's own zone check (`gossip_agent.core.topology.parse_zone`): what the
operator writes is exactly what the agent accepts. A label the agent would refuse is treated as "no zone"
(the annotation is removed, the agent falls back to RTT-based peer choice) and reported, never written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossip_agent.core.topology import parse_zone
from gossip_operator.manifests.common import ZONE_ANNOTATION
from gossip_operator.spec import LABEL_INSTANCE

# The well-known node label (GA since Kubernetes 1.17), and the beta one it replaced, which older clusters
# and some cloud providers still set alone.
ZONE_LABEL = "topology.kubernetes.io/zone"
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"


@dataclass(frozen=True, slots=True)
class NodeZone:
    """A node's zone as the agents may use it: `zone` None when the node has no (valid) zone label;
    `problem` says why a label that is present was refused."""

    zone: str | None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class PodZone:
    """What the zone annotator needs to know of one agent pod (kept in kopf's pods-by-node index)."""

    namespace: str
    name: str
    cluster: str
    node: str | None
    annotation: str | None
    terminating: bool


def node_zone(labels: Mapping[str, Any] | None) -> NodeZone:
    """The zone a node's labels give: the GA label, else the beta one."""
    labels = labels or {}
    for key in (ZONE_LABEL, LEGACY_ZONE_LABEL):
        raw = labels.get(key)
        if raw is None:
            continue
        try:
            return NodeZone(parse_zone(raw))
        except ValueError as exc:
            return NodeZone(None, f"node label {key}: {exc}")
    return NodeZone(None)


def pod_zone(body: Mapping[str, Any]) -> PodZone:
    meta = body.get("metadata") or {}
    annotation = (meta.get("annotations") or {}).get(ZONE_ANNOTATION)
    node = (body.get("spec") or {}).get("nodeName")
    return PodZone(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        cluster=str((meta.get("labels") or {}).get(LABEL_INSTANCE) or ""),
        node=node if isinstance(node, str) and node else None,
        annotation=annotation if isinstance(annotation, str) else None,
        terminating=bool(meta.get("deletionTimestamp")),
    )


def annotation_patch(pod: PodZone, node: NodeZone | None) -> dict[str, Any] | None:
    """The merge patch that makes the pod's zone annotation match its node, or None when nothing is to do.

    `node` None means the node is not known (yet): nothing is written on missing information, as a removal
    would make the agent forget a zone it had. A pod not yet scheduled, or terminating, is left alone. A
    node known to have no zone removes the annotation (the projected file becomes empty: "zone unknown").
    """
    if pod.node is None or pod.terminating or node is None:
        return None
    current = pod.annotation or None  # an empty annotation and none mean the same to the agent
    if current == node.zone:
        return None
    return {"metadata": {"annotations": {ZONE_ANNOTATION: node.zone}}}
