"""kopf handlers: thin glue from kopf's causes to reconcile.py and refresh.py. No decisions live here.

`build_registry(settings, runtime)` registers everything in a fresh registry, so intervals come from the settings
and tests can run several operators (one after another) in one process.

- create / update / resume of a GossipCluster: reconcile the children;
- a watch handler (kopf.on.event) keeps runtime.loops current: each cluster gets a status loop (ask a few agents
  with no lock held, then write the status under the cluster's lock) and a resync loop (reconcile again). Not
  kopf timers: those put a finalizer on every GossipCluster (see loops.py), so no finalizer is ever added;
- indexes of agent pods and StatefulSets (kept current by watches, filtered by label on the server through
  kopf's settings.watching.label_selectors, see runner.py), so a status pass makes no LIST call;
- zones: an index of every node's zone and one of the agent pods by node; a pod event, a node event and each
  resync pass hand the affected pods to zone_annotator.py, which writes each pod's zone annotation (zones.py);
- login: the same credentials the operator's own client uses.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import kopf

from gossip_operator import status as status_model
from gossip_operator import zones
from gossip_operator.loops import Loop
from gossip_operator.manifests.common import AGENT_APP, AGENT_PORT_ANNOTATION, HTTP_PORT_NAME, MANAGER
from gossip_operator.manifests.resources import GOSSIPCLUSTERS
from gossip_operator.reconcile import ReconcileResult, reconcile
from gossip_operator.refresh import query_agents, refresh
from gossip_operator.runtime import Runtime
from gossip_operator.settings import OperatorSettings
from gossip_operator.spec import GROUP, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_NAME, PLURAL, VERSION
from gossip_operator.zone_annotator import annotate

MANAGED = {LABEL_MANAGED_BY: MANAGER, LABEL_NAME: AGENT_APP}
# The same as a label selector string, for server-side filtering of the pod and StatefulSet watches.
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in sorted(MANAGED.items()))


logger = logging.getLogger(__name__)


class _ClusterLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"{(self.extra or {}).get('cluster')}: {msg}", kwargs


def _runtime(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime


def _post(body: Any, events: Any) -> None:
    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)


def _observations(indexes: dict[str, Any], namespace: str | None, name: str | None,
                  ) -> tuple[list[status_model.PodObservation], status_model.StatefulSetObservation | None]:
    """This cluster's pods and StatefulSet from kopf's indexes (handed to every handler as kwargs by name)."""
    key = (namespace, name)
    pods = list(indexes.get("agent_pods", {}).get(key, []))
    sets = list(indexes.get("agent_statefulsets", {}).get(key, []))
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
    # kopf's index objects (live views), captured from the first watch event: the loops run outside handlers.
    indexes: dict[str, Any] = {}

    def _capture(kwargs: dict[str, Any]) -> None:
        for index in ("agent_pods", "agent_statefulsets", "node_zones", "agent_pods_by_node"):
            if index in kwargs:
                indexes.setdefault(index, kwargs[index])

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

    @kopf.index("v1", "nodes", id="node_zones", registry=registry)
    def node_zones(name: str, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
        return {name: zones.node_zone(labels)}

    @kopf.index("v1", "pods", id="agent_pods_by_node", labels=MANAGED, registry=registry)
    def agent_pods_by_node(body: kopf.Body, **_: Any) -> dict[Any, Any]:
        pod = zones.pod_zone(body)
        return {pod.node: pod} if pod.node else {}

    def _node_zone(node: str) -> zones.NodeZone | None:
        return next(iter(indexes.get("node_zones", {}).get(node, [])), None)

    def _pods_on(node: str) -> list[zones.PodZone]:
        return list(indexes.get("agent_pods_by_node", {}).get(node, []))

    @kopf.on.event("v1", "pods", id="pod-zone", labels=MANAGED, registry=registry)
    async def pod_zone(event: Any, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        _capture(kwargs)
        if event.get("type") != "DELETED":
            await annotate(_runtime(memo), [zones.pod_zone(body)], _node_zone)

    @kopf.on.event("v1", "nodes", id="node-zone", registry=registry)
    async def node_zone(event: Any, name: str, memo: Any, **kwargs: Any) -> None:
        _capture(kwargs)
        if event.get("type") != "DELETED":
            await annotate(_runtime(memo), _pods_on(name), _node_zone)

    def _cluster_pods(namespace: str | None, cluster: str) -> list[zones.PodZone]:
        return [pod for store in indexes.get("agent_pods_by_node", {}).values() for pod in store
                if pod.namespace == namespace and pod.cluster == cluster]

    async def _exists(runtime: Runtime, body: Any) -> bool:
        """Is this very cluster (same uid) still there and not being deleted, by the API server's word?

        Reconciling creates children, so it must not run on a cluster that is gone: without a finalizer, kopf
        can run the creation handler a second time on the body of the DELETED event (it could not store its
        progress annotation on the deleted object), and a resync's view from the watch can be stale. One GET
        per reconcile (rare) rules out resurrecting orphans; status passes only patch status and need none.
        """
        meta = body["metadata"]
        live = await runtime.kube.get(GOSSIPCLUSTERS, str(meta.get("namespace")), str(meta["name"]))
        live_meta = (live or {}).get("metadata") or {}
        if live is None or live_meta.get("uid") != meta.get("uid") or live_meta.get("deletionTimestamp"):
            runtime.forget(str(meta.get("uid")), f"{meta.get('namespace')}/{meta['name']}")
            return False
        return True

    async def _reconcile(runtime: Runtime, trigger: str, body: Any, logger: Any) -> None:
        async with runtime.lock(str(body["metadata"]["uid"])):
            if not await _exists(runtime, body):
                return
            result = await reconcile(runtime, body, trigger=trigger)
            _report(body, result, trigger, logger)
            if result.spec_error or result.changed:  # show InvalidSpec / progress now, not at the next pass
                pods, sts = _observations(indexes, body["metadata"].get("namespace"), body["metadata"]["name"])
                update = await refresh(runtime, body, pods=pods, statefulset=sts)  # last agent reports: no I/O
                _post(body, update.events)

    backoff = settings.retry_backoff

    @kopf.on.create(GROUP, VERSION, PLURAL, id="reconcile-create", backoff=backoff, registry=registry)
    async def on_create(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        _capture(kwargs)
        await _reconcile(_runtime(memo), "create", body, logger)

    @kopf.on.update(GROUP, VERSION, PLURAL, id="reconcile-update", backoff=backoff, registry=registry)
    async def on_update(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        _capture(kwargs)
        await _reconcile(_runtime(memo), "update", body, logger)

    @kopf.on.resume(GROUP, VERSION, PLURAL, id="reconcile-resume", backoff=backoff, registry=registry)
    async def on_resume(body: kopf.Body, memo: Any, logger: Any, **kwargs: Any) -> None:
        _capture(kwargs)
        await _reconcile(_runtime(memo), "resume", body, logger)

    def loops(runtime: Runtime) -> tuple[Loop, ...]:
        async def resync(uid: str) -> None:
            body = runtime.loops.body(uid)
            if body is None:
                return
            meta = body["metadata"]
            key = f"{meta.get('namespace')}/{meta['name']}"
            # A plain logger: kopf's per-object loggers belong to one object and turn warnings into Events
            # on it; _report posts the Events it wants itself.
            await _reconcile(runtime, "resync", body, _ClusterLogger(logger, {"cluster": key}))
            # Zone annotations that a failed patch left behind (event handlers are not retried).
            await annotate(runtime, _cluster_pods(meta.get("namespace"), str(meta["name"])), _node_zone)

        async def status_pass(uid: str) -> None:
            body = runtime.loops.body(uid)
            if body is None:
                return
            meta = body["metadata"]
            started = time.monotonic()
            try:
                pods, _ = _observations(indexes, meta.get("namespace"), meta["name"])
                reports = await query_agents(runtime, body, pods)  # slow part: no lock held
                async with runtime.lock(uid):
                    body = runtime.loops.body(uid) or body  # the freshest spec/generation
                    pods, sts = _observations(indexes, meta.get("namespace"), meta["name"])
                    update = await refresh(runtime, body, pods=pods, statefulset=sts, reports=reports)
            except Exception:
                runtime.metrics.errors.labels(stage="status").inc()
                raise
            runtime.metrics.status_seconds.observe(time.monotonic() - started)  # queries included
            _post(body, update.events)

        return (Loop("status", settings.status_interval, 0.0, status_pass),
                Loop("resync", settings.resync_interval, settings.resync_interval, resync))

    @kopf.on.event(GROUP, VERSION, PLURAL, id="track", registry=registry)
    async def track(event: Any, body: kopf.Body, memo: Any, **kwargs: Any) -> None:
        runtime = _runtime(memo)
        _capture(kwargs)
        uid = str(body.metadata.uid)
        if event.get("type") == "DELETED" or body.metadata.get("deletionTimestamp"):
            # Children go with the cluster by ownerReferences (Kubernetes' garbage collector); only drop our state.
            runtime.forget(uid, f"{body.metadata.namespace}/{body.metadata.name}")
            return
        if runtime.exiting:
            return
        if not runtime.loops.loops:
            runtime.loops.loops = loops(runtime)
        runtime.loops.track(uid, copy.deepcopy(dict(body)))

    return registry
