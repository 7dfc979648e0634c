"""The operator running for real (kopf in-process) against the emulated API over HTTP."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from gossip_operator import runner
from gossip_operator.kube import API_CALLS
from gossip_operator.manifests.secret import parse_keyring
from gossip_operator.settings import OperatorSettings
from tests.operator.conftest import FAST, RunningOperator, wait_for
from tests.operator.helpers import (
    GSC,
    NAMESPACE,
    STS,
    child_objects,
    condition,
    events,
    gsc_body,
)
from tests.support.kube_emulator import EmulatedCluster

CHILD_PATH_PARTS = ("/statefulsets", "/services", "/configmaps", "/secrets", "/poddisruptionbudgets",
                    "/networkpolicies")


async def _steady(cluster: EmulatedCluster, operator: RunningOperator, passes: int = 2) -> int:
    """Wait for `passes` more resync passes and return the API call index from before them."""
    mark = len(cluster.api.calls)
    seen = operator.reconciles("resync")
    await wait_for(lambda: operator.reconciles("resync") >= seen + passes, what=f"{passes} resync passes")
    return mark


async def _created(cluster: EmulatedCluster, name: str = "demo") -> None:
    await wait_for(lambda: all(child_objects(cluster.api, name).values()), what="all children")
    await wait_for(lambda: (cluster.api.get_object(GSC, NAMESPACE, name) or {}).get("status", {}).get("phase"),
                   what="a status")


async def test_create_makes_children_owned_by_the_cluster(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cr = cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    uid = cr["metadata"]["uid"]
    for key, child in child_objects(cluster.api).items():
        assert child is not None
        refs = child["metadata"]["ownerReferences"]
        assert [(r["uid"], r["kind"], r["controller"]) for r in refs] == [(uid, "GossipCluster", True)], key
    secret = cluster.api.get_object("v1/secrets", NAMESPACE, "demo-gossip-key")
    keys = parse_keyring(base64.b64decode(secret["data"]["keyring"]).decode())
    assert len(keys) == 1 and len(keys[0]) == 32
    sts = cluster.api.get_object(STS, NAMESPACE, "demo")
    assert sts["spec"]["replicas"] == 3
    status = cluster.api.get_object(GSC, NAMESPACE, "demo")["status"]
    assert status["selector"] == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=gossip-agent"
    assert status["observedGeneration"] == 1
    assert {c["type"] for c in status["conditions"]} == {"Ready", "Progressing", "Converged", "Degraded"}
    assert condition(cluster.api.get_object(GSC, NAMESPACE, "demo"), "Ready")["status"] == "False"
    await wait_for(lambda: events(cluster.api, "Reconciled"), what="a Reconciled event")


async def test_second_reconcile_and_restart_write_nothing(cluster: EmulatedCluster, start_operator) -> None:
    operator: RunningOperator = await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    await _steady(cluster, operator, passes=1)
    mark = await _steady(cluster, operator, passes=3)  # resync and status passes over an unchanged cluster
    assert cluster.writes(mark) == []
    await operator.stop()
    mark = len(cluster.api.calls)
    operator = await start_operator()  # resume handler + timers of a fresh process
    await wait_for(lambda: operator.reconciles("resume") >= 1, what="the resume pass")
    await _steady(cluster, operator, passes=2)
    assert cluster.writes(mark) == []


async def test_update_rolls_out_through_the_statefulset(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    before = cluster.api.get_object(STS, NAMESPACE, "demo")
    old_hash = before["spec"]["template"]["metadata"]["annotations"]["gossip-operator.dev/config-hash"]
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {
        "image": "gossip-agent:0.2.0", "gossip": {"fanout": 4}, "pod": {"nodeSelector": {"zone": "a"}}}})

    def rolled() -> bool:
        sts = cluster.api.get_object(STS, NAMESPACE, "demo")
        return sts["spec"]["template"]["spec"]["containers"][0]["image"] == "gossip-agent:0.2.0"

    await wait_for(rolled, what="the new image in the StatefulSet")
    sts = cluster.api.get_object(STS, NAMESPACE, "demo")
    assert sts["spec"]["template"]["metadata"]["annotations"]["gossip-operator.dev/config-hash"] != old_hash
    assert sts["spec"]["template"]["spec"]["nodeSelector"] == {"zone": "a"}
    config = cluster.api.get_object("v1/configmaps", NAMESPACE, "demo-config")["data"]["config.json"]
    assert json.loads(config)["gossip"]["fanout"] == 4
    # Removing an override removes it from the child too (three-way merge, like kubectl apply).
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"pod": {"nodeSelector": None}}})
    await wait_for(lambda: "nodeSelector" not in cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["template"][
        "spec"], what="nodeSelector removed")
    await wait_for(lambda: cluster.api.get_object(GSC, NAMESPACE, "demo")["status"]["observedGeneration"] == 3,
                   what="observedGeneration 3")


async def test_scale_subresource_scales_the_statefulset(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"replicas": 5}}, subresource="scale")
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 5,
                   what="5 replicas")
    config = cluster.api.get_object("v1/configmaps", NAMESPACE, "demo-config")["data"]["config.json"]
    assert "demo-2.demo-peers.default.svc:7946" in config
    before = cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["template"]
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"replicas": 2}}, subresource="scale")
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 2,
                   what="2 replicas")
    # Scaling never restarts the running agents: the pod template is unchanged (seeds are not hashed).
    assert cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["template"] == before


async def test_drift_is_corrected(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    api = cluster.api
    api.delete_object("v1/services", NAMESPACE, "demo-peers")
    api.patch_object("v1/configmaps", NAMESPACE, "demo-config", {"data": {"config.json": "tampered: true\n"}})
    api.patch_object(STS, NAMESPACE, "demo", {"spec": {"replicas": 9}})
    api.patch_object("policy/v1/poddisruptionbudgets", NAMESPACE, "demo", {"metadata": {"labels": None}})
    await wait_for(lambda: api.get_object("v1/services", NAMESPACE, "demo-peers"), what="headless Service back")
    await wait_for(lambda: "tampered" not in api.get_object("v1/configmaps", NAMESPACE, "demo-config")["data"][
        "config.json"], what="ConfigMap restored")
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 3, what="replicas 3")
    await wait_for(lambda: api.get_object("policy/v1/poddisruptionbudgets", NAMESPACE, "demo")["metadata"].get(
        "labels"), what="PDB labels back")
    assert api.get_object("v1/services", NAMESPACE, "demo-peers")["spec"]["publishNotReadyAddresses"] is True
    await wait_for(lambda: events(api, "DriftCorrected"), what="a DriftCorrected event")


async def test_delete_removes_children_and_nothing_comes_back(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    cluster.api.delete_object(GSC, NAMESPACE, "demo")  # the finalizer holds it until kopf releases it
    await wait_for(lambda: cluster.api.get_object(GSC, NAMESPACE, "demo") is None, what="the cluster gone")
    await wait_for(lambda: not any(child_objects(cluster.api).values()), what="children garbage-collected")
    mark = len(cluster.api.calls)
    await asyncio.sleep(3 * FAST.resync_interval)  # timers would have fired by now if still running
    creates = [c for c in cluster.api.calls[mark:] if c.verb == "create" and c.resource != "events"]
    assert creates == []


async def test_invalid_spec_touches_no_child(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    # Passes the schema (CEL only compares probeTimeout with an explicit probeInterval) but not the
    # lan preset's 1s probe interval.
    cluster.api.create_object(GSC, gsc_body("bad", preset="lan", membership={"probeTimeout": "2s"}))

    def invalid() -> bool:
        return condition(cluster.api.get_object(GSC, NAMESPACE, "bad"), "Ready").get("reason") == "InvalidSpec"

    await wait_for(invalid, what="Ready=False InvalidSpec")
    ready = condition(cluster.api.get_object(GSC, NAMESPACE, "bad"), "Ready")
    assert ready["status"] == "False"
    assert "membership.probeTimeout (2s)" in ready["message"] and "lan preset" in ready["message"]
    assert cluster.api.get_object(GSC, NAMESPACE, "bad")["status"]["phase"] == "Invalid"
    warning = await wait_for(lambda: events(cluster.api, "InvalidSpec"), what="a Warning event")
    assert warning[0]["type"] == "Warning"
    assert warning[0]["involvedObject"]["name"] == "bad"
    assert not any(child_objects(cluster.api, "bad").values())
    child_calls = [c for c in cluster.api.calls if any(p in c.path for p in CHILD_PATH_PARTS)]
    assert [c for c in child_calls if c.write] == []
    # Fixing the spec creates the children; one InvalidSpec event only, however many passes ran.
    assert len(events(cluster.api, "InvalidSpec")) == 1
    cluster.api.patch_object(GSC, NAMESPACE, "bad", {"spec": {"membership": {"probeTimeout": "200ms"}}})
    await _created(cluster, "bad")
    await wait_for(lambda: not invalid(), what="InvalidSpec cleared")


async def test_invalid_update_leaves_children_alone(cluster: EmulatedCluster, start_operator) -> None:
    operator = await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    mark = len(cluster.api.calls)
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {
        "image": "gossip-agent:0.9.0", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}})
    await wait_for(lambda: condition(cluster.api.get_object(GSC, NAMESPACE, "demo"), "Ready").get(
        "reason") == "InvalidSpec", what="InvalidSpec")
    await _steady(cluster, operator, passes=2)
    child_writes = [c for c in cluster.writes(mark) if any(p in c.path for p in CHILD_PATH_PARTS)]
    assert child_writes == []
    assert cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["template"]["spec"]["containers"][0][
        "image"] == "gossip-agent:0.1.0"


async def test_paused_cluster_is_not_changed(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"paused": True, "replicas": 7}})
    await wait_for(lambda: cluster.api.get_object(GSC, NAMESPACE, "demo")["status"]["phase"] == "Paused",
                   what="phase Paused")
    mark = len(cluster.api.calls)
    cluster.api.delete_object("v1/services", NAMESPACE, "demo")
    await wait_for(lambda: condition(cluster.api.get_object(GSC, NAMESPACE, "demo"), "Progressing").get(
        "reason") == "Paused", what="Progressing=False Paused")
    assert cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 3
    assert [c for c in cluster.writes(mark) if any(p in c.path for p in CHILD_PATH_PARTS)] == []
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"paused": False}})
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 7, what="7")
    await wait_for(lambda: cluster.api.get_object("v1/services", NAMESPACE, "demo"), what="Service restored")


async def test_optional_children_follow_the_spec(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator()
    cluster.api.create_object(GSC, gsc_body(pod={"networkPolicy": {"enabled": True}},
                                            podDisruptionBudget={"maxUnavailable": "50%"}))
    await _created(cluster)
    api = cluster.api
    await wait_for(lambda: api.get_object("networking.k8s.io/v1/networkpolicies", NAMESPACE, "demo"),
                   what="NetworkPolicy")
    assert api.get_object("policy/v1/poddisruptionbudgets", NAMESPACE, "demo")["spec"]["maxUnavailable"] == "50%"
    api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"pod": {"networkPolicy": {"enabled": False}},
                                                       "podDisruptionBudget": {"enabled": False}}})
    await wait_for(lambda: api.get_object("networking.k8s.io/v1/networkpolicies", NAMESPACE, "demo") is None,
                   what="NetworkPolicy deleted")
    await wait_for(lambda: api.get_object("policy/v1/poddisruptionbudgets", NAMESPACE, "demo") is None,
                   what="PDB deleted")


async def test_network_policy_admits_the_operator_by_its_configured_labels(cluster: EmulatedCluster,
                                                                           start_operator) -> None:
    settings = OperatorSettings.from_env({"GOSSIP_OPERATOR_OPERATOR_LABELS": "app.kubernetes.io/name=ops,tier=ctl",
                                          "POD_NAMESPACE": "operators"})
    await start_operator(operator_labels=settings.operator_labels, operator_namespace=settings.operator_namespace)
    cluster.api.create_object(GSC, gsc_body(pod={"networkPolicy": {"enabled": True}}))
    policy = await wait_for(lambda: cluster.api.get_object("networking.k8s.io/v1/networkpolicies", NAMESPACE, "demo"),
                            what="NetworkPolicy")
    operator_peer = policy["spec"]["ingress"][1]["from"][-1]
    assert operator_peer == {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "ops", "tier": "ctl"}},
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "operators"}}}


async def test_every_api_call_is_declared_for_rbac(cluster: EmulatedCluster, start_operator) -> None:
    """Run a busy scenario, then check each request the operator made against kube.API_CALLS."""
    operator = await start_operator()
    api = cluster.api
    api.create_object(GSC, gsc_body(pod={"networkPolicy": {"enabled": True}}))
    api.create_object(GSC, gsc_body("broken", image=""))
    await _created(cluster)
    api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"podDisruptionBudget": {"enabled": False},
                                                       "pod": {"networkPolicy": {"enabled": False}}}})
    await wait_for(lambda: api.get_object("policy/v1/poddisruptionbudgets", NAMESPACE, "demo") is None, what="pdb")
    api.delete_object("v1/services", NAMESPACE, "demo")
    await wait_for(lambda: api.get_object("v1/services", NAMESPACE, "demo"), what="service back")
    api.delete_object(GSC, NAMESPACE, "demo")
    await wait_for(lambda: api.get_object(GSC, NAMESPACE, "demo") is None, what="deleted")
    await operator.stop()
    used = {(c.group or "", c.resource, c.verb) for c in api.calls if c.resource and c.verb}
    undeclared = used - API_CALLS
    assert not undeclared, f"calls missing from API_CALLS: {sorted(undeclared)}"
    # kopf's own needs are among them (and so in the chart's RBAC).
    assert {("gossip-operator.dev", "gossipclusters", "watch"), ("gossip-operator.dev", "gossipclusters", "patch"),
            ("gossip-operator.dev", "gossipclusters/status", "patch"), ("", "events", "create"),
            ("", "pods", "watch"), ("apps", "statefulsets", "watch")} <= used


async def test_namespaced_mode_serves_only_its_namespaces(cluster: EmulatedCluster, start_operator) -> None:
    await start_operator(namespaces=("team-a",))
    cluster.api.create_object("v1/namespaces", {"metadata": {"name": "team-a"}})
    elsewhere = gsc_body("other")
    cluster.api.create_object(GSC, elsewhere)
    mine = gsc_body("mine")
    mine["metadata"]["namespace"] = "team-a"
    cluster.api.create_object(GSC, mine)
    await wait_for(lambda: cluster.api.get_object(STS, "team-a", "mine"), what="children in team-a")
    assert cluster.api.get_object(STS, NAMESPACE, "other") is None
    used = {(c.group or "", c.resource, c.verb) for c in cluster.api.calls if c.resource and c.verb}
    assert used <= API_CALLS
    assert json.dumps(sorted(used))  # the set is serialisable for the chart's RBAC


# A stop is prompt when it takes the workers' drain time plus generous slack (a process exit); before, kopf's
# hung-task wait alone took 5 s on top of the 0.3 s the test holds kopf back. The stop's wall-clock time is
# taken less the time the operator's threads and the emulator's waited for a core (`CoreWait`): at load 40 on
# 2 cores the stop's few tenths of a second of CPU (a process exit: more) take seconds; a sleep does not shrink.
STOP_BOUND = runner.EXIT_TIMEOUT + 2.5


def _run_delays(pid: int) -> dict[tuple[int, int], int]:
    """{(pid, tid): nanoseconds runnable but waiting for a core} of each thread of `pid` (schedstat run_delay)."""
    out: dict[tuple[int, int], int] = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            out[(pid, int(stat.parent.name))] = int(stat.read_text().split()[1])
    return out


class CoreWait:
    """Seconds the threads of `pids` spend waiting for a core while this runs: each thread sampled every 20 ms, so
    a thread or process that ends still counts up to its last sample (what is missed only makes bounds stricter);
    a thread seen first later began meanwhile (from 0). 0.0 where /proc says nothing."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.first: dict[tuple[int, int], int] = {}
        self.last: dict[tuple[int, int], int] = {}
        self._task: asyncio.Task[None] | None = None

    def _sample(self) -> None:
        for pid in self.pids:
            self.last.update(_run_delays(pid))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self._sample()

    async def __aenter__(self) -> CoreWait:
        for pid in self.pids:
            self.first.update(_run_delays(pid))
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sample()

    def seconds(self) -> float:
        return sum(max(0, ns - self.first.get(k, 0)) for k, ns in self.last.items()) / 1e9


