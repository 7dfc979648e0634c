"""kopf handlers: thin glue from kopf's causes to reconcile.py and refresh.py. No decisions live here.

`build_registry(settings)` registers everything in a fresh registry, so timer intervals come from the settings
and tests can run several operators (one after another) in one process.

- create / update / resume of a GossipCluster, and a resync timer: reconcile the children;
- a status timer: ask a few agents, patch the status when it changed, post Events for what changed;
- indexes of agent pods and StatefulSets (kept current by watches), so a status pass makes no LIST call;
- login: the same credentials the operator's own client uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import kopf

from gossip_operator import status as status_model
from gossip_operator.manifests.common import AGENT_APP, AGENT_PORT_ANNOTATION, HTTP_PORT_NAME, MANAGER
from gossip_operator.reconcile import ReconcileResult, reconcile
from gossip_operator.refresh import refresh
from gossip_operator.runtime import Runtime
from gossip_operator.settings import OperatorSettings
from gossip_operator.spec import GROUP, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, PLURAL, VERSION

MANAGED = {LABEL_MANAGED_BY: MANAGER, LABEL_NAME: AGENT_APP}
_T = TypeVar("_T")


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _not_exiting(memo: Any, **_: Any) -> bool:
    """The timers' filter. On exit kopf stops the timers it knows, but a worker still draining an object's events
    re-spawns them (kopf spawns timers on every event it processes), and those would keep firing until kopf
    cancels them as hung tasks seconds later. Once the runner has begun to exit, timers match no object."""
    return not _runtime(memo).exiting


async def _until_stopped(work: Awaitable[_T], stopped: Any) -> _T | None:
    """Run a timer's pass, but cancel it when kopf stops the timer (operator exit, object deleted): a pass waiting
    on a slow agent or API call must not hold the shutdown back. None when cancelled so."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()


def _post(body: kopf.Body, events: Any) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _observations(indexes: dict[str, Any], namespace: str | None, name: str | None,
                  ) -> tuple[list[status_model.PodObservation], status_model.StatefulSetObservation | None]:
    """This cluster's pods and StatefulSet from kopf's indexes (passed to handlers as kwargs by name)."""
    key = (namespace, name)
    pods = list(indexes["agent_pods"].get(key, []))
    sets = list(indexes["agent_statefulsets"].get(key, []))
    return pods, (sets[0] if sets else None)


def _report(body: kopf.Body, result: ReconcileResult, trigger: str, logger: Any) -> None:
    for warning in result.warnings:
        logger.warning(warning)
        if trigger != "resync":  # the resync timer would repeat the same warning every pass
            kopf.warn(body, reason="ReconcileWarning", message=warning)
    if result.created or result.updated or result.deleted:
        reason = "DriftCorrected" if trigger in ("resync", "resume") else "Reconciled"
        parts = [f"{verb} {', '.join(items)}" for verb, items in
                 (("created", result.created), ("updated", result.updated), ("deleted", result.deleted)) if items]
        kopf.event(body, type="Normal", reason=reason, message="; ".join(parts))


def build_registry(settings: OperatorSettings) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
        return _runtime(memo).kube.connection_info()

    @kopf.index("v1", "pods", id="agent_pods", labels=MANAGED, registry=registry)
    def agent_pods(body: kopf.Body, labels: kopf.Labels, namespace: str | None, **_: Any) -> dict[Any, Any]:
        cluster = labels.get(LABEL_INSTANCE)
        if not cluster:
            return {}
        return {(namespace, cluster): status_model.pod_observation(
            body, port_annotation=AGENT_PORT_ANNOTATION, port_name=HTTP_PORT_NAME)}

    @kopf.index("apps", "v1", "statefulsets", id="agent_statefulsets", labels=MANAGED, registry=registry)
    def agent_statefulsets(body: kopf.Body, labels: kopf.Labels, namespace: str | None,
                           **_: Any) -> dict[Any, Any]:
        cluster = labels.get(LABEL_INSTANCE)
        if not cluster:
            return {}
        return {(namespace, cluster): status_model.statefulset_observation(body)}

    async def _reconcile(trigger: str, body: kopf.Body, memo: Any, logger: Any, indexes: dict[str, Any]) -> None:
        runtime = _runtime(memo)
        async with runtime.lock(str(body.metadata.uid)):
            result = await reconcile(runtime, body, trigger=trigger)
            _report(body, result, trigger, logger)
            if result.spec_error or result.changed:  # show InvalidSpec / progress now, not at the next tick
                pods, sts = _observations(indexes, body.metadata.namespace, body.metadata.name)
                update = await refresh(runtime, body, pods=pods, statefulset=sts)
                _post(body, update.events)

    backoff = settings.retry_backoff

    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile-create", backoff=backoff, registry=registry)
    async def on_create(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        await _reconcile("create", body, memo, logger, kwargs)

    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile-update", backoff=backoff, registry=registry)
    async def on_update(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        await _reconcile("update", body, memo, logger, kwargs)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile-resume", backoff=backoff, registry=registry)
    async def on_resume(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        await _reconcile("resume", body, memo, logger, kwargs)

    @kopf.timer(GROUP, VERSION, PLURAL, id="resync", interval=settings.resync_interval,
                initial_delay=settings.resync_interval, when=_not_exiting, registry=registry)
    async def resync(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        await _until_stopped(_reconcile("resync", body, memo, logger, kwargs), kwargs["stopped"])

    @kopf.timer(GROUP, VERSION, PLURAL, id="status", interval=settings.status_interval, when=_not_exiting,
                registry=registry)
    async def status_timer(body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        runtime = _runtime(memo)
        pods, sts = _observations(kwargs, body.metadata.namespace, body.metadata.name)

        async def status_pass() -> status_model.StatusUpdate:
            async with runtime.lock(str(body.metadata.uid)):
                try:
                    return await refresh(runtime, body, pods=pods, statefulset=sts)
                except Exception:
                    runtime.metrics.errors.labels(stage="status").inc()
                    raise

        update = await _until_stopped(status_pass(), kwargs["stopped"])
        if update is not None:
            _post(body, update.events)

    @kopf.on.delete(GROUP, VERSION, PLURAL, id="forget", optional=True, registry=registry)
    def forget(body: kopf.Body, memo: Any, **_: Any) -> None:
        # Children go with the cluster by ownerReferences (Kubernetes' garbage collector); only drop our state.
        _runtime(memo).forget(str(body.metadata.uid), f"{body.metadata.namespace}/{body.metadata.name}")

    return registry
