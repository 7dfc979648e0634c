"""Reconcile one GossipCluster's children: render the desired state, then create, patch or delete each child.

Idempotent by construction: a child is patched only when it differs from what is wanted (see drift.py), so a
second pass over an unchanged cluster sends no write at all, only GETs. The same pass serves create, update,
resume and the periodic drift check. An invalid spec touches no child, nor does a change the running agents
cannot survive (transitions.py); the status pass reports either.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gossip_operator import manifests
from gossip_operator.discovery import PDB_PREFERENCE
from gossip_operator.kube import Conflict
from gossip_operator.manifests import drift
from gossip_operator.manifests import secret as secret_manifest
from gossip_operator.manifests.common import KEYRING_KEY, LAST_APPLIED_ANNOTATION, Owner
from gossip_operator.manifests.resources import SECRETS, STATEFULSETS
from gossip_operator.runtime import Runtime
from gossip_operator.spec import ClusterSpec, InvalidSpec, parse
from gossip_operator.transitions import unsafe_transitions

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    spec_error: str | None = None
    paused: bool = False
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)

    @property
    def result(self) -> str:
        if self.spec_error:
            return "invalid"
        if self.paused:
            return "paused"
        if self.created:
            return "created"
        return "updated" if self.changed else "unchanged"


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def _other_controller(obj: Mapping[str, Any], uid: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller") and ref.get("uid") != uid:
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def _with_annotation(body: Mapping[str, Any], key: str, value: str) -> dict[str, Any]:
    meta = dict(body.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), key: value}
    return {**body, "metadata": meta}


async def _ensure_keyring(runtime: Runtime, spec: ClusterSpec, owner: Owner,
                          created: list[str], warnings: list[str]) -> str:
    """The keyring Secret's checksum; the Secret is generated (one random 32-byte key) when absent."""
    live = await runtime.kube.get(SECRETS, spec.namespace, spec.gossip_key_secret)
    if live is None:
        body = secret_manifest.render(spec, owner if spec.gossip_key_secret_is_default else None,
                                      [secrets.token_bytes(secret_manifest.KEY_BYTES)])
        try:
            live = await runtime.kube.create(SECRETS, spec.namespace, body)
            runtime.metrics.writes.labels(kind="Secret", verb="create").inc()
            created.append(f"Secret/{spec.gossip_key_secret}")
        except Conflict:
            live = await runtime.kube.get(SECRETS, spec.namespace, spec.gossip_key_secret) or body
    value = (live.get("data") or {}).get(KEYRING_KEY)
    if not value:
        warnings.append(f"Secret {spec.gossip_key_secret} has no key {KEYRING_KEY!r}; agents cannot load a keyring")
    return secret_manifest.keyring_hash(value)


async def _apply(runtime: Runtime, child: manifests.Child, namespace: str, uid: str,
                 created: list[str], updated: list[str], deleted: list[str], warnings: list[str]) -> None:
    kube = runtime.kube
    kind = child.resource.kind
    label = f"{kind}/{child.name}"
    live = await kube.get(child.resource, namespace, child.name)
    if child.body is None:
        if live is not None and _owned_by(live, uid) and await kube.delete(child.resource, namespace, child.name):
            runtime.metrics.writes.labels(kind=kind, verb="delete").inc()
            deleted.append(label)
        return
    wanted = drift.without_paths(child.body, child.immutable) if live is not None else dict(child.body)
    if live is not None:
        other = _other_controller(live, uid)
        if other is not None:
            warnings.append(f"{label} exists and is controlled by {other}; not touching it")
            return
        for path in child.immutable:
            part: Any = child.body
            live_part: Any = live
            for key in path:
                part = part.get(key) if isinstance(part, Mapping) else None
                live_part = live_part.get(key) if isinstance(live_part, Mapping) else None
            if part is not None and not drift.matches(part, live_part):
                warnings.append(f"{label}: {'.'.join(path)} cannot change in place; delete the {kind} with "
                                "--cascade=orphan and the operator recreates it")
        annotations = (live.get("metadata") or {}).get("annotations") or {}
        try:
            last = json.loads(annotations.get(LAST_APPLIED_ANNOTATION) or "null")
        except ValueError:
            last = None
        if last == json.loads(drift.canonical(wanted)) and drift.matches(wanted, live):
            return
        patch = _with_annotation(drift.merge_patch(wanted, last if isinstance(last, Mapping) else None),
                                 LAST_APPLIED_ANNOTATION, drift.canonical(wanted))
        await kube.patch(child.resource, namespace, child.name, patch)
        runtime.metrics.writes.labels(kind=kind, verb="patch").inc()
        updated.append(label)
        return
    annotated = drift.without_paths(child.body, child.immutable)
    body = _with_annotation(child.body, LAST_APPLIED_ANNOTATION, drift.canonical(annotated))
    try:
        await kube.create(child.resource, namespace, body)
    except Conflict:  # created meanwhile (a concurrent pass or a user): converge on the next pass
        warnings.append(f"{label} appeared while being created; will check it again")
        return
    runtime.metrics.writes.labels(kind=kind, verb="create").inc()
    created.append(label)


