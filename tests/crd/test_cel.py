"""The CRD contract on a current Kubernetes: the real apiextensions API server (v1.36.4, built from Debian's Go
sources by tools/testcluster/crd-server.sh) accepts the CRD, enforces every CEL rule with the message a user
sees, applies the defaults, prunes unknown fields and keeps status to its subresource.

Kubernetes 1.20 (our e2e cluster) has no CEL, so this is where the rules are proven. Skipped, with the reason,
when the server is not built (`tools/testcluster/crd-server.sh fetch && tools/testcluster/crd-server.sh build`,
or tools/testcluster/crd-tests.sh, which also runs these tests). With CRD_SERVER_KUBECONFIG set, an already
running server is used instead of starting one.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from kubernetes.client.rest import ApiException

from tests.support.kube_emulator import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "testcluster" / "crd-server.sh"
CRD_PATH = ROOT / "crds" / "gossipclusters.gossip-operator.dev.yaml"
GROUP, VERSION, PLURAL = "gossip-operator.dev", "v1alpha1", "gossipclusters"
NS = "default"
IMAGE = "registry.example/gossip-agent:0.1.0"


def _unavailable() -> str | None:
    if os.environ.get("CRD_SERVER_KUBECONFIG"):
        return None
    if shutil.which("etcd") is None:
        return "etcd is not installed (Debian: apt-get install etcd-server)"
    if subprocess.run(["bash", str(SCRIPT), "built"], capture_output=True, check=False).returncode != 0:
        return ("the CRD server is not built: run tools/testcluster/crd-server.sh fetch && "
                "tools/testcluster/crd-server.sh build (once, ~5-13 min), or tools/testcluster/crd-tests.sh")
    return None


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running CRD server's kubeconfig (a fresh instance with its own ports and run dir, stopped after)."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    external = os.environ.get("CRD_SERVER_KUBECONFIG")
    if external:
        yield external
        return
    run_dir = tmp_path_factory.mktemp("crd-server")
    env = {**os.environ, "CRD_SERVER_RUN_DIR": str(run_dir), "CRD_SERVER_PORT": str(free_port()),
           "CRD_SERVER_ETCD_PORT": str(free_port()), "CRD_SERVER_ETCD_PEER": str(free_port())}
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=180,
                        check=False)
    try:
        assert up.returncode == 0, f"crd-server.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield str(run_dir / "kubeconfig")
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def api(kubeconfig: str) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
    try:
        yield client
    finally:
        client.close()


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def _apply_crd(api: kubernetes.client.ApiClient, crd: dict[str, Any]) -> None:
    ext = kubernetes.client.ApiextensionsV1Api(api)
    name = crd["metadata"]["name"]
    try:
        live = ext.read_custom_resource_definition(name)
        crd = {**crd, "metadata": {**crd["metadata"], "resourceVersion": live.metadata.resource_version}}
        ext.replace_custom_resource_definition(name, crd)
    except ApiException as exc:
        if exc.status != 404:
            raise
        ext.create_custom_resource_definition(crd)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.2)
    raise AssertionError("the CRD never became Established")


@pytest.fixture(scope="module")
def objects(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    _apply_crd(api, _crd())
    custom = kubernetes.client.CustomObjectsApi(api)
    deadline = time.monotonic() + 30  # the resource is served shortly after Established
    while True:
        try:
            custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
            return custom
        except ApiException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


_names = iter(range(1_000_000))


def _gsc(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GossipCluster",
            "metadata": {"name": f"gsc-{next(_names)}"}, "spec": {"image": IMAGE, **spec}}


def _message(exc: ApiException) -> str:
    return str(json.loads(exc.body)["message"])


def _create(objects: kubernetes.client.CustomObjectsApi, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    created: dict[str, Any] = objects.create_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, body, **kwargs)
    return created


def _refused(objects: kubernetes.client.CustomObjectsApi, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        _create(objects, body)
    assert caught.value.status == 422, caught.value.body
    return _message(caught.value)


def _update_refused(objects: kubernetes.client.CustomObjectsApi, before: dict[str, Any],
                    patch: dict[str, Any]) -> str:
    created = _create(objects, before)
    name = created["metadata"]["name"]
    with pytest.raises(ApiException) as caught:
        objects.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, patch)
    assert caught.value.status == 422, caught.value.body
    return _message(caught.value)


def _invalid(name_and_causes: str) -> str:
    return f'GossipCluster.gossip-operator.dev "{name_and_causes}'


# --- the CRD itself ----------------------------------------------------------------------------------


def test_the_crd_is_accepted_and_established(api: kubernetes.client.ApiClient) -> None:
    _apply_crd(api, _crd())  # idempotent: create or replace


def test_the_crd_as_it_once_shipped_is_rejected(api: kubernetes.client.ApiClient) -> None:
    """`additionalProperties: false` beside `properties` (spec.resources) made the whole CRD invalid."""
    crd = _crd()
    crd["metadata"]["name"] = "brokens.gossip-operator.dev"
    crd["spec"]["names"] = {"kind": "Broken", "plural": "brokens", "singular": "broken", "listKind": "BrokenList"}
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["resources"]["additionalProperties"] = False
    with pytest.raises(ApiException) as caught:
        kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    assert caught.value.status == 422
    assert ("spec.validation.openAPIV3Schema.properties[spec].properties[resources].additionalProperties: "
            "Forbidden: additionalProperties and properties are mutual exclusive") in _message(caught.value)


# --- every CEL rule, with the message a user sees ----------------------------------------------------

# (rule message, create-or-update, spec before (update only), spec / patch, the exact causes the server reports)
CASES: list[tuple[str, str, dict[str, Any] | None, dict[str, Any], str]] = [
    ("membership.probeTimeout must be below membership.probeInterval", "create", None,
     {"membership": {"probeInterval": "1s", "probeTimeout": "1s"}},
     'spec.membership.probeTimeout: Invalid value: membership.probeTimeout must be below '
     "membership.probeInterval"),
    ("gossip.fanout must be at most 16 (each member sends to fanout peers every gossip interval)", "create", None,
     {"gossip": {"fanout": 17}},
     'spec.gossip.fanout: Invalid value: gossip.fanout must be at most 16 (each member sends to fanout '
     "peers every gossip interval)"),
    ("storage.size cannot be set when storage.ephemeral is true (an emptyDir is used)", "create", None,
     {"storage": {"ephemeral": True, "size": "1Gi"}},
     'spec.storage.size: Invalid value: storage.size cannot be set when storage.ephemeral is true '
     "(an emptyDir is used)"),
    ("storage.storageClassName cannot be set when storage.ephemeral is true", "create", None,
     {"storage": {"ephemeral": True, "storageClassName": "fast"}},
     'spec.storage.storageClassName: Invalid value: storage.storageClassName cannot be set when '
     "storage.ephemeral is true"),
    ("set either podDisruptionBudget.minAvailable or podDisruptionBudget.maxUnavailable, not both", "create", None,
     {"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}},
     'spec.podDisruptionBudget: Invalid value: set either podDisruptionBudget.minAvailable or '
     "podDisruptionBudget.maxUnavailable, not both"),
    ("gossip.maxMetaBytes must be at most half of gossip.mtu", "create", None,
     {"gossip": {"mtu": 1000, "maxMetaBytes": 600}},
     'spec.gossip: Invalid value: gossip.maxMetaBytes must be at most half of gossip.mtu'),
]


def _transition_case(field: str, before: dict[str, Any], patch: dict[str, Any]) -> None:
    from gossip_operator.spec import TRANSITION_MESSAGES

    message = TRANSITION_MESSAGES[field]
    CASES.append((message, "update", before, patch, f"spec.{field}: Forbidden: {message}"))


_transition_case("port", {"replicas": 3}, {"port": 8000})
_transition_case("security.tlsSecret", {"replicas": 3}, {"security": {"tlsSecret": "agents-tls"}})
_transition_case("storage.ephemeral", {"replicas": 0}, {"storage": {"ephemeral": True}})
_transition_case("storage.size", {"replicas": 0, "storage": {"size": "1Gi"}}, {"storage": {"size": "2Gi"}})
_transition_case("storage.storageClassName", {"replicas": 0}, {"storage": {"storageClassName": "fast"}})


def test_every_rule_has_a_case() -> None:
    """A new x-kubernetes-validations rule without a case here fails this test."""
    messages: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        messages.extend(r["message"] for r in node.get("x-kubernetes-validations") or [])
        for sub in (node.get("properties") or {}).values():
            walk(sub)
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key])

    walk(_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    assert sorted(messages) == sorted(case[0] for case in CASES)


@pytest.mark.parametrize(("message", "kind", "before", "change", "causes"), CASES, ids=[c[0][:40] for c in CASES])
def test_each_rule_refuses_with_its_message(objects: kubernetes.client.CustomObjectsApi, message: str, kind: str,
                                            before: dict[str, Any] | None, change: dict[str, Any],
                                            causes: str) -> None:
    if kind == "create":
        body = _gsc(**change)
        text = _refused(objects, body)
    else:
        body = _gsc(**(before or {}))
        text = _update_refused(objects, body, {"spec": change})
    assert text == _invalid(f'{body["metadata"]["name"]}" is invalid: {causes}')


def test_changes_allowed_while_scaled_to_zero(objects: kubernetes.client.CustomObjectsApi) -> None:
    created = _create(objects, _gsc(replicas=0))
    name = created["metadata"]["name"]
    patched = objects.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {
        "spec": {"port": 8000, "replicas": 3, "security": {"tlsSecret": "agents-tls"}}})
    assert patched["spec"]["port"] == 8000 and patched["spec"]["security"]["tlsSecret"] == "agents-tls"


def test_ordinary_changes_pass_the_transition_rules(objects: kubernetes.client.CustomObjectsApi) -> None:
    name = _create(objects, _gsc(replicas=3, storage={"size": "1Gi"}))["metadata"]["name"]
    patched = objects.patch_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name, {
        "spec": {"replicas": 5, "image": IMAGE + "-2", "gossip": {"fanout": 4}, "storage": {"fsync": "always"}}})
    assert patched["spec"]["replicas"] == 5 and patched["spec"]["storage"]["size"] == "1Gi"


# --- valid objects, defaults, pruning, subresources ---------------------------------------------------


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_accepted(objects: kubernetes.client.CustomObjectsApi, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "GossipCluster":
            body = copy.deepcopy(doc)
            body["metadata"] = {"name": f"example-{next(_names)}"}
            _create(objects, body, field_validation="Strict")


def test_defaults_are_applied(objects: kubernetes.client.CustomObjectsApi) -> None:
    spec = _create(objects, _gsc())["spec"]
    assert {k: spec[k] for k in ("replicas", "port", "preset", "imagePullPolicy", "paused")} == {
        "replicas": 3, "port": 7946, "preset": "lan", "imagePullPolicy": "IfNotPresent", "paused": False}
    assert spec["podDisruptionBudget"] == {"enabled": True}
    assert spec["pod"] == {"terminationGracePeriodSeconds": 30}
    assert spec["membership"] == {"suspicionMaxTimeoutMult": 6, "awarenessMaxMultiplier": 8, "tcpFallbackProbe": True}
    assert spec["gossip"] == {"mode": "push-pull", "immediateForward": True, "mtu": 1400, "maxMetaBytes": 512}
    assert spec["antiEntropy"] == {"interval": "10s", "enabled": True}
    assert spec["state"] == {"conflictPolicy": "lww", "maxKeyBytes": 256, "maxValueBytes": 65536,
                             "tombstoneTtl": "24h"}
    assert spec["storage"] == {"ephemeral": False, "fsync": "interval", "fsyncInterval": "50ms",
                               "snapshotEvery": 10000}
    assert spec["security"] == {}
    assert "resources" not in spec  # the operator's default requests apply (spec.py DEFAULT_REQUESTS)


def test_unknown_fields_are_pruned_or_refused(objects: kubernetes.client.CustomObjectsApi) -> None:
    body = _gsc(fanout=3, gossip={"fanOut": 3}, resources={"requests": {"cpu": "100m"}, "limit": {"cpu": 1}})
    kept = _create(objects, copy.deepcopy(body), field_validation="Ignore")["spec"]
    assert "fanout" not in kept and kept["gossip"].get("fanOut") is None
    assert kept["resources"] == {"requests": {"cpu": "100m"}}  # the typo'd `limit` is dropped
    body["metadata"]["name"] = f"gsc-{next(_names)}"
    with pytest.raises(ApiException) as caught:
        _create(objects, body, field_validation="Strict")
    message = _message(caught.value)
    for field in ("spec.fanout", "spec.gossip.fanOut", "spec.resources.limit"):
        assert f'unknown field "{field}"' in message, message


def test_schema_errors_name_the_field(objects: kubernetes.client.CustomObjectsApi) -> None:
    body = _gsc(replicas=-1, preset="mars", membership={"probeInterval": "1 second"})
    text = _refused(objects, body)
    assert "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0" in text
    assert 'spec.preset: Unsupported value: "mars": supported values: "lan", "local", "wan"' in text
    assert 'spec.membership.probeInterval: Invalid value: "1 second"' in text


def test_status_is_a_subresource(objects: kubernetes.client.CustomObjectsApi) -> None:
    body = _gsc()
    body["status"] = {"phase": "Running"}
    created = _create(objects, body)
    assert "status" not in created  # ignored on create: only the status subresource writes it
    name = created["metadata"]["name"]
    patched = objects.patch_namespaced_custom_object_status(GROUP, VERSION, NS, PLURAL, name, {
        "status": {"phase": "Running", "replicas": 3, "selector": "a=b"}})
    assert patched["status"]["phase"] == "Running"
    scale = objects.get_namespaced_custom_object_scale(GROUP, VERSION, NS, PLURAL, name)
    assert scale["spec"]["replicas"] == 3 and scale["status"] == {"replicas": 3, "selector": "a=b"}
