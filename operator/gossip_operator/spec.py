"""Parse and validate a GossipCluster into one frozen object the renderers and the reconciler share.

The CRD's schema and CEL rules reject most mistakes at admission. This module re-checks what the operator
relies on (an API server may skip validation, e.g. `kubectl apply --validate=false` against an old server or
an emulator) and checks what a schema cannot know: names too long for the children derived from them,
requests above limits. The agent sections are checked by the agent's own parser
(`gossip_agent.core.config.from_mapping`, with the spec's preset), so the operator and the agents accept exactly
the same settings with the same messages, including rules that depend on the preset (probeTimeout set alone
above the preset's probeInterval). Every problem is reported at once, each naming the field and what is
allowed, so a user can fix the spec in one edit. Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from gossip_agent.core import settings_schema
from gossip_agent.core.config import PRESETS, ConfigError, from_mapping

GROUP = "gossip-operator.dev"
VERSION = "v1alpha1"
PLURAL = "gossipclusters"
KIND = "GossipCluster"
API_VERSION = f"{GROUP}/{VERSION}"

DEFAULT_PORT = 7946
DEFAULT_STORAGE_SIZE = "1Gi"
# The StatefulSet controller labels each pod with controller-revision-hash = NAME-<10 chars>, a label value
# (at most 63 characters), and pods are named NAME-<ordinal>; 52 leaves room for both.
MAX_NAME_LENGTH = 52

# Requests an agent gets for cpu/memory unless the spec sets that request or a limit (Kubernetes then takes the
# limit as the request). Without requests a pod is BestEffort: the first evicted under node pressure. An idle
# agent uses ~40 MiB resident and well under 10m CPU (bench/README.md).
DEFAULT_REQUESTS: Mapping[str, str] = {"cpu": "50m", "memory": "64Mi"}

# Labels the operator uses to select a cluster's pods; pod.labels may not override them.
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
RESERVED_POD_LABELS = frozenset({LABEL_NAME, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_COMPONENT})

# Spec changes the running agents cannot survive, by field: refused by the CRD's CEL transition rules (the same
# messages; a test keeps them equal) and, where CEL does not run (Kubernetes < 1.25), by the operator itself
# (transitions.py), which then reports Ready=False InvalidSpec and changes no child.
TRANSITION_MESSAGES: Mapping[str, str] = {
    "port": "port cannot change while agents run (agents on the new port cannot reach those on the old one during "
            "the rolling update): first scale to 0 replicas with the old port, then change port and scale up; or "
            "create a new GossipCluster",
    "security.tlsSecret": "security.tlsSecret cannot be added, removed or renamed while agents run (agents with the "
                          "old and the new TLS setup cannot talk during the rolling update): first scale to 0 "
                          "replicas with the old setting, then change it and scale up; to rotate certificates, "
                          "update the Secret's contents in place",
    "storage.ephemeral": "storage.ephemeral cannot change after creation (the StatefulSet's data volume is fixed "
                         "when it is created): create a new GossipCluster instead",
    "storage.size": "storage.size cannot change after creation (a StatefulSet's volumeClaimTemplates are "
                    "immutable): to grow the volumes, resize each PersistentVolumeClaim data-NAME-N if its "
                    "StorageClass allows expansion, and keep storage.size as it was",
    "storage.storageClassName": "storage.storageClassName cannot change after creation (a StatefulSet's "
                                "volumeClaimTemplates are immutable): create a new GossipCluster instead",
}

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SECRET_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_QUANTITY_RE = re.compile(r"^([+-]?[0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_QUANTITY_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9, "T": Decimal(10) ** 12,
    "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30, "Ti": Decimal(2) ** 40,
    "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}

# The agent's config sections the operator copies into the ConfigMap, with the keys a spec may set there: read
# from the settings' declarations in gossip_agent.core.config, the one source of the agent's parser, this check,
# the CRD's agent sections and the docs. Keys the schema admits but the agent must not see (storage.size ...)
# are the operator's (_OPERATOR_SECTION_KEYS) and dropped by the renderer.
AGENT_SECTIONS: Mapping[str, frozenset[str]] = settings_schema.spec_keys()
_OPERATOR_SECTION_KEYS: Mapping[str, frozenset[str]] = {
    "storage": frozenset({"size", "storageClassName", "ephemeral"}),
    "security": frozenset({"gossipKeySecret", "tlsSecret"}),
}
# The spec's own keys: the operator's, and the agent's (its sections, port, preset) from the settings' declarations.
_TOP_LEVEL = frozenset({
    "replicas", "image", "imagePullPolicy", "paused", "resources", "podDisruptionBudget", "pod",
}) | settings_schema.spec_top_level_keys()
_POD_KEYS = frozenset({
    "labels", "annotations", "nodeSelector", "priorityClassName", "serviceAccountName", "imagePullSecrets",
    "terminationGracePeriodSeconds", "tolerations", "affinity", "topologySpreadConstraints", "networkPolicy",
})


class InvalidSpec(ValueError):
    """The spec cannot be run; `problems` lists each one, naming the field and what is allowed."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True, slots=True)