async def _stop_with_an_event_in_flight(cluster: EmulatedCluster, stop: Callable[[], Awaitable[None]],
                                        *pids: int) -> float:
    """Stop while kopf is still processing the cluster's events: kopf's own patch after the update handler is
    held, one more event is queued behind it, and it is let go once the stop has begun (kopf has stopped the
    timers by then). Those events must not re-spawn timers, which used to fire on until kopf cancelled them as
    hung tasks. Returns the seconds from the stop to the operator's end, less the time the threads of `pids`
    (the operator's and the emulator's) waited for a core meanwhile."""
    stall = cluster.api.stall("PATCH", f"/apis/gossip-operator.dev/v1alpha1/namespaces/{NAMESPACE}/gossipclusters/demo")
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"image": "gossip-agent:0.2.0"}})
    await wait_for(lambda: stall.hits, what="kopf's patch after the update handler")
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"metadata": {"labels": {"touched": "yes"}}})
    loop = asyncio.get_running_loop()
    async with CoreWait(*pids) as waited:
        started = loop.time()
        stopped = asyncio.create_task(stop())
        await asyncio.sleep(0.3)
        stall.release()
        await stopped
        took = loop.time() - started
    print(f"stop: {took:.2f} s wall, {waited.seconds():.2f} s of it waiting for a core")
    return took - waited.seconds()


