"""Fixtures: an emulated Kubernetes API on a free 127.0.0.1 port (with the CRD installed and a kubeconfig),
and the operator running in-process against it (kopf in this event loop) with short intervals."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from gossip_operator.agents import AgentsClient
from gossip_operator.kube import KubeClient, load_configuration
from gossip_operator.runner import run
from gossip_operator.runtime import Runtime
from gossip_operator.settings import OperatorSettings
from tests.support.kube_emulator import EmulatedCluster, emulated_cluster, load_crd

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "gossipclusters.gossip-operator.dev.yaml"
EXAMPLE_PATH = ROOT / "examples" / "gossipcluster.yaml"
GSC = "gossip-operator.dev/v1alpha1/gossipclusters"
STS = "apps/v1/statefulsets"
NAMESPACE = "default"

FAST = OperatorSettings(
    status_interval=0.3,
    resync_interval=0.6,
    agent_timeout=1.0,
    liveness_port=0,
    metrics_port=0,
    retry_backoff=0.5,
)


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy (an upper bound on waiting, not a timing assertion). 60 s: the longest
    operator test needs ~0.7 s of CPU across its waits, ~14 s of wall clock at load 40 on 2 cores."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[EmulatedCluster]:
    async with emulated_cluster(tmp_path / "kubeconfig") as emulated:
        load_crd(emulated.api, CRD_PATH)
        monkeypatch.setenv("KUBECONFIG", str(emulated.kubeconfig))
        yield emulated


@dataclass
class RunningOperator:
    """The operator in its own thread and event loop, like a separate process: kopf treats every task of its
    loop as its own (and cancels them on exit), so it must not share the emulator's loop."""

    runtime: Runtime
    thread: threading.Thread
    stop_flag: threading.Event
    settings: OperatorSettings
    failure: list[BaseException] = field(default_factory=list)

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 60)
        assert not self.thread.is_alive(), "the operator did not stop"
        if self.failure:
            raise self.failure[0]

    def reconciles(self, trigger: str | None = None) -> float:
        """Reconcile passes so far (from the operator's own metrics)."""
        total = 0.0
        for metric in self.runtime.metrics.reconciles.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total") and trigger in (None, sample.labels.get("trigger")):
                    total += sample.value
        return total


OperatorFactory = Callable[..., Awaitable[RunningOperator]]


@pytest.fixture
async def start_operator(cluster: EmulatedCluster) -> AsyncIterator[OperatorFactory]:
    running: list[RunningOperator] = []

    async def start(settings: OperatorSettings = FAST, **changes: Any) -> RunningOperator:
        settings = replace(settings, kubeconfig=str(cluster.kubeconfig), **changes)
        runtime = Runtime(settings=settings, kube=KubeClient(load_configuration(settings.kubeconfig)),
                          agents=AgentsClient(timeout=settings.agent_timeout))
        stop_flag, ready_flag = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(run(settings, stop_flag=stop_flag, ready_flag=ready_flag, runtime=runtime))
            except BaseException as exc:
                failure.append(exc)
                ready_flag.set()

        thread = threading.Thread(target=main, name="gossip-operator", daemon=True)
        thread.start()
        await asyncio.to_thread(ready_flag.wait, 60)
        if failure:
            raise failure[0]
        operator = RunningOperator(runtime=runtime, thread=thread, stop_flag=stop_flag, settings=settings,
                                   failure=failure)
        running.append(operator)
        return operator

    yield start
    for operator in running:
        if operator.thread.is_alive():
            await operator.stop()


@pytest.fixture
def kubectl_env(cluster: EmulatedCluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
