"""What a real cluster needs beyond reconciling: no finalizer (deletion works without the operator), server-side
label selectors on the pod/StatefulSet watches, and status passes that never hold a spec change back."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gossip_operator.handlers import MANAGED_SELECTOR
from gossip_operator.runner import ANNOTATIONS_PREFIX
from tests.operator.conftest import FAST, wait_for
from tests.operator.helpers import GSC, NAMESPACE, STS, child_objects, gsc_body, play_statefulset
from tests.support.kube_emulator import EmulatedCluster, KubeEmulator, free_port

KOPF_FINALIZER = f"{ANNOTATIONS_PREFIX}/finalizer"


async def test_no_finalizer_so_deletion_needs_no_operator(cluster: EmulatedCluster, start_operator) -> None:
    """kopf timers used to put a finalizer on every GossipCluster: with the operator uninstalled, a delete (or
    the deletion of its namespace) hung in Terminating forever. Children are owned via ownerReferences, so no
    finalizer is needed."""
    operator = await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await wait_for(lambda: all(child_objects(cluster.api).values()), what="all children")
    await wait_for(lambda: (cluster.api.get_object(GSC, NAMESPACE, "demo") or {}).get("status"), what="a status")
    await asyncio.sleep(2 * FAST.status_interval)  # a few status passes later: still none
    assert not cluster.api.get_object(GSC, NAMESPACE, "demo")["metadata"].get("finalizers")
    await operator.stop()
    cluster.api.delete_object(GSC, NAMESPACE, "demo")  # no operator running
    assert cluster.api.get_object(GSC, NAMESPACE, "demo") is None
    assert not any(child_objects(cluster.api).values()), "children are garbage-collected through ownerReferences"


async def test_a_finalizer_left_by_an_older_operator_is_removed(cluster: EmulatedCluster, start_operator) -> None:
    body = gsc_body()
    body["metadata"]["finalizers"] = [KOPF_FINALIZER]
    cluster.api.create_object(GSC, body)
    await start_operator()
    await wait_for(lambda: not cluster.api.get_object(GSC, NAMESPACE, "demo")["metadata"].get("finalizers"),
                   what="the old finalizer removed")
    await wait_for(lambda: all(child_objects(cluster.api).values()), what="all children")


async def test_deleting_a_cluster_stops_its_passes(cluster: EmulatedCluster, start_operator) -> None:
    operator = await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await wait_for(lambda: all(child_objects(cluster.api).values()), what="all children")
    uid = cluster.api.get_object(GSC, NAMESPACE, "demo")["metadata"]["uid"]
    assert operator.runtime.loops.tracked() == [uid]
    cluster.api.delete_object(GSC, NAMESPACE, "demo")
    await wait_for(lambda: operator.runtime.loops.tracked() == [], what="the loops stopped")
    mark = len(cluster.api.calls)
    await asyncio.sleep(3 * FAST.resync_interval)
    assert [c for c in cluster.api.calls[mark:] if c.write and c.resource != "events"] == []


@pytest.fixture
def request_params(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, dict[str, str]]]:
    """(verb, resource, query parameters) of every request the emulator serves."""
    seen: list[tuple[str, str, dict[str, str]]] = []
    original = KubeEmulator._record

    def record(self: KubeEmulator, request: Any) -> None:
        original(self, request)
        call = self.calls[-1]
        seen.append((call.verb, call.resource or "", dict(request.params)))

    monkeypatch.setattr(KubeEmulator, "_record", record)
    return seen


async def test_pod_and_statefulset_watches_are_filtered_by_the_server(
        cluster: EmulatedCluster, start_operator, request_params: list[tuple[str, str, dict[str, str]]]) -> None:
    """kopf's `labels=` filters act after events arrived; a cluster-wide operator would receive every pod event of
    the cluster. The selector goes to the API server instead (settings.watching.label_selectors)."""
    await start_operator()
    cluster.api.create_object("v1/pods", {"metadata": {"name": "unrelated", "namespace": NAMESPACE,
                                                       "labels": {"app": "other"}}, "spec": {}})
    cluster.api.create_object(GSC, gsc_body())
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    reads = [(verb, resource, params) for verb, resource, params in request_params
             if resource in ("pods", "statefulsets") and verb in ("list", "watch")]
    assert {(verb, resource) for verb, resource, _ in reads} >= {("list", "pods"), ("watch", "pods"),
                                                                 ("list", "statefulsets"), ("watch", "statefulsets")}
    for verb, resource, params in reads:
        assert params.get("labelSelector") == MANAGED_SELECTOR, (verb, resource, params)
    assert MANAGED_SELECTOR == "app.kubernetes.io/managed-by=gossip-operator,app.kubernetes.io/name=gossip-agent"


@contextlib.asynccontextmanager
async def hanging_agents(count: int) -> AsyncIterator[tuple[list[int], list[str], asyncio.Event]]:
    """HTTP servers that accept agent queries and answer only when `release` is set; `asked` lists the ports
    that received a query."""
    release = asyncio.Event()
    asked: list[str] = []
    ports = [free_port() for _ in range(count)]
    runners = []
    for port in ports:
        async def handle(request: web.Request, port: int = port) -> web.Response:
            asked.append(str(port))
            await release.wait()
            return web.json_response({"members": []} if request.path.endswith("members") else {})

        app = web.Application()
        app.router.add_get("/v1/status", handle)
        app.router.add_get("/v1/members", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        yield ports, asked, release
    finally:
        release.set()
        for runner in runners:
            await runner.cleanup()


async def test_a_spec_change_does_not_wait_behind_unreachable_agents(cluster: EmulatedCluster,
                                                                    start_operator) -> None:
    """Agents that never answer (a long agent timeout) keep a status pass busy; the pass used to hold the lock
    the reconcile takes, so a spec change waited for it. Now the queries hold no lock."""
    await start_operator(agent_timeout=60.0)  # far longer than the wait below
    cluster.api.create_object(GSC, gsc_body(replicas=3))
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    async with hanging_agents(3) as (ports, asked, _):
        play_statefulset(cluster.api, "demo", [("127.0.0.1", p) for p in ports])
        await wait_for(lambda: asked, what="a status pass stuck on a hanging agent")
        cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"replicas": 5}})
        await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 5,
                       timeout=30, what="the StatefulSet scaled while the status pass still waits")
        assert json.dumps(asked)  # the agents were still being asked (nothing answered)


async def test_a_clusters_warnings_never_land_on_another(cluster: EmulatedCluster, start_operator) -> None:
    """The loops serve every cluster; a warning of one cluster's resync must not become an Event of another."""
    operator = await start_operator()
    cluster.api.create_object(GSC, gsc_body("first"))
    await wait_for(lambda: all(child_objects(cluster.api, "first").values()), what="first's children")
    cluster.api.create_object("v1/configmaps", {"metadata": {"name": "second-config", "namespace": NAMESPACE,
        "ownerReferences": [{"apiVersion": "v1", "kind": "Thing", "name": "x", "uid": "other", "controller": True}]}})
    cluster.api.create_object(GSC, gsc_body("second"))
    seen = operator.reconciles("resync")
    await wait_for(lambda: operator.reconciles("resync") >= seen + 4, what="resync passes of both clusters")
    about_second = [e for e in cluster.api.list_objects("v1/events", NAMESPACE) if "second-config" in e["message"]]
    assert about_second, "the warning is reported on its own cluster"
    assert {e["involvedObject"]["name"] for e in about_second} == {"second"}