async def test_stop_is_prompt_with_an_event_in_flight(cluster: EmulatedCluster, start_operator) -> None:
    operator: RunningOperator = await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await _created(cluster)
    took = await _stop_with_an_event_in_flight(cluster, operator.stop, os.getpid())  # (operator: a thread of ours)
    assert took <= STOP_BOUND, f"the operator took {took:.1f}s to stop"
    assert operator.runtime.exiting


async def test_sigterm_stops_the_process_promptly(cluster: EmulatedCluster, tmp_path: Path) -> None:
    """The same through `gossip-operator` as a process: SIGTERM (the pod's stop) takes the same prompt path."""
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "GOSSIP_OPERATOR_LIVENESS_PORT": "0",
           "GOSSIP_OPERATOR_METRICS_PORT": "0", "GOSSIP_OPERATOR_STATUS_INTERVAL": str(FAST.status_interval),
           "GOSSIP_OPERATOR_RESYNC_INTERVAL": str(FAST.resync_interval)}
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "gossip_operator", env=env,
                                                       stdout=log, stderr=log)
    try:
        cluster.api.create_object(GSC, gsc_body())
        await _created(cluster)

        async def sigterm() -> None:
            process.send_signal(signal.SIGTERM)
            await process.wait()

        took = await _stop_with_an_event_in_flight(cluster, sigterm, os.getpid(), process.pid)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    output = log_path.read_text()
    assert process.returncode == 0, output[-3000:]
    assert took <= STOP_BOUND, f"the operator took {took:.1f}s to stop:\n{output[-3000:]}"
    assert "Stopping (SIGTERM)" in output
