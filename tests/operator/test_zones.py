"""Each agent pod gets its node's zone: the pure decision (zones.py), and the operator writing the pod annotation
against the emulated API as nodes appear, are relabelled or lose their zone; the pod template projects it."""

from __future__ import annotations

from typing import Any

import pytest

from gossip_operator import zones
from gossip_operator.kube import API_CALLS, CLUSTER_SCOPED
from gossip_operator.manifests.common import ZONE_ANNOTATION, ZONE_FILE
from tests.operator.conftest import RunningOperator, wait_for
from tests.operator.helpers import GSC, NAMESPACE, PODS, STS, gsc_body, play_statefulset
from tests.support.kube_emulator import EmulatedCluster

NODES = "v1/nodes"


def _pod(node: str | None = "n1", annotation: str | None = None, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "demo-0", "namespace": "ns", "labels": {"app.kubernetes.io/instance": "demo"}}
    if annotation is not None:
        meta["annotations"] = {ZONE_ANNOTATION: annotation}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-30T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}}


# ---- the decision -------------------------------------------------------------------------------------------


def test_node_zone_reads_the_ga_label_then_the_beta_one() -> None:
    assert zones.node_zone({zones.ZONE_LABEL: "eu-1a", zones.LEGACY_ZONE_LABEL: "old"}) == zones.NodeZone("eu-1a")
    assert zones.node_zone({zones.LEGACY_ZONE_LABEL: "eu-1b"}) == zones.NodeZone("eu-1b")
    assert zones.node_zone({}) == zones.NodeZone(None)
    assert zones.node_zone(None) == zones.NodeZone(None)


@pytest.mark.parametrize("bad", ["-a", "a" * 64, "a b", "zone/1", 7])
def test_a_zone_the_agent_would_refuse_is_no_zone(bad: Any) -> None:
    """The agent's own zone check decides (gossip_agent.core.topology.parse_zone): a label it would refuse is
    never written, and the reason is kept for the operator's warning."""
    found = zones.node_zone({zones.ZONE_LABEL: bad})
    assert found.zone is None and found.problem and zones.ZONE_LABEL in found.problem


def test_annotation_patch_follows_the_node() -> None:
    pod = zones.pod_zone(_pod())
    assert pod == zones.PodZone("ns", "demo-0", "demo", "n1", None, False)
    assert zones.annotation_patch(pod, zones.NodeZone("a")) == {"metadata": {"annotations": {ZONE_ANNOTATION: "a"}}}
    # already right: nothing to write
    assert zones.annotation_patch(zones.pod_zone(_pod(annotation="a")), zones.NodeZone("a")) is None
    # relabelled node: the new zone
    assert zones.annotation_patch(zones.pod_zone(_pod(annotation="a")), zones.NodeZone("b")) == {
        "metadata": {"annotations": {ZONE_ANNOTATION: "b"}}}
    # the node lost its zone: the annotation goes (merge patch null), an empty one stays as it is
    assert zones.annotation_patch(zones.pod_zone(_pod(annotation="a")), zones.NodeZone(None)) == {
        "metadata": {"annotations": {ZONE_ANNOTATION: None}}}
    assert zones.annotation_patch(zones.pod_zone(_pod(annotation="")), zones.NodeZone(None)) is None


def test_annotation_patch_waits_for_facts() -> None:
    """Not scheduled, node not known yet, or terminating: nothing is written (a removal on missing information
    would make the agent forget its zone)."""
    assert zones.annotation_patch(zones.pod_zone(_pod(node=None)), zones.NodeZone("a")) is None
    assert zones.annotation_patch(zones.pod_zone(_pod(annotation="a")), None) is None
    assert zones.annotation_patch(zones.pod_zone(_pod(deleting=True)), zones.NodeZone("a")) is None


def test_pod_zone_ignores_malformed_fields() -> None:
    body = {"metadata": {"name": "p", "annotations": {ZONE_ANNOTATION: ["x"]}}, "spec": {"nodeName": 5}}
    pod = zones.pod_zone(body)
    assert pod.node is None and pod.annotation is None


