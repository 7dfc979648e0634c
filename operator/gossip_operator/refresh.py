"""The status pass, in two steps so that the slow one holds no lock:

1. `query_agents`: ask a few agents over HTTP (bounded: agents.py), with no lock held, so a reconcile of the
   same cluster (a spec change) never waits behind unreachable agents;
2. `refresh`: compute the status (status.py) from the pods and StatefulSet in kopf's indexes and the latest
   agent reports, and patch it only when it changed. No agent I/O: the reconciler calls it under the
   cluster's lock to show InvalidSpec or progress at once.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gossip_operator import status as status_model
from gossip_operator.manifests.common import selector_string
from gossip_operator.manifests.resources import GOSSIPCLUSTERS, SECRETS
from gossip_operator.runtime import Runtime
from gossip_operator.spec import DEFAULT_PORT, ClusterSpec, InvalidSpec, parse

logger = logging.getLogger(__name__)


async def _tls_trust(runtime: Runtime, spec: ClusterSpec) -> str | None:
    """PEM trust anchors for the agents' HTTPS: the TLS Secret's ca.crt, else its tls.crt (the certificate the
    agents serve, pinned); None (the system CAs) when the Secret has neither."""
    if not spec.tls_secret:
        return None
    secret = await runtime.kube.get(SECRETS, spec.namespace, spec.tls_secret)
    data = (secret or {}).get("data") or {}
    for key in ("ca.crt", "tls.crt"):
        if data.get(key):
            return base64.b64decode(data[key]).decode()
    return None


def _identity(body: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid"))


def _parse(body: Mapping[str, Any]) -> tuple[ClusterSpec | None, str | None]:
    name, namespace, _ = _identity(body)
    try:
        return parse(body.get("spec") or {}, name=name, namespace=namespace), None
    except InvalidSpec as exc:
        return None, str(exc)


async def query_agents(runtime: Runtime, body: Mapping[str, Any],
                       pods: Iterable[status_model.PodObservation]) -> tuple[status_model.AgentReport, ...]:
    """Ask a few of the cluster's agents (no lock held; bounded in queries and time by agents.py)."""
    _, _, uid = _identity(body)
    spec, _ = _parse(body)
    raw_spec = body.get("spec") or {}
    pod_list = tuple(sorted(pods, key=lambda p: p.name))
    reports: tuple[status_model.AgentReport, ...] = ()
    if pod_list:
        reports = await runtime.agents.query(
            pod_list,
            default_port=spec.port if spec else int(raw_spec.get("port") or DEFAULT_PORT),
            limit=runtime.settings.agents_to_query,
            tls=bool(spec and spec.tls),
            tls_ca=await _tls_trust(runtime, spec) if spec else None,
        )
        for report in reports:
            runtime.metrics.agent_queries.labels(result="ok" if report.ok else "error").inc()
    runtime.last_reports[uid] = reports
    return reports


async def refresh(runtime: Runtime, body: Mapping[str, Any], *,
                  pods: Iterable[status_model.PodObservation],
                  statefulset: status_model.StatefulSetObservation | None,
                  reports: tuple[status_model.AgentReport, ...] | None = None,
                  now: datetime | None = None) -> status_model.StatusUpdate:
    """Compute and write the status; `reports` default to the last agent answers (query_agents)."""
    name, namespace, uid = _identity(body)
    meta = body.get("metadata") or {}
    raw_spec = body.get("spec") or {}
    spec, error = _parse(body)
    if error is None:
        error = runtime.transition_error(uid, int(meta.get("generation") or 0))
    raw_replicas = raw_spec.get("replicas")
    replicas = spec.replicas if spec else raw_replicas if isinstance(raw_replicas, int) else 0
    pod_list = tuple(sorted(pods, key=lambda p: p.name))
    if reports is None:
        reports = runtime.last_reports.get(uid, ())
    selector = selector_string(spec) if spec else (
        f"app.kubernetes.io/instance={name},app.kubernetes.io/name=gossip-agent")
    observation = status_model.Observation(
        generation=int(meta.get("generation") or 0),
        desired_replicas=replicas,
        selector=selector,
        paused=bool(spec and spec.paused),
        spec_error=error,
        statefulset=statefulset,
        pods=pod_list,
        reports=reports,
    )
    previous = runtime.last_status.get(uid) or body.get("status") or {}
    update = status_model.compute(observation, previous, now or datetime.now(tz=UTC))
    if update.patch is not None:
        await runtime.kube.patch(GOSSIPCLUSTERS, namespace, name, update.patch, subresource="status")
    runtime.last_status[uid] = update.status
    runtime.metrics.set_phase(f"{namespace}/{name}", update.status["phase"])
    return update
