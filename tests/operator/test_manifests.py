"""Pure renderers: every builder, restricted pod security, and strict validation against Kubernetes schemas."""

from __future__ import annotations

import base64
import importlib.util
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gossip_operator.manifests import (
    RenderOptions,
    configmap,
    networkpolicy,
    pdb,
    render_children,
    secret,
    services,
    statefulset,
)
from gossip_operator.manifests.common import Owner, selector_string
from gossip_operator.spec import ClusterSpec, InvalidSpec, parse

OWNER = Owner(name="demo", uid="1234")


def _spec(**spec: Any) -> ClusterSpec:
    return parse({"image": "gossip-agent:0.1.0", **spec}, name="demo", namespace="ns")


def _container(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]["containers"][0]


def test_statefulset_runs_the_agent_with_probes_and_graceful_leave() -> None:
    sts = statefulset.render(_spec(), OWNER, cluster_domain="cluster.local", keyring_hash="k1")
    assert sts["spec"]["serviceName"] == "demo-peers"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "gossip-agent",
                                                       "app.kubernetes.io/instance": "demo"}}
    c = _container(sts)
    assert c["command"] == ["gossip-agent"] and c["args"] == ["--config", "/etc/gossip/config.json"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]}
    assert env == {"GOSSIP_NAME": "metadata.name", "GOSSIP_ADVERTISE_ADDRESS": "status.podIP"}
    assert {(p["containerPort"], p["protocol"]) for p in c["ports"]} == {(7946, "UDP"), (7946, "TCP")}
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # graceful leave on SIGTERM, no preStop hook: the hook POSTed /v1/leave without the API's write token and
    # failed (401) on every pod termination on a real cluster
    assert "lifecycle" not in c
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/gossip/config.json"]["subPath"] == "config.json"
    assert {"/etc/gossip/keyring", "/data", "/tmp"} <= set(mounts)
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data" and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["gossip-operator.dev/keyring-hash"] == "k1"
    assert sts["metadata"]["ownerReferences"] == [OWNER.reference()]


def test_statefulset_meets_the_restricted_pod_security_standard() -> None:
    sts = statefulset.render(_spec(), OWNER, cluster_domain="cluster.local", keyring_hash="")
    pod = sts["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = _container(sts)["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert all(not v.get("hostPath") for v in pod["volumes"])


def test_statefulset_overrides_tls_and_ephemeral_storage() -> None:
    spec = _spec(
        port=8000, imagePullPolicy="Always", resources={"limits": {"memory": "256Mi"}},
        storage={"ephemeral": True}, security={"tlsSecret": "demo-tls"},
        pod={"nodeSelector": {"zone": "a"}, "tolerations": [{"key": "k", "operator": "Exists"}],
             "affinity": {"podAntiAffinity": {}}, "labels": {"team": "x"}, "annotations": {"a": "b"},
             "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
                                            "whenUnsatisfiable": "ScheduleAnyway"}],
             "imagePullSecrets": [{"name": "regcred"}], "priorityClassName": "high",
             "serviceAccountName": "agents", "terminationGracePeriodSeconds": 60})
    sts = statefulset.render(spec, OWNER, cluster_domain="cluster.local", keyring_hash="")
    pod = sts["spec"]["template"]["spec"]
    c = _container(sts)
    assert "volumeClaimTemplates" not in sts["spec"]
    assert {"name": "data", "emptyDir": {}} in pod["volumes"]
    assert {"name": "tls", "secret": {"secretName": "demo-tls", "defaultMode": 0o440}} in pod["volumes"]
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # A limit stands for its own request (Kubernetes copies it); the other resource gets the default request.
    assert c["resources"] == {"limits": {"memory": "256Mi"}, "requests": {"cpu": "50m"}}
    assert c["imagePullPolicy"] == "Always"
    assert pod["nodeSelector"] == {"zone": "a"} and pod["tolerations"][0]["key"] == "k"
    assert pod["affinity"] == {"podAntiAffinity": {}}
    assert pod["topologySpreadConstraints"][0]["labelSelector"] == {"matchLabels": {
        "app.kubernetes.io/name": "gossip-agent", "app.kubernetes.io/instance": "demo"}}
    assert pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["priorityClassName"] == "high"
    assert pod["serviceAccountName"] == "agents" and pod["terminationGracePeriodSeconds"] == 60
    assert sts["spec"]["template"]["metadata"]["labels"]["team"] == "x"
    assert sts["spec"]["template"]["metadata"]["annotations"]["a"] == "b"