def test_rbac_needs_patch_on_pods_and_a_cluster_wide_read_of_nodes() -> None:
    assert {("", "pods", "patch"), ("", "nodes", "list"), ("", "nodes", "watch")} <= API_CALLS
    assert ("", "nodes") in CLUSTER_SCOPED
    assert ("", "nodes", "get") not in API_CALLS  # the index is enough: no per-pod GET


# ---- the pod template and the agent config ---------------------------------------------------------------


def test_pod_template_projects_the_annotation_where_the_agent_reads_it() -> None:
    from gossip_operator.manifests import statefulset
    from gossip_operator.manifests.common import Owner
    from gossip_operator.spec import parse

    spec = parse(gsc_body()["spec"], name="demo", namespace=NAMESPACE)
    sts = statefulset.render(spec, Owner("demo", "uid"), cluster_domain="", keyring_hash="h")
    pod = sts["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "downwardAPI" in v]
    (item,) = volume["downwardAPI"]["items"]
    assert item["fieldRef"]["fieldPath"] == f"metadata.annotations['{ZONE_ANNOTATION}']"
    (mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"]]
    assert f"{mount['mountPath']}/{item['path']}" == ZONE_FILE
    assert mount["readOnly"] is True


# ---- the operator against the emulated API -----------------------------------------------------------------


def _node(api: Any, name: str, zone: str | None) -> None:
    labels = {"kubernetes.io/hostname": name}
    if zone is not None:
        labels[zones.ZONE_LABEL] = zone
    api.create_object(NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}})


def _zone_of(api: Any, pod: str) -> str | None:
    return ((api.get_object(PODS, NAMESPACE, pod) or {}).get("metadata", {}).get("annotations") or {}).get(
        ZONE_ANNOTATION)


async def _cluster_with_pods(cluster: EmulatedCluster, nodes: list[str]) -> None:
    api = cluster.api
    api.create_object(GSC, gsc_body(replicas=len(nodes)))
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    play_statefulset(api, "demo", [None] * len(nodes))  # created, not scheduled yet
    for ordinal, node in enumerate(nodes):  # the scheduler binds them
        api.patch_object(PODS, NAMESPACE, f"demo-{ordinal}", {"spec": {"nodeName": node}})


async def test_operator_annotates_scheduled_pods_and_follows_node_labels(cluster: EmulatedCluster,
                                                                         start_operator) -> None:
    api = cluster.api
    _node(api, "node-a", "zone-a")
    _node(api, "node-b", "zone-b")
    operator: RunningOperator = await start_operator()
    await _cluster_with_pods(cluster, ["node-a", "node-b", "node-c"])  # node-c does not exist yet
    await wait_for(lambda: _zone_of(api, "demo-0") == "zone-a" and _zone_of(api, "demo-1") == "zone-b",
                   what="the zones of demo-0 and demo-1")
    assert _zone_of(api, "demo-2") is None
    # A node that appears after its pod was scheduled (or was unknown so far): its pods get its zone.
    _node(api, "node-c", "zone-c")
    await wait_for(lambda: _zone_of(api, "demo-2") == "zone-c", what="demo-2's zone once node-c exists")
    # A relabelled node: its pods follow, the others are not touched.
    mark = len(api.calls)
    api.patch_object(NODES, None, "node-a", {"metadata": {"labels": {zones.ZONE_LABEL: "zone-z"}}})
    await wait_for(lambda: _zone_of(api, "demo-0") == "zone-z", what="demo-0 follows its node")
    patched = {c.path.rsplit("/", 1)[-1] for c in api.calls[mark:] if c.write and c.resource == "pods"}
    assert patched == {"demo-0"}
    # A node without a zone (label removed): the annotation goes, the file becomes empty ("zone unknown").
    api.patch_object(NODES, None, "node-b", {"metadata": {"labels": {zones.ZONE_LABEL: None}}})
    await wait_for(lambda: _zone_of(api, "demo-1") is None, what="demo-1's zone removed")
    # An invalid zone label is never written; the operator counts it.
    api.patch_object(NODES, None, "node-c", {"metadata": {"labels": {zones.ZONE_LABEL: "-bad-"}}})

    def invalid_counted() -> bool:
        return operator.runtime.metrics.zone_annotations.labels(result="invalid_label")._value.get() >= 1

    await wait_for(invalid_counted, what="the invalid label counted")
    # The count comes before the patch that removes demo-2's old zone: wait for that patch, not just the count.
    await wait_for(lambda: _zone_of(api, "demo-2") is None, what="demo-2's zone removed")
    used = {(c.group or "", c.resource, c.verb) for c in api.calls if c.resource and c.verb}
    assert used <= API_CALLS


