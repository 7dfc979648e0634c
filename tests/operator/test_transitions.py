"""Unsafe spec changes are refused by the operator too (Kubernetes < 1.25 runs no CEL): Ready=False InvalidSpec
with the CRD's own message, and no child is changed. Safe paths stay open."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from gossip_operator import manifests
from gossip_operator.manifests.common import Owner
from gossip_operator.spec import TRANSITION_MESSAGES, parse
from gossip_operator.transitions import unsafe_transitions
from tests.operator.conftest import CRD_PATH, wait_for
from tests.operator.helpers import GSC, NAMESPACE, STS, condition, events, gsc_body, play_statefulset


def test_messages_are_the_crds_own() -> None:
    """One text per refused change: the CEL rule's message (fieldPath .FIELD) equals the operator's."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    transition_rules = {r["fieldPath"].lstrip("."): r["message"] for r in rules if "oldSelf" in r["rule"]}
    assert transition_rules == dict(TRANSITION_MESSAGES)


def _live(**spec: Any) -> dict[str, Any]:
    """The StatefulSet the operator would have created for this spec, as it looks live with 3 pods."""
    parsed = parse({"image": "x", **spec}, name="demo", namespace="ns")
    children = manifests.render_children(parsed, Owner("demo", "u"), manifests.RenderOptions())
    (sts,) = [c.body for c in children if c.resource.kind == "StatefulSet"]
    assert sts is not None
    return {**sts, "status": {"replicas": parsed.replicas}}


@pytest.mark.parametrize(("before", "after", "field"), [
    ({}, {"port": 8000}, "port"),
    ({}, {"security": {"tlsSecret": "t"}}, "security.tlsSecret"),
    ({"security": {"tlsSecret": "t"}}, {"security": {"tlsSecret": "u"}}, "security.tlsSecret"),
    ({"security": {"tlsSecret": "t"}}, {}, "security.tlsSecret"),
    ({}, {"storage": {"ephemeral": True}}, "storage.ephemeral"),
    ({"storage": {"ephemeral": True}}, {}, "storage.ephemeral"),
    ({}, {"storage": {"size": "2Gi"}}, "storage.size"),
    ({}, {"storage": {"storageClassName": "fast"}}, "storage.storageClassName"),
])
def test_unsafe_changes_are_found(before: dict[str, Any], after: dict[str, Any], field: str) -> None:
    spec = parse({"image": "x", **after}, name="demo", namespace="ns")
    assert unsafe_transitions(spec, _live(**before)) == [TRANSITION_MESSAGES[field]]


@pytest.mark.parametrize(("before", "after"), [
    ({}, {"replicas": 5, "gossip": {"fanout": 4}, "image": "y"}),  # ordinary changes
    ({}, {"storage": {"size": "1024Mi"}}),  # the same size, spelled differently
    ({"replicas": 0}, {"replicas": 0, "port": 8000}),  # nothing runs: port and TLS may change
    ({"replicas": 0}, {"replicas": 3, "security": {"tlsSecret": "t"}}),
])
def test_safe_changes_pass(before: dict[str, Any], after: dict[str, Any]) -> None:
    spec = parse({"image": "x", **after}, name="demo", namespace="ns")
    assert unsafe_transitions(spec, _live(**before)) == []
    assert unsafe_transitions(spec, None) == []  # nothing deployed yet


def test_port_change_while_scaling_down_is_still_refused() -> None:
    live = _live(replicas=0)
    live["status"] = {"replicas": 2}  # pods still terminating
    assert unsafe_transitions(parse({"image": "x", "port": 8000}, name="demo", namespace="ns"), live) == [
        TRANSITION_MESSAGES["port"]]


async def test_an_unsafe_change_changes_nothing_and_says_why(cluster, start_operator) -> None:
    await start_operator()
    api = cluster.api
    api.create_object(GSC, gsc_body(replicas=3))
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    play_statefulset(api, "demo", [None, None, None])
    before = {kind: api.get_object(kind, NAMESPACE, name) for kind, name in (
        (STS, "demo"), ("v1/configmaps", "demo-config"), ("v1/services", "demo-peers"))}
    api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"port": 8000, "storage": {"size": "5Gi"}, "replicas": 4}})

    def ready() -> dict[str, Any]:
        return condition(api.get_object(GSC, NAMESPACE, "demo"), "Ready")

    await wait_for(lambda: ready().get("reason") == "InvalidSpec", what="Ready=False InvalidSpec")
    assert ready()["status"] == "False"
    assert ready()["message"] == f"{TRANSITION_MESSAGES['port']}; {TRANSITION_MESSAGES['storage.size']}"
    gsc = api.get_object(GSC, NAMESPACE, "demo")
    assert gsc["status"]["phase"] == "Invalid" and gsc["status"]["observedGeneration"] == gsc["metadata"]["generation"]
    warned = await wait_for(lambda: events(api, "InvalidSpec"), what="an InvalidSpec event")
    assert TRANSITION_MESSAGES["port"] in warned[0]["message"]
    for (kind, name), old in zip(((STS, "demo"), ("v1/configmaps", "demo-config"), ("v1/services", "demo-peers")),
                                 before.values(), strict=True):
        live = api.get_object(kind, NAMESPACE, name)
        assert live["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"], f"{kind} changed"
    # Reverting the unsafe part lets the safe part (replicas) through.
    api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"port": None, "storage": {"size": None}}})
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo")["spec"]["replicas"] == 4, what="scaled to 4")
    await wait_for(lambda: ready().get("reason") != "InvalidSpec", what="InvalidSpec cleared")


async def test_port_changes_while_scaled_to_zero(cluster, start_operator) -> None:
    await start_operator()
    api = cluster.api
    api.create_object(GSC, gsc_body(replicas=0))
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    play_statefulset(api, "demo", [])
    api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"port": 8000}})
    await wait_for(lambda: api.get_object(STS, NAMESPACE, "demo")["spec"]["template"]["spec"]["containers"][0][
        "ports"][0]["containerPort"] == 8000, what="the new port rolled out")
