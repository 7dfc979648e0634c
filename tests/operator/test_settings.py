"""Settings from the environment and flags; the CLI; metrics; API_CALLS shape."""

from __future__ import annotations

import pytest

from gossip_operator.__main__ import _parser, settings_from
from gossip_operator.kube import API_CALLS, CLUSTER_SCOPED, UndeclaredApiCall, _check_declared
from gossip_operator.manifests.resources import PODS, STATEFULSETS
from gossip_operator.metrics import OperatorMetrics
from gossip_operator.settings import DEFAULT_OPERATOR_LABELS, OperatorSettings, parse_labels, parse_seconds


def test_settings_from_env_and_flags() -> None:
    env = {"GOSSIP_OPERATOR_NAMESPACES": "a, b", "GOSSIP_OPERATOR_STATUS_INTERVAL": "500ms",
           "GOSSIP_OPERATOR_METRICS_PORT": "0", "POD_NAMESPACE": "ops"}
    settings = OperatorSettings.from_env(env)
    assert settings.namespaces == ("a", "b") and settings.status_interval == 0.5 and settings.metrics_port == 0
    assert settings.operator_namespace == "ops" and not settings.clusterwide
    args = _parser().parse_args(["--resync-interval", "2m", "-n", "c", "--liveness-port", "0"])
    merged = settings_from(args, env)
    assert merged.namespaces == ("c",) and merged.resync_interval == 120 and merged.liveness_endpoint is None
    assert OperatorSettings().liveness_endpoint == "http://0.0.0.0:8080/healthz"
    with pytest.raises(ValueError, match="GOSSIP_OPERATOR_AGENT_TIMEOUT"):
        OperatorSettings.from_env({"GOSSIP_OPERATOR_AGENT_TIMEOUT": "soon"})
    assert parse_seconds(3, "x") == 3.0


def test_operator_labels_from_env_and_flag() -> None:
    """The operator pod's labels (admitted by agent NetworkPolicies) follow the chart's names, e.g. with a Helm
    nameOverride, through GOSSIP_OPERATOR_OPERATOR_LABELS or --operator-labels."""
    assert OperatorSettings.from_env({}).operator_labels == DEFAULT_OPERATOR_LABELS
    assert OperatorSettings.from_env({"GOSSIP_OPERATOR_OPERATOR_LABELS": ""}).operator_labels == DEFAULT_OPERATOR_LABELS
    env = {"GOSSIP_OPERATOR_OPERATOR_LABELS": "app.kubernetes.io/name=gossip-ops, app.kubernetes.io/instance=rel"}
    settings = OperatorSettings.from_env(env)
    assert settings.operator_labels == {"app.kubernetes.io/name": "gossip-ops", "app.kubernetes.io/instance": "rel"}
    args = _parser().parse_args(["--operator-labels", "team=infra"])
    assert settings_from(args, env).operator_labels == {"team": "infra"}
    assert settings_from(_parser().parse_args([]), env).operator_labels == settings.operator_labels
    assert parse_labels("a=,example.com/b=c_d.e", "x") == {"a": "", "example.com/b": "c_d.e"}
    for bad, why in (("noequals", "key=value"), ("=v", "invalid label key"), ("a=b,a=c", "twice"),
                     ("a=has space", "invalid value"), ("UPPER.com/a=b", "prefix"), (" , ", "at least one"),
                     ("a=" + "x" * 64, "invalid value")):
        with pytest.raises(ValueError, match=why):
            OperatorSettings.from_env({"GOSSIP_OPERATOR_OPERATOR_LABELS": bad})


def test_api_calls_shape_and_guard() -> None:
    assert all(isinstance(g, str) and isinstance(r, str) and v in {"get", "list", "watch", "create", "patch",
                                                                    "delete"} for g, r, v in API_CALLS
               if r != "gossipclusters/finalizers")
    assert ("gossip-operator.dev", "gossipclusters/finalizers", "update") in API_CALLS
    assert {r for _, r in CLUSTER_SCOPED} == {"customresourcedefinitions", "namespaces", "nodes"}
    _check_declared(STATEFULSETS, "patch")
    with pytest.raises(UndeclaredApiCall):
        _check_declared(PODS, "delete")


def test_metrics_render() -> None:
    metrics = OperatorMetrics()
    metrics.set_phase("ns/a", "Running")
    metrics.set_phase("ns/b", "Running")
    metrics.set_phase("ns/b", None)
    metrics.reconciles.labels(trigger="create", result="created").inc()
    text = metrics.render().decode()
    assert 'gossip_operator_clusters{phase="Running"} 1.0' in text
    assert 'gossip_operator_reconciles_total{result="created",trigger="create"} 1.0' in text