def test_services_headless_for_peers_and_client_for_api() -> None:
    headless = services.render_headless(_spec(), OWNER)
    assert headless["metadata"]["name"] == "demo-peers"
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert {p["protocol"] for p in headless["spec"]["ports"]} == {"TCP", "UDP"}
    client = services.render_client(_spec(), OWNER)
    assert client["metadata"]["name"] == "demo" and client["spec"]["type"] == "ClusterIP"
    assert [p["protocol"] for p in client["spec"]["ports"]] == ["TCP"]


def test_configmap_seeds_and_agent_sections() -> None:
    spec = _spec(replicas=5, gossip={"fanout": 4}, storage={"size": "2Gi", "fsync": "always"})
    cm = configmap.render(spec, OWNER, cluster_domain="example.local")
    config = json.loads(cm["data"]["config.json"])  # JSON: the agent then needs no YAML parser
    assert config["seeds"] == [
        "demo-0.demo-peers.ns.svc.example.local:7946", "demo-1.demo-peers.ns.svc.example.local:7946",
        "demo-2.demo-peers.ns.svc.example.local:7946", "demo-peers.ns.svc.example.local:7946"]
    assert config["gossip"] == {"fanout": 4}
    assert config["storage"] == {"fsync": "always", "dataDir": "/data"}
    assert config["security"] == {"keyringFile": "/etc/gossip/keyring/keyring",
                                  "apiTokensFile": "/etc/gossip/api-tokens/tokens"}
    assert "name" not in config and "advertiseAddress" not in config  # from the environment, per pod
    assert configmap.seeds(_spec(replicas=1), "cluster.local") == []


def test_seeds_are_relative_unless_a_domain_is_configured() -> None:
    """Seeds used to end in a hard-coded .cluster.local; the relative form is completed by the pod's DNS search
    path with whatever domain the cluster has."""
    config = json.loads(configmap.render(_spec(replicas=2), OWNER, cluster_domain="")["data"]["config.json"])
    assert config["seeds"] == ["demo-0.demo-peers.ns.svc:7946", "demo-1.demo-peers.ns.svc:7946",
                               "demo-peers.ns.svc:7946"]
    from gossip_operator.manifests import RenderOptions
    from gossip_operator.settings import OperatorSettings

    assert OperatorSettings().cluster_domain == "" and RenderOptions().cluster_domain == ""


def test_agents_get_resource_requests_by_default() -> None:
    """A pod without requests is BestEffort: the first evicted under node pressure."""
    (c,) = statefulset.render(_spec(), OWNER, cluster_domain="", keyring_hash="")["spec"]["template"]["spec"][
        "containers"]
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}}
    spec = _spec(resources={"requests": {"memory": "200Mi"}, "limits": {"cpu": "2"}})
    (c,) = statefulset.render(spec, OWNER, cluster_domain="", keyring_hash="")["spec"]["template"]["spec"][
        "containers"]
    assert c["resources"] == {"requests": {"memory": "200Mi"}, "limits": {"cpu": "2"}}


def test_volume_ownership_changes_only_on_mismatch() -> None:
    pod = statefulset.render(_spec(), OWNER, cluster_domain="", keyring_hash="")["spec"]["template"]["spec"]
    assert pod["securityContext"]["fsGroupChangePolicy"] == "OnRootMismatch"


def test_tls_without_ca_names_no_ca_file() -> None:
    """A TLS Secret without ca.crt (e.g. a certificate from a public CA): a tlsCaFile pointing at a missing file
    would stop every agent at start."""
    spec = _spec(security={"tlsSecret": "t"})
    with_ca = json.loads(configmap.render(spec, OWNER, cluster_domain="")["data"]["config.json"])["security"]
    without = json.loads(configmap.render(spec, OWNER, cluster_domain="", tls_ca=False)["data"]["config.json"])[
        "security"]
    assert with_ca["tlsCaFile"] == "/etc/gossip/tls/ca.crt" and "tlsCaFile" not in without
    assert without["tlsCertFile"] == "/etc/gossip/tls/tls.crt"
    assert configmap.config_hash(spec, "") != configmap.config_hash(spec, "", tls_ca=False)  # rolls the pods


def test_config_hash_ignores_seeds_but_not_settings() -> None:
    assert configmap.config_hash(_spec(replicas=3), "c") == configmap.config_hash(_spec(replicas=7), "c")
    assert configmap.config_hash(_spec(), "c") != configmap.config_hash(_spec(gossip={"fanout": 5}), "c")


