"""Operator settings: one frozen object, read from the environment and overridden by CLI flags.

Environment (all optional):
  GOSSIP_OPERATOR_NAMESPACES        comma list of namespaces to serve; empty = the whole cluster
  GOSSIP_OPERATOR_STATUS_INTERVAL   how often agents are asked for their view (default 10s)
  GOSSIP_OPERATOR_RESYNC_INTERVAL   how often children are checked for drift (default 60s)
  GOSSIP_OPERATOR_AGENT_TIMEOUT     per-request timeout when asking an agent (default 2s)
  GOSSIP_OPERATOR_AGENTS_TO_QUERY   agents asked per status pass (default 3)
  GOSSIP_OPERATOR_CLUSTER_DOMAIN    DNS suffix appended to seed names (default none: the relative
                                    NAME-0.NAME-peers.NS.svc form, completed by the pods' DNS search path)
  GOSSIP_OPERATOR_LIVENESS_PORT     kopf's liveness endpoint /healthz (default 8080; 0 = off)
  GOSSIP_OPERATOR_METRICS_PORT      Prometheus /metrics (default 9090; 0 = off)
  GOSSIP_OPERATOR_RETRY_BACKOFF     delay before retrying a failed reconcile (default 5s)
  GOSSIP_OPERATOR_OPERATOR_LABELS   labels of the operator's own pod, "k=v,k2=v2": agent NetworkPolicies admit
                                    pods with these labels to the agents' API (default
                                    app.kubernetes.io/name=gossip-operator; set it when the chart renames the pod)
  POD_NAMESPACE                     the operator's own namespace (NetworkPolicies admit the operator from it)
  KUBECONFIG                        kubeconfig file when not running in a cluster
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from gossip_agent.core.config import ConfigError, parse_duration

_SECONDS = re.compile(r"^\d+(\.\d+)?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_OPERATOR_LABELS = {"app.kubernetes.io/name": "gossip-operator"}


def parse_seconds(value: str | float, name: str) -> float:
    """Seconds from a number (or its text: environment variables and flags have always taken "10") or a duration
    read by the agent's duration parser ("500ms", "10s", "2m", "1h")."""
    if isinstance(value, int | float):
        seconds = float(value)
    elif _SECONDS.match(value.strip()):
        seconds = float(value.strip())
    else:
        try:
            seconds = parse_duration(value.strip(), name)
        except ConfigError:
            raise ValueError(f"{name}: expected seconds or a duration like 10s or 500ms, got {value!r}") from None
    if seconds <= 0:
        raise ValueError(f"{name}: must be above 0, got {value!r}")
    return seconds


def parse_labels(value: str, name: str) -> dict[str, str]:
    """Labels as "k=v,k2=v2" (spaces around items ignored), checked against Kubernetes' label syntax. At least
    one label: an empty pod selector would admit every pod."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key, sep, label_value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ValueError(f"{name}: expected key=value, got {item!r}")
        prefix, slash, label_name = key.rpartition("/")
        if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
            raise ValueError(f"{name}: invalid label key prefix in {key!r}")
        if not _LABEL_NAME.match(label_name):
            raise ValueError(f"{name}: invalid label key {key!r}")
        if label_value and not _LABEL_NAME.match(label_value):
            raise ValueError(f"{name}: invalid value {label_value!r} for label {key!r}")
        if key in labels:
            raise ValueError(f"{name}: label {key!r} given twice")
        labels[key] = label_value
    if not labels:
        raise ValueError(f"{name}: expected at least one key=value label")
    return labels


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    namespaces: tuple[str, ...] = ()
    status_interval: float = 10.0
    resync_interval: float = 60.0
    agent_timeout: float = 2.0
    agents_to_query: int = 3
    cluster_domain: str = ""
    liveness_host: str = "0.0.0.0"
    liveness_port: int = 8080
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9090
    retry_backoff: float = 5.0
    kubeconfig: str | None = None
    operator_namespace: str | None = None
    operator_labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_OPERATOR_LABELS))

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces

    @property
    def liveness_endpoint(self) -> str | None:
        return f"http://{self.liveness_host}:{self.liveness_port}/healthz" if self.liveness_port else None

    @staticmethod
    def from_env(env: Mapping[str, str]) -> OperatorSettings:
        def get(name: str) -> str | None:
            value = env.get(f"GOSSIP_OPERATOR_{name}")
            return value if value not in (None, "") else None

        kwargs: dict[str, object] = {}
        if (namespaces := get("NAMESPACES")) is not None:
            kwargs["namespaces"] = tuple(n.strip() for n in namespaces.split(",") if n.strip())
        for key, attr in (("STATUS_INTERVAL", "status_interval"), ("RESYNC_INTERVAL", "resync_interval"),
                          ("AGENT_TIMEOUT", "agent_timeout"), ("RETRY_BACKOFF", "retry_backoff")):
            if (value := get(key)) is not None:
                kwargs[attr] = parse_seconds(value, f"GOSSIP_OPERATOR_{key}")
        for key, attr in (("AGENTS_TO_QUERY", "agents_to_query"), ("LIVENESS_PORT", "liveness_port"),
                          ("METRICS_PORT", "metrics_port")):
            if (value := get(key)) is not None:
                if not value.isdigit():
                    raise ValueError(f"GOSSIP_OPERATOR_{key}: expected a non-negative integer, got {value!r}")
                kwargs[attr] = int(value)
        if (domain := get("CLUSTER_DOMAIN")) is not None:
            kwargs["cluster_domain"] = domain
        if (labels := get("OPERATOR_LABELS")) is not None:
            kwargs["operator_labels"] = parse_labels(labels, "GOSSIP_OPERATOR_OPERATOR_LABELS")
        if env.get("POD_NAMESPACE"):
            kwargs["operator_namespace"] = env["POD_NAMESPACE"]
        if env.get("KUBECONFIG"):
            kwargs["kubeconfig"] = env["KUBECONFIG"]
        return OperatorSettings(**kwargs)  # type: ignore[arg-type]
