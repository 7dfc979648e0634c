"""Test helpers: GossipCluster bodies, child lookups, and playing the StatefulSet controller."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from tests.support.kube_emulator import KubeEmulator

GSC = "gossip-operator.dev/v1alpha1/gossipclusters"
STS = "apps/v1/statefulsets"
PODS = "v1/pods"
NAMESPACE = "default"
CHILDREN = (
    ("v1/configmaps", "{name}-config"),
    ("v1/services", "{name}-peers"),
    ("v1/services", "{name}"),
    ("apps/v1/statefulsets", "{name}"),
    ("policy/v1/poddisruptionbudgets", "{name}"),
    ("v1/secrets", "{name}-gossip-key"),
)


def gsc_body(name: str = "demo", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"replicas": 3, "image": "gossip-agent:0.1.0", "preset": "local"}
    base.update(spec)
    return {"apiVersion": "gossip-operator.dev/v1alpha1", "kind": "GossipCluster",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": base}


def child_objects(api: KubeEmulator, name: str = "demo") -> dict[str, dict[str, Any] | None]:
    return {f"{r}/{n.format(name=name)}": api.get_object(r, NAMESPACE, n.format(name=name)) for r, n in CHILDREN}


def condition(obj: Mapping[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return dict(c)
    return {}


def events(api: KubeEmulator, reason: str | None = None) -> list[dict[str, Any]]:
    items = api.list_objects("v1/events", NAMESPACE)
    return [e for e in items if reason is None or e.get("reason") == reason]


def play_statefulset(api: KubeEmulator, name: str, endpoints: Sequence[tuple[str, int] | None], *,
                     ready: Sequence[bool] | None = None) -> None:
    """Act as the StatefulSet controller and kubelet: one pod per endpoint (ip, port) with Ready status,
    then the StatefulSet's status. `None` endpoints make pods without an IP (not started)."""
    sts = api.get_object(STS, NAMESPACE, name)
    assert sts is not None, "the operator has not created the StatefulSet yet"
    template = copy.deepcopy(sts["spec"]["template"])
    ready = list(ready) if ready is not None else [e is not None for e in endpoints]
    for ordinal, endpoint in enumerate(endpoints):
        pod_name = f"{name}-{ordinal}"
        meta = copy.deepcopy(template["metadata"])
        meta.update(name=pod_name, namespace=NAMESPACE)
        meta.setdefault("annotations", {})
        spec = copy.deepcopy(template["spec"])
        if endpoint is not None:
            meta["annotations"]["gossip-operator.dev/agent-port"] = str(endpoint[1])
        if api.get_object(PODS, NAMESPACE, pod_name) is None:
            api.create_object(PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
        else:
            api.patch_object(PODS, NAMESPACE, pod_name, {"metadata": {"annotations": meta["annotations"]}})
        status: dict[str, Any] = {
            "phase": "Running" if endpoint else "Pending",
            "conditions": [{"type": "Ready", "status": "True" if ready[ordinal] else "False"}],
        }
        if endpoint is not None:
            status["podIP"] = endpoint[0]
        api.patch_object(PODS, NAMESPACE, pod_name, {"status": status}, subresource="status")
    revision = f"{name}-{sts['metadata']['generation']}"
    api.patch_object(STS, NAMESPACE, name, {"status": {
        "replicas": len(endpoints),
        "readyReplicas": sum(1 for r in ready if r),
        "updatedReplicas": len(endpoints),
        "currentRevision": revision,
        "updateRevision": revision,
        "observedGeneration": sts["metadata"]["generation"],
    }}, subresource="status")


def remove_pods(api: KubeEmulator, name: str, keep: int) -> None:
    for pod in api.list_objects(PODS, NAMESPACE):
        pod_name = pod["metadata"]["name"]
        if pod_name.startswith(f"{name}-") and int(pod_name.rsplit("-", 1)[1]) >= keep:
            api.delete_object(PODS, NAMESPACE, pod_name)