async def test_an_annotation_changed_by_someone_else_is_put_back(cluster: EmulatedCluster, start_operator) -> None:
    api = cluster.api
    _node(api, "node-a", "zone-a")
    await start_operator()
    await _cluster_with_pods(cluster, ["node-a"])
    await wait_for(lambda: _zone_of(api, "demo-0") == "zone-a", what="demo-0's zone")
    api.patch_object(PODS, NAMESPACE, "demo-0", {"metadata": {"annotations": {ZONE_ANNOTATION: "wrong"}}})
    await wait_for(lambda: _zone_of(api, "demo-0") == "zone-a", what="the zone restored")


async def test_a_failed_patch_is_retried_by_the_resync_pass(cluster: EmulatedCluster, start_operator) -> None:
    """kopf does not retry event handlers: the cluster's resync pass writes what a failed patch left out."""
    api = cluster.api
    _node(api, "node-a", "zone-a")
    operator: RunningOperator = await start_operator()
    real_patch = operator.runtime.kube.patch
    failures = {"left": 1}

    async def flaky_patch(resource: Any, namespace: str, name: str, patch: Any, **kw: Any) -> Any:
        if resource.plural == "pods" and failures["left"] > 0:
            failures["left"] -= 1
            from gossip_operator.kube import ApiError

            raise ApiError(500, "InternalError", "injected")
        return await real_patch(resource, namespace, name, patch, **kw)

    operator.runtime.kube.patch = flaky_patch  # type: ignore[method-assign]
    await _cluster_with_pods(cluster, ["node-a"])
    await wait_for(lambda: _zone_of(api, "demo-0") == "zone-a", what="demo-0's zone after the retry")
    assert failures["left"] == 0
    assert operator.runtime.metrics.zone_annotations.labels(result="error")._value.get() >= 1



def test_agent_config_reads_the_zone_file_and_keeps_the_specs_topology_settings() -> None:
    """The ConfigMap names the projected file under the agent's own setting (parsed by the agent's parser, so a
    renamed setting fails here), and the spec's topology settings pass through beside it."""
    from gossip_agent.core.config import from_mapping
    from gossip_operator.manifests.configmap import agent_config
    from gossip_operator.spec import parse

    spec = parse(gsc_body(topology={"crossZoneFraction": 0.25, "mode": "aware"})["spec"], name="demo",
                 namespace=NAMESPACE)
    cfg = from_mapping({**agent_config(spec, ""), "name": "demo-0"})
    assert cfg.topology.zone_file == ZONE_FILE
    assert cfg.topology.cross_zone_fraction == 0.25 and cfg.topology.mode == "aware"
    assert cfg.topology.zone is None  # the file decides, per pod
    plain = from_mapping({**agent_config(parse(gsc_body()["spec"], name="demo", namespace=NAMESPACE), ""),
                          "name": "demo-0"})
    assert plain.topology.zone_file == ZONE_FILE


def test_a_spec_cannot_set_the_zone_or_the_zone_file() -> None:
    """Both differ per pod: the operator fills in the file, a spec that tries is refused."""
    from gossip_operator.spec import InvalidSpec, parse

    for key in ("zone", "zoneFile"):
        with pytest.raises(InvalidSpec, match=key):
            parse(gsc_body(topology={key: "x"})["spec"], name="demo", namespace=NAMESPACE)
