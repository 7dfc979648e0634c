"""Two Services: a headless one for peer discovery and stable pod DNS names, and a client one for the API.

The headless Service publishes not-ready addresses: agents become ready only after joining a peer, so peers
must be resolvable before they are ready, or no agent would ever join (and none would become ready).
"""

from __future__ import annotations

from typing import Any

from gossip_operator.manifests.common import (
    GOSSIP_PORT_NAME,
    HTTP_PORT_NAME,
    Names,
    Owner,
    metadata,
    selector_labels,
)
from gossip_operator.spec import ClusterSpec


def _ports(spec: ClusterSpec, *, gossip: bool) -> list[dict[str, Any]]:
    ports = [{"name": HTTP_PORT_NAME, "port": spec.port, "targetPort": HTTP_PORT_NAME, "protocol": "TCP"}]
    if gossip:
        ports.append({"name": GOSSIP_PORT_NAME, "port": spec.port, "targetPort": GOSSIP_PORT_NAME,
                      "protocol": "UDP"})
    return ports


def render_headless(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, owner, Names.of(spec.name).headless_service, "peers"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(spec),
            "ports": _ports(spec, gossip=True),
        },
    }


def render_client(spec: ClusterSpec, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(spec, owner, Names.of(spec.name).client_service, "client"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(spec),
            "ports": _ports(spec, gossip=False),
        },
    }
