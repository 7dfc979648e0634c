"""Servers that lack an API the operator would use: it asks discovery and adapts, as on Kubernetes 1.20."""

from __future__ import annotations

import kmock

from gossip_operator.discovery import ApiVersions
from gossip_operator.kube import KubeClient, load_configuration
from gossip_operator.manifests.resources import PODDISRUPTIONBUDGETS, PODDISRUPTIONBUDGETS_V1BETA1
from tests.operator.conftest import wait_for
from tests.operator.helpers import GSC, NAMESPACE, STS, events, gsc_body
from tests.support.kube_emulator import EmulatedCluster

PDB_V1 = kmock.resource("policy", "v1", "poddisruptionbudgets")
PDB_V1BETA1 = kmock.resource("policy", "v1beta1", "poddisruptionbudgets")


def _serve_pdb_as(cluster: EmulatedCluster, *versions: str) -> None:
    """Make the emulator serve PodDisruptionBudgets only under these policy/ versions (none: not at all)."""
    info = cluster.api.resources[PDB_V1]
    del cluster.api.resources[PDB_V1]
    for version in versions:
        cluster.api.resources[kmock.resource("policy", version, "poddisruptionbudgets")] = info


async def test_kubernetes_1_20_gets_a_policy_v1beta1_pdb(cluster: EmulatedCluster, start_operator) -> None:
    _serve_pdb_as(cluster, "v1beta1")
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    pdb = await wait_for(lambda: cluster.api.get_object("policy/v1beta1/poddisruptionbudgets", NAMESPACE, "demo"),
                         what="a policy/v1beta1 PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1beta1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/instance": "demo",
                                                       "app.kubernetes.io/name": "gossip-agent"}}
    assert not any(c.path.startswith("/apis/policy/v1/") for c in cluster.api.calls if c.write)
    # Disabling it deletes it under the same version.
    cluster.api.patch_object(GSC, NAMESPACE, "demo", {"spec": {"podDisruptionBudget": {"enabled": False}}})
    await wait_for(lambda: cluster.api.get_object("policy/v1beta1/poddisruptionbudgets", NAMESPACE, "demo") is None,
                   what="the PDB deleted")


async def test_no_pdb_api_skips_the_pdb_with_a_warning(cluster: EmulatedCluster, start_operator) -> None:
    _serve_pdb_as(cluster)
    await start_operator()
    cluster.api.create_object(GSC, gsc_body())
    await wait_for(lambda: cluster.api.get_object(STS, NAMESPACE, "demo"), what="the StatefulSet")
    warned = await wait_for(lambda: [e for e in events(cluster.api, "ReconcileWarning")
                                     if "PodDisruptionBudget skipped" in e["message"]], what="a Warning event")
    assert warned[0]["type"] == "Warning"
    assert "neither policy/v1 nor policy/v1beta1" in warned[0]["message"]
    assert not any("poddisruptionbudgets" in c.path for c in cluster.api.calls if c.write)


async def test_discovery_is_cached_and_prefers_v1(cluster: EmulatedCluster) -> None:
    kube = KubeClient(load_configuration(str(cluster.kubeconfig)))
    now = [0.0]
    versions = ApiVersions(ttl=60.0, clock=lambda: now[0])
    preference = (PODDISRUPTIONBUDGETS, PODDISRUPTIONBUDGETS_V1BETA1)
    try:
        assert await versions.pick(kube, preference) == PODDISRUPTIONBUDGETS
        calls = len(cluster.api.calls)
        assert await versions.pick(kube, preference) == PODDISRUPTIONBUDGETS
        assert len(cluster.api.calls) == calls  # cached
        _serve_pdb_as(cluster, "v1beta1")
        now[0] = 61.0
        assert await versions.pick(kube, preference) == PODDISRUPTIONBUDGETS_V1BETA1
    finally:
        await kube.close()
