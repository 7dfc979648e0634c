"""PodDisruptionBudget: voluntary evictions (node drains) take one agent at a time by default.

SWIM tolerates a lost member, but evicting several at once can take out every seed or push the suspicion
machinery into false positives; maxUnavailable 1 keeps drains gentle. Overridable (maxUnavailable or
minAvailable), or disabled. Rendered for policy/v1, or policy/v1beta1 on servers older than 1.21 (the fields
set here mean the same in both).
"""

from __future__ import annotations

from typing import Any

from gossip_operator.manifests.common import Names, Owner, metadata, selector_labels
from gossip_operator.spec import ClusterSpec


def render(spec: ClusterSpec, owner: Owner, *, api_version: str = "policy/v1") -> dict[str, Any] | None:
    if not spec.pdb_enabled:
        return None
    budget: dict[str, Any] = (
        {"minAvailable": spec.pdb_min_available} if spec.pdb_min_available is not None
        else {"maxUnavailable": spec.pdb_max_unavailable if spec.pdb_max_unavailable is not None else 1}
    )
    return {
        "apiVersion": api_version,
        "kind": "PodDisruptionBudget",
        "metadata": metadata(spec, owner, Names.of(spec.name).pdb),
        "spec": {**budget, "selector": {"matchLabels": selector_labels(spec)}},
    }
