"""Checks of the restricted Pod Security Standard (plus a read-only root filesystem).

Shared by the chart tests (the operator's own pod) and the install test (the agent pods the
operator writes into its StatefulSets). Returns human-readable violations; empty means compliant.
https://kubernetes.io/docs/concepts/security/pod-security-standards/ ("Restricted", v1.25+).
"""

from __future__ import annotations

from typing import Any

# Volume types the restricted profile allows.
ALLOWED_VOLUMES = frozenset(
    {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}
)
POD_TEMPLATE_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


def pod_specs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec(s) inside one manifest (Pod, workload templates, CronJob)."""
    kind = manifest.get("kind")
    spec = manifest.get("spec") or {}
    if kind == "Pod":
        return [spec]
    if kind in POD_TEMPLATE_KINDS:
        return [spec["template"]["spec"]]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"pod sets {field}")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {vol.get('name')} uses {sorted(kinds - ALLOWED_VOLUMES)}")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser is 0")
    for sysctl in psc.get("sysctls") or []:  # stricter than the standard, which allows a safe few
        out.append(f"pod sets sysctl {sysctl.get('name')}")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"pod seccompProfile is {pod_seccomp}")
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    if not containers:
        out.append("pod has no containers")
    for c in containers:
        name = c.get("name")
        csc = c.get("securityContext") or {}
        if csc.get("privileged"):
            out.append(f"container {name} is privileged")
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"container {name}: allowPrivilegeEscalation must be false")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"container {name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"container {name} adds capabilities {caps.get('add')}")
        non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"container {name}: runAsNonRoot must be true (pod or container)")
        if csc.get("runAsUser") == 0:
            out.append(f"container {name} runAsUser is 0")
        seccomp = (csc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"container {name}: seccompProfile must be RuntimeDefault or Localhost (pod or container)")
        if csc.get("readOnlyRootFilesystem") is not True:
            out.append(f"container {name}: readOnlyRootFilesystem must be true")
        if (csc.get("procMount") or "Default") != "Default":
            out.append(f"container {name} sets procMount")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"container {name} uses hostPort {port['hostPort']}")
        if (csc.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"container {name} has an unconfined AppArmor profile")
    return out