@pytest.mark.skipif(importlib.util.find_spec("gossip_agent") is None, reason="gossip_agent not installed")
@pytest.mark.parametrize("extra", [{}, {"preset": "wan", "security": {"tlsSecret": "t"}},
                                   {"membership": {"probeInterval": "2s", "probeTimeout": "1s"},
                                    "state": {"conflictPolicies": {"carts/": "siblings"}}}])
def test_rendered_config_is_accepted_by_the_agent(extra: dict[str, Any]) -> None:
    from gossip_agent.core.config import from_mapping

    config = yaml.safe_load(configmap.render(_spec(**extra), OWNER, cluster_domain="cluster.local")["data"][
        "config.json"])
    agent = from_mapping({**config, "name": "demo-0"})
    assert agent.storage.data_dir == "/data" and agent.port == 7946


@pytest.mark.skipif(importlib.util.find_spec("gossip_agent") is None, reason="gossip_agent not installed")
def test_hostile_input_bounds_reach_the_agent_from_the_spec() -> None:
    """The agent's bounds on members, clock drift and replays are settable in a GossipCluster, and arrive."""
    from gossip_agent.core.config import from_mapping

    spec = _spec(membership={"maxMembers": 100}, state={"maxClockDriftMs": 5000},
                 security={"replayWindow": "30s", "tlsSecret": "t"})
    config = json.loads(configmap.render(spec, OWNER, cluster_domain="cluster.local")["data"]["config.json"])
    agent = from_mapping({**config, "name": "demo-0"})
    assert agent.membership.max_members == 100 and agent.state.max_clock_drift_ms == 5000
    assert agent.security.replay_window == 30.0 and agent.security.keyring_file  # operator keys kept too
    with pytest.raises(InvalidSpec, match="security.replayWindow"):
        _spec(security={"replayWindow": "soon"})
    with pytest.raises(InvalidSpec, match="security: unknown"):
        _spec(security={"replayWindo": "30s"})


def test_pdb_defaults_and_overrides() -> None:
    assert pdb.render(_spec(), OWNER)["spec"]["maxUnavailable"] == 1
    assert pdb.render(_spec(podDisruptionBudget={"minAvailable": "60%"}), OWNER)["spec"] == {
        "minAvailable": "60%", "selector": {"matchLabels": {"app.kubernetes.io/name": "gossip-agent",
                                                            "app.kubernetes.io/instance": "demo"}}}
    assert pdb.render(_spec(podDisruptionBudget={"enabled": False}), OWNER) is None


def test_secret_keyring_format() -> None:
    keys = [bytes(range(32)), bytes(32)]
    body = secret.render(_spec(), OWNER, keys)
    text = base64.b64decode(body["data"]["keyring"]).decode()
    assert secret.parse_keyring(text) == keys and len(text.splitlines()) == 2
    assert body["metadata"]["ownerReferences"] == [OWNER.reference()]
    assert "ownerReferences" not in secret.render(_spec(), None, keys[:1])["metadata"]
    with pytest.raises(ValueError):
        secret.keyring_text([b"short"])
    with pytest.raises(ValueError, match="line 1"):
        secret.parse_keyring("not base64!\n")
    assert secret.keyring_hash("a") != secret.keyring_hash("b")


def test_networkpolicy_optional() -> None:
    assert networkpolicy.render(_spec(), OWNER, operator_namespace=None, operator_labels={}) is None
    policy = networkpolicy.render(_spec(pod={"networkPolicy": {"enabled": True, "allowFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "a"}}}]}}), OWNER, operator_namespace="ops",
        operator_labels={"app.kubernetes.io/name": "gossip-operator"})
    assert policy is not None
    api_from = policy["spec"]["ingress"][1]["from"]
    assert {"namespaceSelector": {"matchLabels": {"team": "a"}}} in api_from
    assert api_from[-1]["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}


def test_render_children_all_owned_and_valid_kubernetes() -> None:
    spec = _spec(pod={"networkPolicy": {"enabled": True}, "tolerations": [{"key": "k", "operator": "Exists"}]},
                 resources={"requests": {"cpu": "100m"}})
    children = render_children(spec, OWNER, RenderOptions())
    bodies = [c.body for c in children if c.body is not None]
    bodies.append(secret.render(spec, OWNER, [bytes(32)]))
    assert len(bodies) == 7
    for body in bodies:
        assert body["metadata"]["namespace"] == "ns"
        assert body["metadata"]["ownerReferences"][0]["uid"] == "1234"
        kubernetes_validate.validate(body, "1.30.0", strict=True)


def test_selector_string() -> None:
    assert selector_string(_spec()) == "app.kubernetes.io/instance=demo,app.kubernetes.io/name=gossip-agent"
