"""Shared by the chart, image and install tests: paths, helm runner, values variants."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gossip-operator"

Render = Callable[..., list[dict[str, Any]]]


def tool(flag: list[str]) -> Path:
    """Path of the cached helm (or kubectl with ["--kubectl"]) from tools/get-helm.py, else skip."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "get-helm.py"), *flag],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"helm/kubectl unavailable (tools/get-helm.py: {proc.stderr.strip()})")
    return Path(proc.stdout.strip())


def run_helm(helm: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


# What every install must set: the operator image repository (no public image exists; the chart fails without).
REPOSITORY = "registry.example/gossip-operator"
REQUIRED_VALUES: dict[str, Any] = {"image": {"repository": REPOSITORY}}
REQUIRED_SET = f"image.repository={REPOSITORY}"


def with_required(values: dict[str, Any] | None) -> dict[str, Any]:
    """`values` on top of REQUIRED_VALUES (a deep merge of the two levels used)."""
    merged: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v for k, v in REQUIRED_VALUES.items()}
    for key, value in (values or {}).items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


# Non-default values that switch on every optional part of the chart.
FULL_VALUES: dict[str, Any] = {
    "fullnameOverride": "gossip-op",
    "image": {
        "repository": "registry.example/gossip-operator",
        "tag": "9.9.9",
        "digest": "sha256:" + "ab" * 32,
        "pullPolicy": "Always",
    },
    "imagePullSecrets": [{"name": "regcred"}],
    "operator": {
        "clusterWide": True,
        "healthPort": 18080,
        "verbose": True,
        "settings": {"statusInterval": "5s", "agentsToQuery": 5, "clusterDomain": "example.internal"},
        "extraArgs": ["--resync-interval=30s"],
        "extraEnv": [{"name": "EXTRA", "value": "1"}],
    },
    "serviceAccount": {"create": True, "name": "gossip-sa", "annotations": {"example/role": "x"}},
    "metrics": {
        "port": 19090,
        "service": {"type": "ClusterIP", "annotations": {"prometheus.io/scrape": "true"}},
        "serviceMonitor": {"enabled": True, "interval": "15s", "scrapeTimeout": "5s", "labels": {"release": "kps"}},
        "agentPodMonitor": {"enabled": True, "labels": {"release": "kps"}},
    },
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "annotations": {"grafana_folder": "Gossip"}},
    "networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
        "restrictEgress": True,
        "apiServerCIDRs": ["10.0.0.1/32"],
    },
    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": 1, "memory": "512Mi"}},
    "podAnnotations": {"example/annotation": "yes"},
    "podLabels": {"team": "gossip"},
    "commonLabels": {"env": "test"},
    "priorityClassName": "system-cluster-critical",
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}
                ]
            }
        }
    },
    "securityContext": {"runAsUser": 20000, "runAsGroup": 20000},
}

# An existing ServiceAccount and RBAC managed elsewhere.
EXTERNAL_RBAC_VALUES: dict[str, Any] = {
    "serviceAccount": {"create": False, "name": "existing-sa"},
    "rbac": {"create": False},
    "metrics": {"serviceMonitor": {"enabled": False}, "agentPodMonitor": {"enabled": False}},
}

MONITORING_API = ("monitoring.coreos.com/v1",)