async def reconcile(runtime: Runtime, body: Mapping[str, Any], *, trigger: str) -> ReconcileResult:
    meta = body.get("metadata") or {}
    name, namespace, uid = str(meta.get("name")), str(meta.get("namespace")), str(meta.get("uid"))
    started = time.monotonic()
    try:
        result = await _reconcile(runtime, body, name=name, namespace=namespace, uid=uid)
    except Exception:
        runtime.metrics.errors.labels(stage="reconcile").inc()
        runtime.metrics.reconciles.labels(trigger=trigger, result="error").inc()
        raise
    finally:
        runtime.metrics.reconcile_seconds.observe(time.monotonic() - started)
    runtime.metrics.reconciles.labels(trigger=trigger, result=result.result).inc()
    if result.changed:
        logger.info("%s/%s (%s): created %s, updated %s, deleted %s", namespace, name, trigger,
                    list(result.created), list(result.updated), list(result.deleted))
    return result


async def _reconcile(runtime: Runtime, body: Mapping[str, Any], *, name: str, namespace: str,
                     uid: str) -> ReconcileResult:
    try:
        spec = parse(body.get("spec"), name=name, namespace=namespace)
    except InvalidSpec as exc:
        return ReconcileResult(spec_error=str(exc))
    if spec.paused:
        return ReconcileResult(paused=True)
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    refused = unsafe_transitions(spec, await runtime.kube.get(STATEFULSETS, namespace, name))
    runtime.set_transition_error(uid, generation, "; ".join(refused) if refused else None)
    if refused:  # CEL refuses these on 1.25+; here (older servers) nothing is changed and the status says why
        return ReconcileResult(spec_error="; ".join(refused))
    owner = Owner(name=name, uid=uid)
    created: list[str] = []
    updated: list[str] = []
    deleted: list[str] = []
    warnings: list[str] = []
    keyring_hash = await _ensure_keyring(runtime, spec, owner, created, warnings)
    settings = runtime.settings
    # Discovery picks policy/v1 or (Kubernetes < 1.21) policy/v1beta1; a disabled PDB is deleted under it too.
    pdb_resource = await runtime.api_versions.pick(runtime.kube, PDB_PREFERENCE)
    if pdb_resource is None and spec.pdb_enabled:
        warnings.append("PodDisruptionBudget skipped: the API server serves neither policy/v1 nor policy/v1beta1 "
                        "poddisruptionbudgets, so a node drain may evict several agents at once")
    tls_ca = True
    if spec.tls_secret:
        tls = await runtime.kube.get(SECRETS, namespace, spec.tls_secret)
        if tls is None:
            warnings.append(f"TLS Secret {spec.tls_secret} not found: agent pods cannot start until it exists")
        else:
            tls_ca = bool((tls.get("data") or {}).get("ca.crt"))
    options = manifests.RenderOptions(
        cluster_domain=settings.cluster_domain,
        keyring_hash=keyring_hash,
        operator_namespace=settings.operator_namespace,
        operator_labels=settings.operator_labels,
        pdb_resource=pdb_resource,
        tls_ca=tls_ca,
    )
    for child in manifests.render_children(spec, owner, options):
        await _apply(runtime, child, namespace, uid, created, updated, deleted, warnings)
    return ReconcileResult(created=tuple(created), updated=tuple(updated), deleted=tuple(deleted),
                           warnings=tuple(warnings))
