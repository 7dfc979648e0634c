"""The install path end to end, against the API emulator (tests/support/kube_emulator.py):

    kubectl apply --server-side -f crds/
    helm template ... | kubectl apply --validate=false -f -
    run the operator exactly as the rendered Deployment would (its args and env)
    kubectl apply -f examples/gossipcluster.yaml  ->  the operator writes the StatefulSet and friends

and, along the way, that every API call the operator makes is granted by the RBAC the chart rendered
(the emulator records the calls), and that the agent pods it writes meet the restricted standard.
(`helm install` itself can't target the emulator: it stores the release as a protobuf Secret.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chart_support import CHART, REQUIRED_SET, ROOT, run_helm
from tests.chart.pod_security import restricted_violations
from tests.support.kube_emulator import EmulatedCluster, emulated_cluster_in_thread, free_port

NAMESPACE = "gossip"
OTHER_NAMESPACE = "elsewhere"
RELEASE = "gossip"
FULLNAME = "gossip-gossip-operator"  # <release>-<chart>: the release name does not contain the chart name


# A wait's bound, not a timing assertion: the operator's process needs ~1.5 s of CPU to import kopf and the
# kubernetes client and answer its liveness probe (1 s for the imports alone), which a busy 2-core machine
# (load 40: a twentieth of a core each) stretches to ~30 s, the old bound.
WAIT_S = 120.0


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def http_get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmulatedCluster]:
    with emulated_cluster_in_thread(tmp_path / "kubeconfig") as emulated:
        yield emulated


@pytest.mark.parametrize("cluster_wide", [True, False], ids=["cluster-wide", "namespaced"])
def test_helm_template_kubectl_apply_then_the_operator_reconciles(
    cluster_wide: bool,
    cluster: EmulatedCluster,
    helm: Path,
    helm_env: dict[str, str],
    npm_kubectl: Path,
    tmp_path: Path,
) -> None:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        proc = subprocess.run(
            [str(npm_kubectl), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
        )
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    # 1. The CRD, as docs/deploy.md and NOTES.txt tell users to apply it on upgrades.
    kubectl("apply", "--server-side", "--validate=false", "-f", str(ROOT / "crds"))
    # The release namespace (a namespaced operator serves only namespaces that exist) and another one.
    for ns in (NAMESPACE, OTHER_NAMESPACE):
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
        kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(namespace))

    # 2. The chart, rendered and applied (free ports: the operator runs on this machine).
    health_port, metrics_port = free_port(), free_port()
    proc = run_helm(
        helm,
        helm_env,
        "template",
        RELEASE,
        str(CHART),
        "--namespace",
        NAMESPACE,
        "--set",
        f"operator.healthPort={health_port},metrics.port={metrics_port},operator.clusterWide={str(cluster_wide).lower()},"
        f"operator.settings.statusInterval=1s,{REQUIRED_SET}",
    )
    assert proc.returncode == 0, proc.stderr
    out = kubectl("apply", "--validate=false", "-n", NAMESPACE, "-f", "-", stdin=proc.stdout)
    rendered = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert len(out.strip().splitlines()) == len(rendered), out
    api = cluster.api
    expected = [
        ("v1/serviceaccounts", NAMESPACE),
        ("v1/services", NAMESPACE),
        ("apps/v1/deployments", NAMESPACE),
        ("rbac.authorization.k8s.io/v1/clusterroles", None),
        ("rbac.authorization.k8s.io/v1/clusterrolebindings", None),
    ]
    if not cluster_wide:
        expected += [
            ("rbac.authorization.k8s.io/v1/roles", NAMESPACE),
            ("rbac.authorization.k8s.io/v1/rolebindings", NAMESPACE),
        ]
    names = {"v1/services": f"{FULLNAME}-metrics"}
    for resource, ns in expected:
        name = names.get(resource, FULLNAME if ns else f"{NAMESPACE}-{FULLNAME}")
        assert api.get_object(resource, ns, name) is not None, (resource, name)

    # 3. The operator, started the way the Deployment in the API says: its args and env (fieldRefs
    #    resolved as the kubelet would), the kubeconfig standing in for the service account.
    deployment = api.get_object("apps/v1/deployments", NAMESPACE, FULLNAME)
    assert deployment is not None
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    field_refs = {"metadata.namespace": NAMESPACE, "metadata.name": f"{FULLNAME}-0"}
    pod_env = {
        e["name"]: e["value"] if "value" in e else field_refs[e["valueFrom"]["fieldRef"]["fieldPath"]]
        for e in container["env"]
    }
    # 4. A sample GossipCluster, applied before the operator starts (kubectl's calls then stay out of
    #    the operator's; the emulator's watches are woken only by writes made in its own thread).
    sample = yaml.safe_load((ROOT / "examples" / "gossipcluster.yaml").read_text())
    name = sample["metadata"]["name"]
    for ns in (NAMESPACE, OTHER_NAMESPACE):
        kubectl("apply", "--validate=false", "-n", ns, "-f", str(ROOT / "examples" / "gossipcluster.yaml"))

    executable = shutil.which("gossip-operator", path=str(Path(sys.executable).parent))
    assert executable, "the gossip-operator console script is not installed (pip install -e operator)"
    log = (tmp_path / "operator.log").open("w")
    calls_before = len(api.calls)
    operator = subprocess.Popen(
        [executable, *container.get("args", [])],
        env={**env, **pod_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # kopf's liveness endpoint answers on the probe's port and path.
        probe = container["livenessProbe"]["httpGet"]
        port = {p["name"]: p["containerPort"] for p in container["ports"]}[probe["port"]]
        wait_until(lambda: http_get(f"http://127.0.0.1:{port}{probe['path']}"), "the liveness endpoint")
        assert wait_until(
            lambda: operator.poll() is None and http_get(f"http://127.0.0.1:{metrics_port}/metrics"), "metrics"
        )

        # The operator writes the GossipCluster's children.
        sts = wait_until(lambda: api.get_object("apps/v1/statefulsets", NAMESPACE, name), "the StatefulSet")
        wait_until(lambda: api.get_object("v1/configmaps", NAMESPACE, f"{name}-config"), "the agent ConfigMap")
        wait_until(lambda: api.get_object("v1/services", NAMESPACE, f"{name}-peers"), "the peer Service")
        assert sts["spec"]["replicas"] == sample["spec"]["replicas"]
        pod = sts["spec"]["template"]["spec"]
        assert restricted_violations(pod) == []
        assert pod["automountServiceAccountToken"] is False  # agents never talk to the Kubernetes API
        assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == sample["spec"]["image"]
        wait_until(
            lambda: (api.get_object("gossip-operator.dev/v1alpha1/gossipclusters", NAMESPACE, name) or {}).get(
                "status"
            ),
            "the GossipCluster's status",
        )
        # Scope: a cluster-wide operator serves the other namespace too, a namespaced one leaves it alone.
        if cluster_wide:
            wait_until(lambda: api.get_object("apps/v1/statefulsets", OTHER_NAMESPACE, name), "the other StatefulSet")
        else:
            assert api.get_object("apps/v1/statefulsets", OTHER_NAMESPACE, name) is None
        assert operator.poll() is None, "the operator exited"
    finally:
        operator.send_signal(signal.SIGTERM)
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()
        log.close()
    calls_after = len(api.calls)
    assert operator.returncode == 0, "the operator did not exit cleanly on SIGTERM"
    # What NOTES.txt tells users to run.
    assert name in kubectl("-n", NAMESPACE, "get", "gossipclusters")

    # 5. Every call the operator made is granted by the chart's RBAC (namespaced: Role calls stay in
    #    the release namespace; the ClusterRole covers the cluster-scoped rest).
    role = api.get_object("rbac.authorization.k8s.io/v1/roles", NAMESPACE, FULLNAME) or {"rules": []}
    cluster_role = api.get_object("rbac.authorization.k8s.io/v1/clusterroles", None, f"{NAMESPACE}-{FULLNAME}")
    assert cluster_role is not None

    def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
        }

    in_namespace, everywhere = grants(role["rules"]), grants(cluster_role["rules"])
    made = [c for c in api.calls[calls_before:calls_after] if c.resource and c.verb]
    assert made, "the emulator recorded no API calls from the operator"
    denied = []
    for call in made:
        triple = (call.group or "", call.resource or "", call.verb)
        scoped = f"/namespaces/{NAMESPACE}/" in call.path
        if not (triple in everywhere or (scoped and triple in in_namespace)):
            denied.append((call.method, call.path, triple))
    assert denied == [], (tmp_path / "operator.log").read_text()[-3000:]
