"""What one operator process shares between its handlers: settings, the two clients, metrics, and small
in-memory state (per-cluster locks, the status last written). Passed to handlers through kopf's memo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gossip_operator.agents import AgentsClient
from gossip_operator.discovery import ApiVersions
from gossip_operator.kube import KubeClient
from gossip_operator.metrics import OperatorMetrics
from gossip_operator.settings import OperatorSettings


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeClient
    agents: AgentsClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # Which optional APIs (PodDisruptionBudget versions) the server serves.
    api_versions: ApiVersions = field(default_factory=ApiVersions)
    # Reconcile and status passes of one cluster never overlap (kopf runs timers and change handlers
    # concurrently); different clusters proceed in parallel.
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The status this process last wrote, by uid: fresher than the body of a timer that may predate it.
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Set once the process begins to stop (before kopf is told to): timers no longer (re)spawn.
    exiting: bool = False

    def begin_exit(self) -> None:
        self.exiting = True

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def forget(self, uid: str, key: str) -> None:
        self._locks.pop(uid, None)
        self.last_status.pop(uid, None)
        self.metrics.set_phase(key, None)

    async def close(self) -> None:
        await self.kube.close()
        await self.agents.close()
