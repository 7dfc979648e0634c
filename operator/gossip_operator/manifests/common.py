"""Names, labels and owner references shared by every child of a GossipCluster.

Each child's name derives from the cluster's name, so the operator finds its children by name (a GET) and
never needs a LIST or a label selector (which the test API emulator does not filter by anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gossip_operator.spec import (
    API_VERSION,
    KIND,
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    ClusterSpec,
)

AGENT_APP = "gossip-agent"
MANAGER = "gossip-operator"
ANNOTATION_PREFIX = "gossip-operator.dev"
# Checksum of the agent config (without seeds) and of the keyring: a change rolls the pods.
CONFIG_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/config-hash"
KEYRING_HASH_ANNOTATION = f"{ANNOTATION_PREFIX}/keyring-hash"
# On a pod: the port the operator uses to reach that agent's HTTP API (overrides the container port).
AGENT_PORT_ANNOTATION = f"{ANNOTATION_PREFIX}/agent-port"
# On a child: the JSON of what the operator last applied (for three-way merge patches).
LAST_APPLIED_ANNOTATION = f"{ANNOTATION_PREFIX}/last-applied"
# On a pod: its node's zone, written by the operator once the pod is scheduled (zones.py), and projected into
# the pod as the file ZONE_FILE by a downward-API volume, which the agent re-reads live.
ZONE_ANNOTATION = f"{ANNOTATION_PREFIX}/zone"

CONFIG_DIR = "/etc/gossip"
CONFIG_FILE = f"{CONFIG_DIR}/config.json"
KEYRING_DIR = f"{CONFIG_DIR}/keyring"
KEYRING_KEY = "keyring"
TLS_DIR = f"{CONFIG_DIR}/tls"
# The HTTP API's bearer tokens (docs/agent-api.md, "Security of the HTTP API"): a generated Secret.
API_TOKENS_DIR = f"{CONFIG_DIR}/api-tokens"
API_TOKENS_KEY = "tokens"
DATA_DIR = "/data"
# Facts about the pod itself that the kubelet projects from its metadata (downward API) and keeps current.
PODINFO_DIR = f"{CONFIG_DIR}/podinfo"
ZONE_FILE_KEY = "zone"
ZONE_FILE = f"{PODINFO_DIR}/{ZONE_FILE_KEY}"
CONTAINER_NAME = "agent"
HTTP_PORT_NAME = "http"
GOSSIP_PORT_NAME = "gossip"


@dataclass(frozen=True, slots=True)
class Owner:
    """The GossipCluster every child points back to (Kubernetes garbage-collects children with it)."""

    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True, slots=True)
class Names:
    statefulset: str
    headless_service: str
    client_service: str
    configmap: str
    pdb: str
    network_policy: str

    @staticmethod
    def of(cluster: str) -> Names:
        return Names(
            statefulset=cluster,
            headless_service=f"{cluster}-peers",
            client_service=cluster,
            configmap=f"{cluster}-config",
            pdb=cluster,
            network_policy=cluster,
        )


def selector_labels(spec: ClusterSpec) -> dict[str, str]:
    """The labels that select a cluster's pods (immutable in a StatefulSet: never change them)."""
    return {LABEL_NAME: AGENT_APP, LABEL_INSTANCE: spec.name}


def selector_string(spec: ClusterSpec) -> str:
    """The selector as a label-selector string, for the scale subresource (`status.selector`)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(spec).items()))


def labels(spec: ClusterSpec, component: str = "agent") -> dict[str, str]:
    return {**selector_labels(spec), LABEL_MANAGED_BY: MANAGER, LABEL_COMPONENT: component}


def metadata(spec: ClusterSpec, owner: Owner, name: str, component: str = "agent") -> dict[str, Any]:
    return {
        "name": name,
        "namespace": spec.namespace,
        "labels": labels(spec, component),
        "ownerReferences": [owner.reference()],
    }


def _qualified(name: str, cluster_domain: str) -> str:
    """`NAME.svc` as is (the pod's DNS search path completes it with whatever the cluster's domain is), or
    with an explicitly configured domain appended."""
    return f"{name}.{cluster_domain}" if cluster_domain else name


def pod_dns_name(spec: ClusterSpec, ordinal: int, cluster_domain: str = "") -> str:
    names = Names.of(spec.name)
    return _qualified(f"{names.statefulset}-{ordinal}.{names.headless_service}.{spec.namespace}.svc", cluster_domain)


def headless_dns_name(spec: ClusterSpec, cluster_domain: str = "") -> str:
    return _qualified(f"{Names.of(spec.name).headless_service}.{spec.namespace}.svc", cluster_domain)


def without_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}
