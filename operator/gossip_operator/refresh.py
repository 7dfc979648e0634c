"""The status pass: observe (pods and StatefulSet from kopf's indexes, a few agents over HTTP), compute the
status (status.py), and patch it only when it changed."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from gossip_operator import status as status_model
from gossip_operator.manifests import secret as secret_manifest
from gossip_operator.manifests.common import API_TOKENS_KEY, selector_string
from gossip_operator.manifests.resources import GOSSIPCLUSTERS, SECRETS
from gossip_operator.runtime import Runtime
from gossip_operator.spec import DEFAULT_PORT, ClusterSpec, InvalidSpec, parse

logger = logging.getLogger(__name__)


async def _tls_ca(runtime: Runtime, spec: ClusterSpec) -> str | None:
    if not spec.tls_secret:
        return None
    secret = await runtime.kube.get(SECRETS, spec.namespace, spec.tls_secret)
    value = ((secret or {}).get("data") or {}).get("ca.crt")
    return base64.b64decode(value).decode() if value else None


async def _api_token(runtime: Runtime, spec: ClusterSpec) -> str | None:
    """The read token of the cluster's API tokens Secret (agents answer 401 without one)."""
    secret = await runtime.kube.get(SECRETS, spec.namespace, secret_manifest.api_tokens_secret_name(spec))
    return secret_manifest.read_token(((secret or {}).get("data") or {}).get(API_TOKENS_KEY))


async def refresh(runtime: Runtime, body: Mapping[str, Any], *,
                  pods: Iterable[status_model.PodObservation],
                  statefulset: status_model.StatefulSetObservation | None,
                  now: datetime | None = None) -> status_model.StatusUpdate:
    meta = body.get("metadata") or {}
    name, namespace, uid = str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid"))
    raw_spec = body.get("spec") or {}
    started = time.monotonic()
    spec: ClusterSpec | None
    try:
        spec = parse(raw_spec, name=name, namespace=namespace)
        error = None
    except InvalidSpec as exc:
        spec, error = None, str(exc)
    raw_replicas = raw_spec.get("replicas")
    replicas = spec.replicas if spec else raw_replicas if isinstance(raw_replicas, int) else 0
    pod_list = tuple(sorted(pods, key=lambda p: p.name))
    reports: tuple[status_model.AgentReport, ...] = ()
    if pod_list:
        reports = await runtime.agents.query(
            pod_list,
            default_port=spec.port if spec else int(raw_spec.get("port") or DEFAULT_PORT),
            limit=runtime.settings.agents_to_query,
            tls=bool(spec and spec.tls),
            tls_ca=await _tls_ca(runtime, spec) if spec else None,
            token=await _api_token(runtime, spec) if spec else None,
        )
        for report in reports:
            runtime.metrics.agent_queries.labels(result="ok" if report.ok else "error").inc()
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
    runtime.metrics.status_seconds.observe(time.monotonic() - started)
    return update
