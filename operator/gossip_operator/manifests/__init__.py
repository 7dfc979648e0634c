"""Pure renderers: a validated ClusterSpec in, Kubernetes manifests (plain dicts) out.

`render_children` is the whole desired state of one cluster except the gossip-key Secret, whose random
content the reconciler generates (and never overwrites) itself. No I/O, no clock, no randomness here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossip_operator.manifests import configmap, networkpolicy, pdb, services, statefulset
from gossip_operator.manifests.common import Names, Owner
from gossip_operator.manifests.resources import (
    CONFIGMAPS,
    NETWORKPOLICIES,
    PODDISRUPTIONBUDGETS,
    SERVICES,
    STATEFULSETS,
    Resource,
)
from gossip_operator.spec import ClusterSpec


@dataclass(frozen=True, slots=True)
class Child:
    resource: Resource
    name: str
    body: Mapping[str, Any] | None  # None: must not exist (an optional child that is switched off)
    # Top-level spec fields the API server refuses to update; left out of patches.
    immutable: tuple[tuple[str, ...], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class RenderOptions:
    cluster_domain: str = ""  # "": relative seed names (NAME-0.NAME-peers.NS.svc), completed by the pod's DNS
    # The TLS Secret has a ca.crt (read by the reconciler); without, the agents' config names none.
    tls_ca: bool = True
    keyring_hash: str = ""
    operator_namespace: str | None = None
    operator_labels: Mapping[str, str] = field(default_factory=lambda: {"app.kubernetes.io/name": "gossip-operator"})
    # The PodDisruptionBudget API the server serves (discovery); None: none, the PDB is left out.
    pdb_resource: Resource | None = PODDISRUPTIONBUDGETS


def render_children(spec: ClusterSpec, owner: Owner, options: RenderOptions) -> list[Child]:
    """Children in creation order: config and Services before the pods that need them."""
    names = Names.of(spec.name)
    pdb_children = [] if options.pdb_resource is None else [
        Child(options.pdb_resource, names.pdb, pdb.render(spec, owner, api_version=options.pdb_resource.api_version))]
    return [
        Child(CONFIGMAPS, names.configmap, configmap.render(spec, owner, cluster_domain=options.cluster_domain,
                                                            tls_ca=options.tls_ca)),
        Child(SERVICES, names.headless_service, services.render_headless(spec, owner)),
        Child(SERVICES, names.client_service, services.render_client(spec, owner)),
        Child(STATEFULSETS, names.statefulset,
              statefulset.render(spec, owner, cluster_domain=options.cluster_domain,
                                 keyring_hash=options.keyring_hash, tls_ca=options.tls_ca),
              immutable=tuple(("spec", f) for f in statefulset.IMMUTABLE_SPEC_FIELDS)),
        *pdb_children,
        Child(NETWORKPOLICIES, names.network_policy,
              networkpolicy.render(spec, owner, operator_namespace=options.operator_namespace,
                                   operator_labels=options.operator_labels)),
    ]


__all__ = ["Child", "Names", "Owner", "RenderOptions", "render_children"]
