"""The operator scenarios against a real cluster: GOSSIP_E2E=1 and KUBECONFIG set, skipped otherwise.

Needs: the CRD installable (cluster-admin) or installed, an agent image pullable by the cluster
(GOSSIP_E2E_IMAGE, default gossip-agent:0.1.0), and kubectl. The operator runs in this process (in its own
thread) unless GOSSIP_E2E_OPERATOR=deployed says one already runs in the cluster. Everything happens in a
fresh namespace that is deleted at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "gossipclusters.gossip-operator.dev.yaml"
IMAGE = os.environ.get("GOSSIP_E2E_IMAGE", "gossip-agent:0.1.0")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.environ.get("GOSSIP_E2E") != "1" or not os.environ.get("KUBECONFIG"),
                       reason="set GOSSIP_E2E=1 and KUBECONFIG to run against a real cluster"),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed"),
]


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def get(kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out.strip() else None


def eventually(predicate: Callable[[], Any], timeout: float = 300, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c["type"] == ctype), {})


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "crd/gossipclusters.gossip-operator.dev", "--timeout=60s")
    name = f"gossip-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module", autouse=True)
def operator(namespace: str) -> Iterator[None]:
    if os.environ.get("GOSSIP_E2E_OPERATOR") == "deployed":
        yield
        return
    import asyncio

    from gossip_operator.runner import run
    from gossip_operator.settings import OperatorSettings

    settings = OperatorSettings(namespaces=(namespace,), status_interval=3, resync_interval=10,
                                liveness_port=0, metrics_port=0, kubeconfig=os.environ["KUBECONFIG"])
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(run(settings, stop_flag=stop, ready_flag=ready)),
                              daemon=True)
    thread.start()
    ready.wait(60)
    yield
    stop.set()
    thread.join(60)


def manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {"apiVersion": "gossip-operator.dev/v1alpha1", "kind": "GossipCluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 3, "image": IMAGE, "storage": {"ephemeral": True}, **spec}}
    return json.dumps(body)


def test_lifecycle(namespace: str) -> None:
    kubectl("apply", "-f", "-", stdin=manifest("e2e", namespace))
    cluster = eventually(lambda: get("gsc", "e2e", namespace), what="the cluster")
    uid = cluster["metadata"]["uid"]
    for kind, name in (("statefulset", "e2e"), ("service", "e2e-peers"), ("service", "e2e"),
                       ("configmap", "e2e-config"), ("pdb", "e2e"), ("secret", "e2e-gossip-key")):
        child = eventually(lambda kind=kind, name=name: get(kind, name, namespace), what=f"{kind}/{name}")
        assert child["metadata"]["ownerReferences"][0]["uid"] == uid
    eventually(lambda: condition(get("gsc", "e2e", namespace), "Ready").get("status") == "True",
               what="Ready=True")
    eventually(lambda: condition(get("gsc", "e2e", namespace), "Converged").get("status") == "True",
               what="Converged=True")
    assert "e2e" in kubectl("get", "gsc", "-n", namespace)

    kubectl("scale", "gsc/e2e", "-n", namespace, "--replicas=4")
    eventually(lambda: (get("statefulset", "e2e", namespace) or {}).get("spec", {}).get("replicas") == 4,
               what="StatefulSet scaled")
    eventually(lambda: (get("gsc", "e2e", namespace) or {}).get("status", {}).get("members", {}).get(
        "alive") == 4, what="4 members alive")

    kubectl("delete", "service", "e2e", "-n", namespace)
    eventually(lambda: get("service", "e2e", namespace), what="the client Service restored")

    kubectl("delete", "pod", "e2e-3", "-n", namespace, "--grace-period=0", "--force", check=False)
    kubectl("delete", "gsc", "e2e", "-n", namespace)
    eventually(lambda: get("statefulset", "e2e", namespace) is None, what="children garbage-collected")


def test_invalid_spec_is_reported(namespace: str) -> None:
    kubectl("apply", "-f", "-", stdin=manifest("bad", namespace, membership={"probeTimeout": "2s"}))
    eventually(lambda: condition(get("gsc", "bad", namespace), "Ready").get("reason") == "InvalidSpec",
               what="InvalidSpec")
    assert get("statefulset", "bad", namespace) is None
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json"))["items"]
    assert any(e["reason"] == "InvalidSpec" and e["type"] == "Warning" for e in events)
    kubectl("delete", "gsc", "bad", "-n", namespace)
