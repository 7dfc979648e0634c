"""The Helm chart: lint, values schema, rendered manifests (validity, security, labels, RBAC)."""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.chart_support import (
    CHART,
    EXTERNAL_RBAC_VALUES,
    FULL_VALUES,
    MONITORING_API,
    REQUIRED_SET,
    ROOT,
    Render,
    run_helm,
    with_required,
)
from tests.chart.pod_security import pod_specs, restricted_violations
from tests.support.kube_emulator import emulated_cluster_in_thread

CRD_NAME = "gossipclusters.gossip-operator.dev.yaml"
KUBERNETES_VERSIONS = ("1.30", "1.34")
# Kinds whose schemas kubernetes-validate does not ship (the Prometheus Operator's CRDs).
NO_SCHEMA_KINDS = frozenset({"ServiceMonitor", "PodMonitor"})
STANDARD_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
)


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


# --- lint and values schema ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [None, FULL_VALUES, EXTERNAL_RBAC_VALUES],
    ids=["default", "full", "external-rbac"],
)
def test_helm_lint_strict(helm: Path, helm_env: dict[str, str], tmp_path: Path, values: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    (tmp_path / "values.json").write_text(json.dumps(with_required(values)))
    args += ["--values", str(tmp_path / "values.json")]
    proc = run_helm(helm, helm_env, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("set_arg", "complaint"),
    [
        ("operator.clusterwide=true", "clusterwide"),  # typo of clusterWide
        ("imagee.tag=1", "imagee"),  # unknown top-level key
        ("metrics.serviceMonitor.enable=true", "enable"),  # typo of enabled
        ("operator.settings.statusInterval=ten", "statusInterval"),  # not a duration
        ("operator.settings.statusIntreval=10s", "statusIntreval"),  # typo
        ("securityContext.runAsUser=0", "runAsUser"),  # root is never allowed
    ],
)
def test_values_schema_rejects_typos(helm: Path, helm_env: dict[str, str], set_arg: str, complaint: str) -> None:
    proc = run_helm(helm, helm_env, "template", "rel", str(CHART), "--set", set_arg)
    assert proc.returncode != 0, f"--set {set_arg} was accepted"
    assert complaint in proc.stderr, proc.stderr
    lint = run_helm(helm, helm_env, "lint", "--strict", str(CHART), "--set", set_arg)
    assert lint.returncode != 0, f"helm lint accepted --set {set_arg}"


IMAGE_ADVICE = ("image.repository is required: no public gossip-operator image is published. Build it from "
                "Dockerfile.operator, push it to a registry your cluster can pull from, and set --set "
                "image.repository=REGISTRY/gossip-operator")


@pytest.mark.parametrize("command", [["template", "rel"], ["install", "rel"]], ids=["template", "install"])
def test_no_image_repository_fails_with_advice(helm: Path, helm_env: dict[str, str], command: list[str],
                                               tmp_path: Path) -> None:
    """The default image used to be gossip-operator:0.1.0, which exists in no registry: pods stuck in
    ImagePullBackOff. Now the install fails at once and says what to do (`helm install` against the emulator:
    it fails while rendering, before it deploys anything). (`helm lint` skips `required` by design: it only
    prints the message as [INFO].)"""
    with emulated_cluster_in_thread(tmp_path / "kubeconfig") as cluster:
        proc = run_helm(helm, {**helm_env, "KUBECONFIG": str(cluster.kubeconfig)}, *command, str(CHART))
        writes = cluster.writes()
    assert proc.returncode != 0
    # Helm installs crds/ before it renders the templates; nothing else is written.
    assert [w.resource for w in writes] in ([], ["customresourcedefinitions"])
    assert IMAGE_ADVICE in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "docs/deploy.md" in proc.stdout + proc.stderr


def test_values_schema_rejects_a_malformed_repository(helm: Path, helm_env: dict[str, str]) -> None:
    proc = run_helm(helm, helm_env, "template", "rel", str(CHART), "--set", "image.repository=Has Space")
    assert proc.returncode != 0 and "image.repository" in proc.stderr, proc.stderr


def test_kube_version_is_what_the_chart_really_needs(helm: Path, helm_env: dict[str, str]) -> None:
    """The chart is installed and tested on Kubernetes 1.20 (CEL rules need 1.25+, which the operator's own
    validation stands in for): 1.20 renders, 1.19 is refused by Helm's kubeVersion check."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["kubeVersion"] == ">=1.20.0-0"
    ok = run_helm(helm, helm_env, "template", "rel", str(CHART), "--set", REQUIRED_SET, "--kube-version", "1.20.2")
    assert ok.returncode == 0, ok.stderr
    old = run_helm(helm, helm_env, "template", "rel", str(CHART), "--set", REQUIRED_SET, "--kube-version", "1.19.9")
    assert old.returncode != 0 and "kubeVersion" in old.stderr, old.stderr


def test_rbac_grants_update_on_finalizers_for_owner_reference_enforcement(render: Render) -> None:
    """Children set blockOwnerDeletion: true; with OwnerReferencesPermissionEnforcement (OpenShift) their creation
    is refused (403) unless the operator may update gossipclusters/finalizers."""
    for values in ({}, {"operator": {"clusterWide": True}}):
        rules = _rbac(render(values))
        granted = set().union(*rules.values())
        assert ("gossip-operator.dev", "gossipclusters/finalizers", "update") in granted


def test_helm4_lints_and_renders_the_same(
    helm4: Path, helm_env: dict[str, str], tmp_path: Path, rendered_variants: dict[str, list[dict[str, Any]]]
) -> None:
    """Helm 4 (JSON Schema 2020-12 validator, new template engine build) agrees with Helm 3."""
    (tmp_path / "full.json").write_text(json.dumps(FULL_VALUES))
    for extra in (["--set", REQUIRED_SET], ["--values", str(tmp_path / "full.json")]):
        lint = run_helm(helm4, helm_env, "lint", "--strict", str(CHART), *extra)
        assert lint.returncode == 0, lint.stdout + lint.stderr
    typo = run_helm(helm4, helm_env, "template", "rel", str(CHART), "--set", "operator.clusterwide=true")
    assert typo.returncode != 0 and "clusterwide" in typo.stderr, typo.stderr
    args = ["template", "rel", str(CHART), "--namespace", "gossip", "--api-versions", MONITORING_API[0]]
    proc = run_helm(helm4, helm_env, *args, "--values", str(tmp_path / "full.json"))
    assert proc.returncode == 0, proc.stderr
    assert [d for d in yaml.safe_load_all(proc.stdout) if d] == rendered_variants["full"]


def _objects_without_closed_properties(schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every object schema with `properties` must also say additionalProperties: false."""
    bad: list[str] = []
    if schema.get("type") == "object" and "properties" in schema and schema.get("additionalProperties") is not False:
        bad.append(path)
    for key, sub in (schema.get("properties") or {}).items():
        bad += _objects_without_closed_properties(sub, f"{path}.{key}")
    items = schema.get("items")
    if isinstance(items, dict):
        bad += _objects_without_closed_properties(items, f"{path}[]")
    return bad


def test_values_schema_is_closed_and_accepts_defaults() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert _objects_without_closed_properties(schema) == []
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(defaults, schema)
    jsonschema.validate(FULL_VALUES, schema)
    # Every key of values.yaml is described by the schema (a key missing there would be rejected).
    assert set(defaults) == set(schema["properties"])


# --- rendered manifests ---------------------------------------------------------------------------


def test_default_render_has_the_expected_objects(render: Render) -> None:
    # Namespaced: a Role for the namespace, and a small ClusterRole for cluster-scoped reads kopf needs.
    assert kinds(render()) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    assert kinds(render(api_versions=MONITORING_API)) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodMonitor",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_full_render_has_the_optional_objects(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    assert kinds(rendered_variants["full"]) == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodMonitor",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert kinds(rendered_variants["external-rbac"]) == ["Deployment", "Service"]


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_manifests_validate_strictly(rendered_variants: dict[str, list[dict[str, Any]]], k8s_version: str) -> None:
    checked = 0
    for variant, docs in rendered_variants.items():
        for doc in docs:
            if doc["kind"] in NO_SCHEMA_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{variant}: {doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")
            checked += 1
    assert checked >= 15  # guards against silently skipping everything


@pytest.mark.parametrize("k8s_version", KUBERNETES_VERSIONS)
def test_crd_validates_strictly(k8s_version: str) -> None:
    crd = yaml.safe_load((ROOT / "crds" / CRD_NAME).read_text())
    kubernetes_validate.validate(crd, k8s_version, strict=True)


def test_monitoring_objects_are_well_formed(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    """No schema ships for ServiceMonitor/PodMonitor, so check the parts that matter by hand."""
    docs = rendered_variants["full"]
    sm = one(docs, "ServiceMonitor")
    svc = one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [p["name"] for p in svc["spec"]["ports"]]
    assert sm["metadata"]["labels"]["release"] == "kps"
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["namespaceSelector"] == {"any": True}  # cluster-wide operator: agents anywhere
    assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
    pm_default = one(rendered_variants["default+monitoring"], "PodMonitor")
    assert pm_default["spec"]["namespaceSelector"] == {"matchNames": ["gossip"]}


def test_every_pod_meets_the_restricted_standard(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    pods = 0
    for variant, docs in rendered_variants.items():
        for doc in docs:
            for spec in pod_specs(doc):
                pods += 1
                assert restricted_violations(spec) == [], f"{variant}: {doc['kind']}/{doc['metadata']['name']}"
                assert spec["automountServiceAccountToken"] is True  # the operator needs its token
    assert pods == len(rendered_variants)


def test_every_object_has_the_standard_labels(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    for variant, docs in rendered_variants.items():
        for doc in docs:
            labels = doc["metadata"].get("labels") or {}
            missing = [label for label in STANDARD_LABELS if label not in labels]
            assert missing == [], f"{variant}: {doc['kind']}/{doc['metadata']['name']} lacks {missing}"
            assert labels["app.kubernetes.io/managed-by"] == "Helm"
            assert all(len(v) <= 63 for v in labels.values())


def test_deployment_shape(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    dep = one(rendered_variants["default"], "Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    probe = container["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert probe == {"path": "/healthz", "port": "health"}
    assert ports == {"metrics": 9090, "health": 8080}
    assert container["image"] == "registry.example/gossip-operator:0.1.0"
    env = {e["name"]: e for e in container["env"]}
    assert env["GOSSIP_OPERATOR_NAMESPACES"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["GOSSIP_OPERATOR_LIVENESS_PORT"]["value"] == "8080"
    assert env["GOSSIP_OPERATOR_METRICS_PORT"]["value"] == "9090"
    assert "GOSSIP_OPERATOR_STATUS_INTERVAL" not in env  # unset: the operator's default
    assert "args" not in container

    full = one(rendered_variants["full"], "Deployment")
    (fc,) = full["spec"]["template"]["spec"]["containers"]
    assert fc["image"] == "registry.example/gossip-operator@sha256:" + "ab" * 32
    fenv = {e["name"]: e.get("value") for e in fc["env"]}
    assert fenv["GOSSIP_OPERATOR_NAMESPACES"] == ""  # cluster-wide
    assert fenv["GOSSIP_OPERATOR_STATUS_INTERVAL"] == "5s"
    assert fenv["GOSSIP_OPERATOR_AGENTS_TO_QUERY"] == "5"
    assert fenv["GOSSIP_OPERATOR_CLUSTER_DOMAIN"] == "example.internal"
    assert fenv["EXTRA"] == "1"
    assert {p["name"]: p["containerPort"] for p in fc["ports"]} == {"metrics": 19090, "health": 18080}
    assert fc["args"] == ["--verbose", "--resync-interval=30s"]
    assert full["spec"]["template"]["spec"]["serviceAccountName"] == "gossip-sa"
    assert full["spec"]["template"]["metadata"]["labels"]["team"] == "gossip"


def test_operator_reads_the_settings_the_chart_writes(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    """The env the chart renders parses with the operator's own settings loader."""
    from gossip_operator.__main__ import _parser as _operator_parser
    from gossip_operator.__main__ import settings_from
    from gossip_operator.settings import OperatorSettings

    (container,) = one(rendered_variants["default"], "Deployment")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    env.update(POD_NAMESPACE="gossip", GOSSIP_OPERATOR_NAMESPACES="gossip")  # what the fieldRefs resolve to
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ("gossip",) and not settings.clusterwide
    assert (settings.liveness_port, settings.metrics_port) == (8080, 9090)
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    probe = container["livenessProbe"]["httpGet"]
    assert settings.liveness_endpoint.endswith(probe["path"])

    (fc,) = one(rendered_variants["full"], "Deployment")["spec"]["template"]["spec"]["containers"]
    args = _operator_parser().parse_args(fc["args"])
    assert args.verbose
    full = settings_from(args, {e["name"]: e.get("value", "") for e in fc["env"]})
    assert full.clusterwide and full.resync_interval == 30.0
    assert (full.liveness_port, full.metrics_port, full.status_interval) == (18080, 19090, 5.0)
    assert (full.agents_to_query, full.cluster_domain) == (5, "example.internal")
    # Agent NetworkPolicies admit the operator by these labels: the chart's pod must carry them.
    pod_labels = one(rendered_variants["default"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert settings.operator_labels.items() <= pod_labels.items()
    assert "GOSSIP_OPERATOR_OPERATOR_LABELS" in env  # rendered from the selector labels: follows nameOverride
    full_pod_labels = one(rendered_variants["full"], "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert full.operator_labels.items() <= full_pod_labels.items()


def test_service_targets_the_metrics_port(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    for variant in ("default", "full"):
        docs = rendered_variants[variant]
        svc = one(docs, "Service")
        pod = one(docs, "Deployment")["spec"]["template"]
        assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        (port,) = svc["spec"]["ports"]
        (container,) = pod["spec"]["containers"]
        assert port["targetPort"] in [p["name"] for p in container["ports"]]


def test_network_policy(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    np = one(rendered_variants["full"], "NetworkPolicy")
    pod = one(rendered_variants["full"], "Deployment")["spec"]["template"]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert np["spec"]["policyTypes"] == ["Ingress", "Egress"]
    egress_ports = {p["port"] for rule in np["spec"]["egress"] for p in rule["ports"]}
    assert {53, 443, 6443, 7946} <= egress_ports
    assert np["spec"]["ingress"][0]["from"] == FULL_VALUES["networkPolicy"]["metricsFrom"]


def test_grafana_dashboard_configmap(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    cm = one(rendered_variants["full"], "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    (body,) = cm["data"].values()
    dashboard = json.loads(body)
    assert dashboard["uid"] == "gossip-operator"
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    # What the issue asks the dashboard to show.
    for family in (
        "gossip_probes_total",
        "gossip_acks_total",
        "gossip_suspicions_total",
        "gossip_deaths_total",
        "gossip_refutations_total",
        "gossip_messages_total",
        "gossip_bytes_total",
        "gossip_packets_dropped_total",
        "gossip_broadcast_queue_depth",
        "gossip_health_score",
        "gossip_state_keys",
        "gossip_state_agreeing_fraction",
        "gossip_operator_reconciles_total",
    ):
        assert family in exprs, family
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


# Agent state metrics the dashboard shows before the agent exports them (the replicated-state work,
# "agent II", has not landed): proposed names. Once the agent exports one, drop it from here.
PENDING_AGENT_METRICS: frozenset[str] = frozenset()


def _dashboard_metrics(prefix_pattern: str) -> set[str]:
    text = (CHART / "dashboards" / "gossip-operator.json").read_text()
    return set(re.findall(prefix_pattern, text))


def _sample_names(registry: Any) -> set[str]:
    return {sample.name for family in registry.collect() for sample in family.samples}


def test_dashboard_uses_only_metrics_the_operator_exports() -> None:
    from gossip_operator.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    metrics.reconciles.labels(trigger="t", result="r").inc()
    metrics.errors.labels(stage="s").inc()
    metrics.writes.labels(kind="k", verb="v").inc()
    metrics.agent_queries.labels(result="r").inc()
    used = _dashboard_metrics(r"gossip_operator_[a-z_]+")
    assert used, "the dashboard has no operator panels"
    assert used <= _sample_names(metrics.registry), sorted(used - _sample_names(metrics.registry))


def _state_metric_names() -> set[str]:
    """Families the agent's state layer exports (its collector over an empty in-memory store)."""
    from gossip_agent.core.config import AgentConfig
    from gossip_agent.io.state_service import StateCollector, state_extensions

    [service] = state_extensions(AgentConfig.preset_config("lan", name="dash"))
    service.state_delegate()  # opens the (in-memory) store
    return {sample.name for family in StateCollector(service).collect() for sample in family.samples}  # type: ignore[arg-type]


def test_dashboard_uses_only_metrics_the_agent_exports() -> None:
    from gossip_agent.core.messages import MemberState
    from gossip_agent.io.metrics import AgentMetrics, AgentStats

    class Node:
        stats: dict[str, int] = {"probes": 1, "some_event": 1}
        health_score = 0
        incarnation = 1

        def counts(self) -> dict[Any, int]:
            return dict.fromkeys(MemberState, 1)

        def queue_depth(self) -> int:
            return 0

    stats = AgentStats()
    stats.messages[("in", "ping")] += 1
    stats.bytes[("in", "ping")] += 1
    stats.packets["in"] += 1
    stats.dropped["decode"] += 1
    stats.events["join"] += 1
    stats.streams[("push-pull", "ok")] += 1
    exported = _sample_names(AgentMetrics(Node(), stats).registry)
    exported |= _state_metric_names()
    used = _dashboard_metrics(r"gossip_(?!operator_)[a-z_]+") - {"gossip_operator"}
    assert not PENDING_AGENT_METRICS & exported, "the agent exports these now: drop them from PENDING_AGENT_METRICS"
    assert used - PENDING_AGENT_METRICS <= exported, sorted(used - PENDING_AGENT_METRICS - exported)


def _notes(helm: Path, helm_env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """NOTES.txt as rendered. helm prints it only on install, which needs a cluster, so render a copy
    of the chart whose only template evaluates NOTES.txt into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "notes").mkdir()
    (chart / "templates" / "NOTES.txt").rename(chart / "notes" / "NOTES.txt")
    (chart / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n"
        'data: {notes: {{ tpl (.Files.Get "notes/NOTES.txt") . | quote }}}\n'
    )
    show = ["--show-only", "templates/notes-under-test.yaml"]
    proc = run_helm(helm, helm_env, "template", "rel", str(chart), "-n", "gossip", *show, "--set", REQUIRED_SET, *args)
    assert proc.returncode == 0, proc.stderr
    notes: str = yaml.safe_load(proc.stdout)["data"]["notes"]
    return notes


def test_notes(helm: Path, helm_env: dict[str, str], tmp_path: Path) -> None:
    notes = _notes(helm, helm_env, tmp_path)
    assert "kubectl apply --server-side -f crds/" in notes
    assert "kubectl -n gossip get gossipclusters" in notes
    assert "kind: GossipCluster" in notes
    assert 'namespace "gossip" only' in notes
    assert "does not serve monitoring.coreos.com/v1" in notes
    # The sample GossipCluster in the notes is valid against the CRD's schema.
    sample_text = notes.split("<<'YAML'\n", 1)[1].split("     YAML", 1)[0]
    sample = yaml.safe_load(textwrap.dedent(sample_text))
    crd = yaml.safe_load((ROOT / "crds" / CRD_NAME).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == sample["apiVersion"].split("/")[1]]
    jsonschema.validate(sample, version["schema"]["openAPIV3Schema"])
    assert sample["kind"] == crd["spec"]["names"]["kind"]
    wide = _notes(
        helm, helm_env, tmp_path / "wide", "--set", "operator.clusterWide=true", "--api-versions", MONITORING_API[0]
    )
    assert "every namespace" in wide and "monitoring.coreos.com" not in wide


# --- the CRD copy ---------------------------------------------------------------------------------


def test_chart_crd_is_identical_to_the_top_level_crd() -> None:
    top = sorted(p.name for p in (ROOT / "crds").iterdir())
    chart = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart == top, "charts/gossip-operator/crds/ and crds/ hold different files"
    for name in top:
        assert (CHART / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes(), (
            f"{name} differs: cp crds/{name} charts/gossip-operator/crds/"
        )


def test_helm_package_includes_crd_schema_and_dashboard(helm: Path, helm_env: dict[str, str], tmp_path: Path) -> None:
    proc = run_helm(helm, helm_env, "package", str(CHART), "--destination", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (package,) = tmp_path.glob("gossip-operator-*.tgz")
    with tarfile.open(package) as tar:
        names = set(tar.getnames())
    for member in (f"crds/{CRD_NAME}", "values.schema.json", "dashboards/gossip-operator.json", "templates/NOTES.txt"):
        assert f"gossip-operator/{member}" in names, member


def test_helm_renders_the_crd(helm: Path, helm_env: dict[str, str]) -> None:
    proc = run_helm(helm, helm_env, "template", "rel", str(CHART), "--include-crds", "--set", REQUIRED_SET)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    crd = one(docs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "gossipclusters.gossip-operator.dev"


# --- RBAC: exactly the operator's API calls -------------------------------------------------------


def _triples(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out: set[tuple[str, str, str]] = set()
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def _rbac(docs: list[dict[str, Any]]) -> dict[str, set[tuple[str, str, str]]]:
    return {kind: _triples(d["rules"]) for d in docs for kind in [d["kind"]] if kind in ("Role", "ClusterRole")}


def _api_calls() -> frozenset[tuple[str, str, str]]:
    from gossip_operator.kube import API_CALLS

    return API_CALLS


def _cluster_scoped() -> frozenset[tuple[str, str]]:
    from gossip_operator.kube import CLUSTER_SCOPED

    return CLUSTER_SCOPED


def test_rbac_is_exactly_the_operators_api_calls_cluster_wide(render: Render) -> None:
    rules = _rbac(render({"operator": {"clusterWide": True}}))
    assert set(rules) == {"ClusterRole"}
    assert rules["ClusterRole"] == set(_api_calls())


def test_rbac_is_exactly_the_operators_api_calls_namespaced(render: Render) -> None:
    docs = render()
    rules = _rbac(docs)
    namespaced = rules.get("Role", set())
    cluster = rules.get("ClusterRole", set())
    assert namespaced | cluster == set(_api_calls())
    assert not namespaced & cluster
    # A namespaced install grants in a Role all it can; only cluster-scoped resources need a ClusterRole.
    assert cluster == {call for call in _api_calls() if (call[0], call[1].split("/")[0]) in _cluster_scoped()}
    assert one(docs, "ClusterRoleBinding")["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "gossip"
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "gossip"}]


def test_cluster_scoped_names_carry_the_namespace(render: Render) -> None:
    """Namespaced installs in two namespaces must not fight over one ClusterRole."""
    a = {d["kind"]: d for d in render(namespace="team-a")}
    b = {d["kind"]: d for d in render(namespace="team-b")}
    for kind in ("ClusterRole", "ClusterRoleBinding"):
        assert a[kind]["metadata"]["name"] != b[kind]["metadata"]["name"]
    assert a["ClusterRoleBinding"]["roleRef"]["name"] == a["ClusterRole"]["metadata"]["name"]


def test_rbac_bindings_follow_the_service_account(rendered_variants: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_variants["full"]
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gossip-sa", "namespace": "gossip"}]
    assert binding["roleRef"]["name"] == one(docs, "ClusterRole")["metadata"]["name"]
