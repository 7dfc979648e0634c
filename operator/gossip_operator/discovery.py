"""Which version of an API the server serves, found by discovery and remembered for a while.

Kubernetes 1.20 serves PodDisruptionBudgets only as policy/v1beta1 (policy/v1 came in 1.21, and v1beta1 went in
1.25). A real operator asks the server instead of assuming: the first version in the preference list that the
server lists wins, and None means "not served at all" (the caller skips that child and says so). The answer is
kept for `ttl` seconds so a reconcile costs no discovery call, yet a server upgraded under a running operator is
noticed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gossip_operator.kube import KubeClient
from gossip_operator.manifests.resources import PODDISRUPTIONBUDGETS, PODDISRUPTIONBUDGETS_V1BETA1, Resource

DISCOVERY_TTL = 600.0
PDB_PREFERENCE = (PODDISRUPTIONBUDGETS, PODDISRUPTIONBUDGETS_V1BETA1)


@dataclass
class ApiVersions:
    """Discovery answers by preference list; `clock` is injectable for tests."""

    ttl: float = DISCOVERY_TTL
    clock: Callable[[], float] = time.monotonic
    _answers: dict[tuple[Resource, ...], tuple[float, Resource | None]] = field(default_factory=dict)

    async def pick(self, kube: KubeClient, preference: tuple[Resource, ...]) -> Resource | None:
        now = self.clock()
        cached = self._answers.get(preference)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        chosen = None
        for resource in preference:
            if await kube.serves(resource):
                chosen = resource
                break
        self._answers[preference] = (now, chosen)
        return chosen
