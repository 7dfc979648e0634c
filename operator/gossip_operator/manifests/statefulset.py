"""The agents' StatefulSet: stable names (seeds resolve), one data volume per agent, ordered identity.

Choices and why:
- podManagementPolicy Parallel: an agent becomes ready only after joining a peer, so OrderedReady would wait
  forever for pod 0 to be ready before starting pod 1.
- Rolling updates restart one agent at a time; each leaves gracefully on the SIGTERM kubelet sends (SIGTERM
  means "leave" to the agent: announce it, linger up to a second while it spreads, exit), so peers mark it
  `left` rather than suspecting it. Scaling down removes the highest ordinals the same graceful way. No preStop
  hook: an HTTP `POST /v1/leave` from inside the pod needs the API's write token, races the agent's own exit
  (the hook process dies with the container) and adds nothing the signal does not do.
- The pod template carries checksums of the agent config (without seeds) and of the keyring, so a change of
  either rolls the agents; scaling alone does not.
- Resource requests by default (spec.py DEFAULT_REQUESTS): a pod without any is BestEffort, the first one
  evicted under node pressure, and a gossip member that vanishes under load looks like a failure to its peers.
- Restricted Pod Security Standard: non-root, read-only root filesystem (a /tmp emptyDir for scratch), no
  privilege escalation, all capabilities dropped, RuntimeDefault seccomp, no service account token.
"""

from __future__ import annotations

from typing import Any

from gossip_operator.manifests.common import (
    API_TOKENS_DIR,
    CONFIG_FILE,
    CONFIG_HASH_ANNOTATION,
    CONTAINER_NAME,
    DATA_DIR,
    GOSSIP_PORT_NAME,
    HTTP_PORT_NAME,
    KEYRING_DIR,
    KEYRING_HASH_ANNOTATION,
    PODINFO_DIR,
    TLS_DIR,
    ZONE_ANNOTATION,
    ZONE_FILE_KEY,
    Names,
    Owner,
    labels,
    metadata,
    selector_labels,
)
from gossip_operator.manifests.configmap import CONFIG_KEY, config_hash
from gossip_operator.manifests.secret import api_tokens_secret_name
from gossip_operator.spec import ClusterSpec

RUN_AS_USER = 65532  # the conventional "nonroot" user of distroless images
# Fields of a StatefulSet the API server refuses to change; the reconciler leaves them alone on updates.
IMMUTABLE_SPEC_FIELDS = ("selector", "serviceName", "podManagementPolicy", "volumeClaimTemplates")


def _probe(spec: ClusterSpec, path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME, "scheme": "HTTPS" if spec.tls else "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _container(spec: ClusterSpec) -> dict[str, Any]:
    mounts = [
        {"name": "config", "mountPath": CONFIG_FILE, "subPath": CONFIG_KEY, "readOnly": True},
        {"name": "keyring", "mountPath": KEYRING_DIR, "readOnly": True},
        {"name": "api-tokens", "mountPath": API_TOKENS_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "podinfo", "mountPath": PODINFO_DIR, "readOnly": True},
    ]
    if spec.tls:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["gossip-agent"],
        "args": ["--config", CONFIG_FILE],
        "env": [
            {"name": "GOSSIP_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "GOSSIP_ADVERTISE_ADDRESS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "ports": [
            {"name": GOSSIP_PORT_NAME, "containerPort": spec.port, "protocol": "UDP"},
            {"name": HTTP_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"},
        ],
        "readinessProbe": _probe(spec, "/readyz", period=5, failures=3),
        "livenessProbe": _probe(spec, "/healthz", period=10, failures=6),
        "volumeMounts": mounts,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    container["resources"] = {k: dict(v) for k, v in spec.effective_resources().items()}
    return container


def _pod_spec(spec: ClusterSpec) -> dict[str, Any]:
    names = Names.of(spec.name)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.configmap}},
        {"name": "keyring", "secret": {"secretName": spec.gossip_key_secret, "defaultMode": 0o440}},
        {"name": "api-tokens", "secret": {"secretName": api_tokens_secret_name(spec), "defaultMode": 0o440}},
        {"name": "tmp", "emptyDir": {}},
        # The pod's zone (an annotation the operator writes once the pod is scheduled: zones.py), as a file the
        # kubelet rewrites when the annotation changes; a volume, not an environment variable, for that reason.
        {"name": "podinfo", "downwardAPI": {"items": [
            {"path": ZONE_FILE_KEY, "fieldRef": {"fieldPath": f"metadata.annotations['{ZONE_ANNOTATION}']"}},
        ]}},
    ]
    if spec.tls:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls_secret, "defaultMode": 0o440}})
    if spec.storage_ephemeral:
        volumes.append({"name": "data", "emptyDir": {}})
    pod = spec.pod
    out: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": pod.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            # Change the volume's ownership only when its root does not match already: a recursive chown of
            # a large data volume on every start would delay each restart by minutes.
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(spec)],
        "volumes": volumes,
    }
    if pod.service_account_name:
        out["serviceAccountName"] = pod.service_account_name
    if pod.priority_class_name:
        out["priorityClassName"] = pod.priority_class_name
    if pod.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in pod.image_pull_secrets]
    if pod.node_selector:
        out["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        out["tolerations"] = [dict(t) for t in pod.tolerations]
    if pod.affinity:
        out["affinity"] = dict(pod.affinity)
    if pod.topology_spread_constraints:
        out["topologySpreadConstraints"] = [
            {**c, "labelSelector": c.get("labelSelector") or {"matchLabels": selector_labels(spec)}}
            for c in pod.topology_spread_constraints
        ]
    return out


def render(spec: ClusterSpec, owner: Owner, *, cluster_domain: str, keyring_hash: str,
           tls_ca: bool = True) -> dict[str, Any]:
    names = Names.of(spec.name)
    template_labels = {**spec.pod.labels, **labels(spec)}
    template_annotations = {
        **spec.pod.annotations,
        CONFIG_HASH_ANNOTATION: config_hash(spec, cluster_domain, tls_ca=tls_ca),
        KEYRING_HASH_ANNOTATION: keyring_hash,
    }
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(spec, owner, names.statefulset),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": names.headless_service,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "selector": {"matchLabels": selector_labels(spec)},
            "template": {
                "metadata": {"labels": template_labels, "annotations": template_annotations},
                "spec": _pod_spec(spec),
            },
        },
    }
    if not spec.storage_ephemeral:
        claim: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        }
        if spec.storage_class_name:
            claim["storageClassName"] = spec.storage_class_name
        body["spec"]["volumeClaimTemplates"] = [
            {"metadata": {"name": "data", "labels": selector_labels(spec)}, "spec": claim}
        ]
    return body
