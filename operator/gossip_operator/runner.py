"""Run the operator: kopf with our registry and settings, plus the metrics endpoint.

One replica, standalone (no kopf peering). kopf's peering only makes operators pause while a higher-priority
peer is alive; it is not leader election: two replicas starting together, or a partition, can both act, and
the StatefulSet already gives the agents their availability. A Deployment with one replica and the
Recreate strategy means an operator outage is short and harmless: agents keep gossiping without it, only
reconciliation and status wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

import kopf
from aiohttp import web

from gossip_operator.agents import AgentsClient
from gossip_operator.handlers import MANAGED_SELECTOR, build_registry
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
    # Watch only the agents' pods and StatefulSets, filtered by the API server (the indexes' `labels=` filter
    # is applied by kopf after every event has arrived: a cluster-wide operator would receive every pod event
    # of the cluster).
    for resource in (("v1", "pods"), ("apps", "v1", "statefulsets")):
        k.watching.label_selectors[resource] = MANAGED_SELECTOR
    k.watching.server_timeout = 300
    k.watching.client_timeout = 330
    k.networking.request_timeout = 60
    # Shutdown: an event handler still running when the operator stops gets this long to finish before kopf
    # cancels it (kopf's default is 2s; a reconcile is idempotent and the next start resumes it)...
    k.queueing.exit_timeout = EXIT_TIMEOUT
    # ... and should the graceful exit ever hang after a signal, the process kills itself well before the
    # pod's terminationGracePeriodSeconds (30 in the chart); kopf's default is 10 minutes.
    k.process.ultimate_exiting_timeout = ULTIMATE_EXITING_TIMEOUT
    return k


EXIT_TIMEOUT = 1.0
ULTIMATE_EXITING_TIMEOUT = 20.0
# How often an external threading.Event stop flag is looked at (no executor thread waits on it).
_STOP_FLAG_POLL = 0.05


async def _wait_flag(flag: asyncio.Event | asyncio.Future[Any] | threading.Event) -> None:
    if isinstance(flag, threading.Event):
        while not flag.is_set():
            await asyncio.sleep(_STOP_FLAG_POLL)
    elif isinstance(flag, asyncio.Event):
        await flag.wait()
    else:
        await flag


def _take_over_signals(begin_exit: Callable[[str], None]) -> list[signal.Signals]:
    """SIGTERM/SIGINT begin our exit (timers stop spawning) before kopf's. kopf installed its own handlers in
    spawn_tasks() (main thread only); these replace them."""
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    taken = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, begin_exit, signum.name)
            taken.append(signum)
    return taken


async def _serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


StopFlag = asyncio.Event | asyncio.Future[Any] | threading.Event


async def run(settings: OperatorSettings, *, stop_flag: StopFlag | None = None,
              ready_flag: asyncio.Event | asyncio.Future[Any] | threading.Event | None = None,
              runtime: Runtime | None = None) -> None:
    """Run until stop_flag is set (or SIGTERM/SIGINT arrives when this is the main thread).

    What stops kopf is our own flag, set by `begin_exit` after `runtime.begin_exit()` has cancelled the per-cluster
    loops (and made sure none starts again while kopf drains its workers), so kopf has no hung task to wait for.
    """
    if runtime is None:
        runtime = Runtime(settings=settings, kube=KubeClient(load_configuration(settings.kubeconfig)),
                          agents=AgentsClient(timeout=settings.agent_timeout))
    runtime.exiting = False
    runtime.loops.closed = False
    loop = asyncio.get_running_loop()
    k = kopf_settings(settings)
    stopping = asyncio.Event()  # the only stop flag kopf sees
    ultimate: list[asyncio.TimerHandle] = []

    def begin_exit(reason: str) -> None:
        if not runtime.exiting:
            logger.info("Stopping (%s).", reason)
            runtime.begin_exit()
        if reason != "stop flag" and not ultimate and k.process.ultimate_exiting_timeout is not None:
            # kopf arms this itself only for the signals it receives; these are ours now.
            ultimate.append(loop.call_later(k.process.ultimate_exiting_timeout, signal.pthread_kill,
                                            threading.get_ident(), signal.SIGKILL))
        stopping.set()

    async def relay(flag: StopFlag) -> None:
        await _wait_flag(flag)
        begin_exit("stop flag")

    metrics_runner = None
    if settings.metrics_port:
        metrics_runner = await _serve_metrics(runtime.metrics, settings.metrics_host, settings.metrics_port)
    memo: Any = kopf.Memo(runtime=runtime)
    relay_task = asyncio.create_task(relay(stop_flag), name="stop-flag relay") if stop_flag is not None else None
    existing = asyncio.all_tasks()  # not kopf's: never cancelled by it nor waited for as "hung"
    signals: list[signal.Signals] = []
    try:
        tasks = await kopf.spawn_tasks(
            registry=build_registry(settings),
            settings=k,
            standalone=True,
            clusterwide=settings.clusterwide,
            namespaces=list(settings.namespaces),
            liveness_endpoint=settings.liveness_endpoint,
            memo=memo,
            stop_flag=stopping,
            ready_flag=ready_flag,
        )
        signals = _take_over_signals(begin_exit)
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        for handle in ultimate:
            handle.cancel()
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runtime.close()
