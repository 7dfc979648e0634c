"""Run the operator: kopf with our registry and settings, plus the metrics endpoint.

One replica, standalone (no kopf peering). kopf's peering only makes operators pause while a higher-priority
peer is alive; it is not leader election: two replicas starting together, or a partition, can both act, and
the StatefulSet already gives the agents their availability. A Deployment with one replica and the
Recreate strategy means an operator outage is short and harmless: agents keep gossiping without it, only
reconciliation and status wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from aiohttp import web

from gossip_operator.agents import AgentsClient
from gossip_operator.handlers import build_registry
from gossip_operator.kube import KubeClient, load_configuration
from gossip_operator.metrics import OperatorMetrics
from gossip_operator.runtime import Runtime
from gossip_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)
ANNOTATIONS_PREFIX = "gossip-operator.dev"


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    k = kopf.OperatorSettings()
    k.persistence.finalizer = f"{ANNOTATIONS_PREFIX}/finalizer"
    k.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATIONS_PREFIX)
    k.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATIONS_PREFIX, key="last-handled-configuration")
    k.posting.reporting_component = "gossip-operator"
    # Only warnings and errors from logs become Events; our own Events are posted explicitly.
    k.posting.level = logging.WARNING
    k.peering.standalone = True
    k.watching.server_timeout = 300
    k.watching.client_timeout = 330
    k.networking.request_timeout = 60
    return k


async def _serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run(settings: OperatorSettings, *, stop_flag: asyncio.Event | None = None,
              ready_flag: asyncio.Event | None = None, runtime: Runtime | None = None) -> None:
    """Run until stop_flag is set (or a signal arrives when this is the main thread)."""
    if runtime is None:
        runtime = Runtime(settings=settings, kube=KubeClient(load_configuration(settings.kubeconfig)),
                          agents=AgentsClient(timeout=settings.agent_timeout))
    metrics_runner = None
    if settings.metrics_port:
        metrics_runner = await _serve_metrics(runtime.metrics, settings.metrics_host, settings.metrics_port)
    memo: Any = kopf.Memo(runtime=runtime)
    try:
        await kopf.operator(
            registry=build_registry(settings),
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=settings.clusterwide,
            namespaces=list(settings.namespaces),
            liveness_endpoint=settings.liveness_endpoint,
            memo=memo,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runtime.close()
