"""What one operator process shares between its handlers: settings, the two clients, metrics, and small
in-memory state (per-cluster locks, the status last written). Passed to handlers through kopf's memo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gossip_operator.agents import AgentsClient
from gossip_operator.discovery import ApiVersions
from gossip_operator.kube import KubeClient
from gossip_operator.loops import ClusterLoops
from gossip_operator.metrics import OperatorMetrics
from gossip_operator.settings import OperatorSettings
from gossip_operator.status import AgentReport


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: KubeClient
    agents: AgentsClient
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    # Which optional APIs (PodDisruptionBudget versions) the server serves.
    api_versions: ApiVersions = field(default_factory=ApiVersions)
    # Reconciles and status writes of one cluster never overlap (kopf runs change handlers while our loops
    # run); the agent queries of a status pass happen outside it. Different clusters proceed in parallel.
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # The status this process last wrote, by uid: fresher than a body that may predate it.
    last_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The last agent answers, by uid (a reconcile shows progress with them, without asking agents again).
    last_reports: dict[str, tuple[AgentReport, ...]] = field(default_factory=dict)
    # Unsafe spec transitions the reconciler refused, by uid: (generation, message) (see transitions.py).
    _transition_errors: dict[str, tuple[int, str]] = field(default_factory=dict)
    # The status and resync loops of every cluster (loops.py; set up by handlers.build_registry).
    loops: ClusterLoops = field(default_factory=ClusterLoops)
    # The last refused zone label reported per node (zone_annotator.py warns once per node and label, not per pod
    # and pass).
    zone_problems: dict[str, str] = field(default_factory=dict)
    # Set once the process begins to stop (before kopf is told to): loops no longer run or start.
    exiting: bool = False

    def begin_exit(self) -> None:
        self.exiting = True
        self.loops.cancel_all()

    def lock(self, uid: str) -> asyncio.Lock:
        return self._locks.setdefault(uid, asyncio.Lock())

    def set_transition_error(self, uid: str, generation: int, message: str | None) -> None:
        if message is None:
            self._transition_errors.pop(uid, None)
        else:
            self._transition_errors[uid] = (generation, message)

    def transition_error(self, uid: str, generation: int) -> str | None:
        """The refused transition of this generation of the spec, if any."""
        found = self._transition_errors.get(uid)
        return found[1] if found is not None and found[0] == generation else None

    def forget(self, uid: str, key: str) -> None:
        self.loops.forget(uid)
        self._locks.pop(uid, None)
        self.last_status.pop(uid, None)
        self.last_reports.pop(uid, None)
        self._transition_errors.pop(uid, None)
        self.metrics.set_phase(key, None)

    async def close(self) -> None:
        await self.loops.close()
        await self.kube.close()
        await self.agents.close()