class PodOverrides:
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    node_selector: Mapping[str, str] = field(default_factory=dict)
    priority_class_name: str | None = None
    service_account_name: str | None = None
    image_pull_secrets: tuple[str, ...] = ()
    termination_grace_period_seconds: int = 30
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    topology_spread_constraints: tuple[Mapping[str, Any], ...] = ()
    network_policy: bool = False
    network_policy_allow_from: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A validated GossipCluster: everything the renderers need, with defaults applied."""

    name: str
    namespace: str
    image: str
    replicas: int = 3
    image_pull_policy: str = "IfNotPresent"
    paused: bool = False
    port: int = DEFAULT_PORT
    preset: str = "lan"
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    pdb_enabled: bool = True
    pdb_max_unavailable: int | str | None = 1
    pdb_min_available: int | str | None = None
    pod: PodOverrides = field(default_factory=PodOverrides)
    # camelCase agent sections, only the keys the agent knows (see AGENT_SECTIONS).
    agent_sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    storage_ephemeral: bool = False
    storage_size: str = DEFAULT_STORAGE_SIZE
    storage_class_name: str | None = None
    gossip_key_secret: str = ""
    gossip_key_secret_is_default: bool = True
    tls_secret: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_secret is not None

    def effective_resources(self) -> dict[str, dict[str, str]]:
        """The container's resources: the spec's, plus DEFAULT_REQUESTS for what it leaves open."""
        requests = dict(self.resources.get("requests", {}))
        limits = self.resources.get("limits", {})
        for resource, amount in DEFAULT_REQUESTS.items():
            if resource not in requests and resource not in limits:
                requests[resource] = amount
        out = {k: dict(v) for k, v in self.resources.items()}
        out["requests"] = requests
        return out


def default_gossip_key_secret(name: str) -> str:
    return f"{name}-gossip-key"


def parse_quantity(value: Any) -> Decimal | None:
    """A Kubernetes quantity ("500m", "1Gi", 2) as a Decimal; None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    match = _QUANTITY_RE.match(value.strip())
    if not match:
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    suffix = match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _QUANTITY_SUFFIX[suffix]


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def mapping(self, value: Any, key: str) -> Mapping[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add(f"{key}: expected a mapping, got {type(value).__name__}")
            return {}
        return value

    def string_map(self, value: Any, key: str) -> dict[str, str]:
        data = self.mapping(value, key)
        bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            self.add(f"{key}: values must be strings (check {', '.join(map(str, bad))})")
            return {}
        return dict(data)

    def unknown(self, data: Mapping[str, Any], known: frozenset[str], where: str) -> None:
        extra = sorted(set(data) - known)
        if extra:
            self.add(f"{where}: unknown field(s) {', '.join(extra)}; known: {', '.join(sorted(known))}")

    def integer(self, value: Any, key: str, low: int, high: int, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.add(f"{key}: expected an integer, got {value!r}")
            return default
        if not low <= value <= high:
            self.add(f"{key}: must be {low}..{high}, got {value}")
            return default
        return value

    def boolean(self, value: Any, key: str, default: bool) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.add(f"{key}: expected true or false, got {value!r}")
            return default
        return value

    def choice(self, value: Any, key: str, choices: Sequence[str], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.add(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
            return default
        return str(value)

    def objects(self, value: Any, key: str) -> tuple[Mapping[str, Any], ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            self.add(f"{key}: expected a list of objects")
            return ()
        return tuple(dict(v) for v in value)


def parse(spec: Mapping[str, Any] | None, *, name: str, namespace: str) -> ClusterSpec:
    """Validate a GossipCluster's spec; raises InvalidSpec listing every problem found."""
    p = _Problems()
    data = p.mapping(spec, "spec")
    p.unknown(data, _TOP_LEVEL, "spec")

    if len(name) > MAX_NAME_LENGTH or not _NAME_RE.match(name):
        p.add(f"metadata.name: {name!r} must start with a lowercase letter, contain only lowercase letters, "
              f"digits and '-', and be at most {MAX_NAME_LENGTH} characters (pod and Service names derive from it)")

    image = data.get("image")
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        p.add(f"image: expected an image reference like registry/gossip-agent:0.1.0, got {image!r}")
        image = ""
    replicas = p.integer(data.get("replicas"), "replicas", 0, 1000, 3)
    pull_policy = p.choice(data.get("imagePullPolicy"), "imagePullPolicy", ("Always", "IfNotPresent", "Never"),
                           "IfNotPresent")
    paused = p.boolean(data.get("paused"), "paused", False)
    port = p.integer(data.get("port"), "port", 1024, 65535, DEFAULT_PORT)
    preset = p.choice(data.get("preset"), "preset", PRESETS, "lan")

    resources = _parse_resources(p, data.get("resources"))
    pdb_enabled, max_unavailable, min_available = _parse_pdb(p, data.get("podDisruptionBudget"), replicas)
    pod = _parse_pod(p, data.get("pod"))
    sections = _parse_agent_sections(p, data, preset)

    storage = p.mapping(data.get("storage"), "storage")
    p.unknown(storage, AGENT_SECTIONS["storage"] | _OPERATOR_SECTION_KEYS["storage"], "storage")
    ephemeral = p.boolean(storage.get("ephemeral"), "storage.ephemeral", False)
    size_value = storage.get("size")
    size = DEFAULT_STORAGE_SIZE
    if size_value is not None:
        if ephemeral:
            p.add("storage.size: cannot be set when storage.ephemeral is true (an emptyDir is used)")
        quantity = parse_quantity(size_value)
        if quantity is None or quantity <= 0:
            p.add(f"storage.size: expected a positive quantity like 1Gi, got {size_value!r}")
        else:
            size = str(size_value)
    storage_class = storage.get("storageClassName")
    if storage_class is not None and (not isinstance(storage_class, str) or not storage_class):
        p.add(f"storage.storageClassName: expected a StorageClass name, got {storage_class!r}")
        storage_class = None
    if storage_class is not None and ephemeral:
        p.add("storage.storageClassName: cannot be set when storage.ephemeral is true")

    security = p.mapping(data.get("security"), "security")
    p.unknown(security, AGENT_SECTIONS["security"] | _OPERATOR_SECTION_KEYS["security"], "security")
    key_secret = security.get("gossipKeySecret")
    key_secret_is_default = key_secret is None
    if key_secret is None:
        key_secret = default_gossip_key_secret(name)
    elif not isinstance(key_secret, str) or not _SECRET_NAME_RE.match(key_secret) or len(key_secret) > 253:
        p.add(f"security.gossipKeySecret: {key_secret!r} is not a valid Secret name")
    tls_secret = security.get("tlsSecret")
    if tls_secret is not None and (not isinstance(tls_secret, str) or not _SECRET_NAME_RE.match(tls_secret)):
        p.add(f"security.tlsSecret: {tls_secret!r} is not a valid Secret name")
        tls_secret = None

    if p.items:
        raise InvalidSpec(p.items)
    return ClusterSpec(
        name=name, namespace=namespace, image=str(image), replicas=replicas, image_pull_policy=pull_policy,
        paused=paused, port=port, preset=preset, resources=resources, pdb_enabled=pdb_enabled,
        pdb_max_unavailable=max_unavailable, pdb_min_available=min_available, pod=pod,
        agent_sections=sections, storage_ephemeral=ephemeral, storage_size=size,
        storage_class_name=storage_class, gossip_key_secret=str(key_secret),
        gossip_key_secret_is_default=key_secret_is_default, tls_secret=tls_secret,
    )


def _parse_resources(p: _Problems, value: Any) -> dict[str, dict[str, str]]:
    resources = p.mapping(value, "resources")
    p.unknown(resources, frozenset({"requests", "limits"}), "resources")
    out: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        items = p.mapping(resources.get(kind), f"resources.{kind}")
        for resource, amount in items.items():
            if parse_quantity(amount) is None:
                p.add(f"resources.{kind}.{resource}: expected a quantity like 100m or 128Mi, got {amount!r}")
        if items:
            out[kind] = {str(k): str(v) for k, v in items.items()}
    for resource, limit in out.get("limits", {}).items():
        request = out.get("requests", {}).get(resource)
        low, high = parse_quantity(request), parse_quantity(limit)
        if low is not None and high is not None and low > high:
            p.add(f"resources.requests.{resource} ({request}) must not exceed resources.limits.{resource} ({limit})")
    return out


def _parse_pdb(p: _Problems, value: Any, replicas: int) -> tuple[bool, int | str | None, int | str | None]:
    pdb = p.mapping(value, "podDisruptionBudget")
    p.unknown(pdb, frozenset({"enabled", "maxUnavailable", "minAvailable"}), "podDisruptionBudget")
    enabled = p.boolean(pdb.get("enabled"), "podDisruptionBudget.enabled", True)
    max_unavailable = pdb.get("maxUnavailable")
    min_available = pdb.get("minAvailable")
    for key, v in (("maxUnavailable", max_unavailable), ("minAvailable", min_available)):
        if v is None:
            continue
        valid = (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (
            isinstance(v, str) and re.fullmatch(r"[0-9]+%?", v) is not None)
        if not valid:
            p.add(f"podDisruptionBudget.{key}: expected a non-negative integer or a percentage like 20%, got {v!r}")
    if max_unavailable is not None and min_available is not None:
        p.add("podDisruptionBudget: set either minAvailable or maxUnavailable, not both")
    if max_unavailable is None and min_available is None:
        max_unavailable = 1
    if isinstance(min_available, int) and min_available > replicas > 0:
        p.add(f"podDisruptionBudget.minAvailable ({min_available}) is above replicas ({replicas}): "
              "no agent could ever be evicted, so node drains would hang")
    return enabled, max_unavailable, min_available


def _parse_pod(p: _Problems, value: Any) -> PodOverrides:
    pod = p.mapping(value, "pod")
    p.unknown(pod, _POD_KEYS, "pod")
    labels = p.string_map(pod.get("labels"), "pod.labels")
    reserved = sorted(set(labels) & RESERVED_POD_LABELS)
    if reserved:
        p.add(f"pod.labels: {', '.join(reserved)} are set by the operator (its pod selector) and cannot be overridden")
    pull_secrets: list[str] = []
    for item in p.objects(pod.get("imagePullSecrets"), "pod.imagePullSecrets"):
        secret = item.get("name")
        if not isinstance(secret, str) or not secret:
            p.add("pod.imagePullSecrets: every entry needs a name")
        else:
            pull_secrets.append(secret)
    affinity = pod.get("affinity")
    if affinity is not None and not isinstance(affinity, Mapping):
        p.add("pod.affinity: expected a core/v1 Affinity object")
        affinity = None
    policy = p.mapping(pod.get("networkPolicy"), "pod.networkPolicy")
    p.unknown(policy, frozenset({"enabled", "allowFrom"}), "pod.networkPolicy")
    optional = {}
    for key in ("priorityClassName", "serviceAccountName"):
        v = pod.get(key)
        if v is not None and (not isinstance(v, str) or not v):
            p.add(f"pod.{key}: expected a name, got {v!r}")
        elif v is not None:
            optional[key] = v
    return PodOverrides(
        labels=labels,
        annotations=p.string_map(pod.get("annotations"), "pod.annotations"),
        node_selector=p.string_map(pod.get("nodeSelector"), "pod.nodeSelector"),
        priority_class_name=optional.get("priorityClassName"),
        service_account_name=optional.get("serviceAccountName"),
        image_pull_secrets=tuple(pull_secrets),
        termination_grace_period_seconds=p.integer(pod.get("terminationGracePeriodSeconds"),
                                                   "pod.terminationGracePeriodSeconds", 1, 3600, 30),
        tolerations=p.objects(pod.get("tolerations"), "pod.tolerations"),
        affinity=dict(affinity) if affinity else None,
        topology_spread_constraints=p.objects(pod.get("topologySpreadConstraints"), "pod.topologySpreadConstraints"),
        network_policy=p.boolean(policy.get("enabled"), "pod.networkPolicy.enabled", False),
        network_policy_allow_from=p.objects(policy.get("allowFrom"), "pod.networkPolicy.allowFrom"),
    )


def _parse_agent_sections(p: _Problems, data: Mapping[str, Any], preset: str) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for section, known in AGENT_SECTIONS.items():
        values = p.mapping(data.get(section), section)
        if section not in _OPERATOR_SECTION_KEYS:  # mixed sections are checked where they are parsed
            p.unknown(values, known, section)
        kept = {k: v for k, v in values.items() if k in known}
        if kept:
            sections[section] = kept

    # The agent's parser, with the spec's preset: the same acceptance and the same messages as the agents'.
    try:
        from_mapping({"preset": preset, **sections})
    except ConfigError as exc:
        for problem in exc.problems:
            p.add(problem)
    return sections
