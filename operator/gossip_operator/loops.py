"""Per-cluster periodic passes (status, resync) as plain asyncio tasks, instead of kopf timers.

kopf puts its finalizer on every object a timer or daemon serves (it must stop them before the object goes),
hard-wired. With the operator gone (helm uninstall, a namespace deleted with the operator in it, a crashed
pod) every GossipCluster would then hang in Terminating until someone removed the finalizer by hand. The
operator needs no clean-up at deletion (children are owned through ownerReferences and garbage-collected by
Kubernetes), so it keeps no finalizer: a watch handler (kopf.on.event, finalizer-free) tells this registry
about each cluster, its loops run while the cluster exists, and they are cancelled when the watch reports it
deleted (or being deleted) and when the operator stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

Pass = Callable[[str], Awaitable[None]]  # called with the cluster's uid


@dataclass(frozen=True, slots=True)
class Loop:
    name: str
    interval: float
    initial_delay: float
    run: Pass


@dataclass
class ClusterLoops:
    """The latest body of every live cluster and its running loops."""

    loops: tuple[Loop, ...] = ()
    _bodies: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    _tasks: dict[str, list[asyncio.Task[None]]] = field(default_factory=dict)
    closed: bool = False

    def body(self, uid: str) -> Mapping[str, Any] | None:
        return self._bodies.get(uid)

    def tracked(self) -> list[str]:
        return sorted(self._tasks)

    def track(self, uid: str, body: Mapping[str, Any]) -> None:
        """Remember the cluster's latest body; start its loops the first time it is seen."""
        if self.closed:
            return
        self._bodies[uid] = body
        if uid not in self._tasks:
            self._tasks[uid] = [asyncio.create_task(self._run(uid, loop), name=f"{loop.name} {uid}")
                                for loop in self.loops]

    def forget(self, uid: str) -> None:
        self._bodies.pop(uid, None)
        for task in self._tasks.pop(uid, []):
            task.cancel()

    def cancel_all(self) -> None:
        """Stop every loop (operator exit); later `track` calls start nothing."""
        self.closed = True
        for uid in list(self._tasks):
            self.forget(uid)

    async def close(self) -> None:
        tasks = [t for ts in self._tasks.values() for t in ts]
        self.cancel_all()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, uid: str, loop: Loop) -> None:
        await asyncio.sleep(loop.initial_delay)
        while True:
            try:
                await loop.run(uid)
            except asyncio.CancelledError:
                raise
            except Exception:  # the next pass tries again; kopf's timers did the same after their backoff
                logger.exception("%s pass of %s failed", loop.name, uid)
            await asyncio.sleep(loop.interval)
