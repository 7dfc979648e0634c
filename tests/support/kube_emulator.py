"""A Kubernetes API emulator good enough for kopf, the `kubernetes` client and kubectl: kmock's
KubernetesEmulator with the gaps found in /work/shared/TESTBED.md fixed.

What it adds to kmock 0.8:
- metadata stamping: uid, resourceVersion (one global counter), generation (bumped when anything outside
  metadata/status changes), creationTimestamp, namespace; generateName;
- 201 on create, 409 AlreadyExists / Conflict (stale metadata.resourceVersion), 404 NotFound with proper
  reasons, 422 on a failed JSON-patch `test`;
- merge, JSON, strategic-merge (directives dropped, lists replaced) and apply patches; PUT (replace);
- the status subresource separated from the main resource (a main PATCH keeps .status, a /status PATCH
  changes only .status, create drops .status), and the scale subresource (GET/PATCH/PUT `/scale`) for
  CRDs that declare one and for StatefulSets/Deployments/ReplicaSets;
- finalizers and deletionTimestamp, and garbage collection by ownerReferences (background: dependents of a
  deleted object are deleted at once, recursively) unless propagationPolicy is Orphan;
- watches that honour `?resourceVersion=` (replaying later events from a history, 410 Gone when it is too
  old; ADDED for every object without one), `timeoutSeconds`, `fieldSelector` (metadata.name/namespace),
  JSON content type; lists with apiVersion/kind/resourceVersion; simple label selectors (a=b, a!=b, a, !a);
- discovery: core groupVersion "v1", subresources with their kinds (scale is autoscaling/v1 Scale), the
  bundled built-in resources, and CRDs registered when created (names, short names, categories, printer
  columns, subresources) with Established/NamesAccepted conditions;
- server-side printing: `Accept: ...;as=Table` (kubectl get) returns a meta.k8s.io/v1 Table with the CRD's
  printer columns (Name and Age for other kinds), for get, list and watch.
Not emulated: admission/schema/CEL validation, controllers (tests play the StatefulSet controller),
protobuf, dry-run, deletecollection, field managers.

`self.calls` records every API request as (method, path, verb, group, resource[/subresource]) for tests
that count writes or check the RBAC an operator needs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import dataclasses
import datetime
import os
import random
import re
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import dicts as kmock_dicts
from kmock._internal import parsing, rendering

_T = TypeVar("_T")
_DIRECT_TIMEOUT = 30.0
WRITE_VERBS = frozenset({"create", "update", "patch", "delete"})
_SCALABLE_BUILTINS = {("apps", "statefulsets"), ("apps", "deployments"), ("apps", "replicasets")}
_HISTORY = 10_000


_NAMESPACE_OBJECT = re.compile(r"^/?api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?$")
_original_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock reads /api/v1/namespaces[/NAME] as a namespace prefix without a resource; it is the Namespace
    resource itself (cluster-scoped)."""
    match = _NAMESPACE_OBJECT.match(path)
    if match:
        return parsing.ParsedPath("", "v1", "namespaces", None, match.group(1), match.group(2))
    return _original_parse_path(path)


if getattr(parsing.parse_path, "__name__", "") != "_parse_path":
    parsing.parse_path = _parse_path


class ApiFailure(kmock.KubernetesError):
    pass


def _failure(status: int, reason: str, message: str, **details: Any) -> ApiFailure:
    return ApiFailure(status=status, reason=reason, message=message, details=details or {})


@dataclasses.dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    verb: str
    group: str | None
    resource: str | None  # plural, or plural/subresource

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


@dataclasses.dataclass
class _Watcher:
    resource: kmock.resource
    namespace: str | None
    name: str | None
    queue: asyncio.Queue[dict[str, Any]]


@dataclasses.dataclass(eq=False)
class Stall:
    """Requests matching `method` and `path` (exact URL path) wait until `release()`: a test holds the client that
    sent one (e.g. kopf half-way through handling an event) while it does something else. `hits` counts them."""

    method: str
    path: str
    hits: int = 0
    _released: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    _emulator: KubeEmulator | None = None

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and path.rstrip("/") == self.path.rstrip("/")

    def release(self) -> None:
        """Let the held requests (and any later ones) through."""
        def release() -> None:
            self._released.set()
            if self._emulator is not None and self in self._emulator._stalls:
                self._emulator._stalls.remove(self)

        if self._emulator is None:
            release()
        else:
            self._emulator._on_loop(release)

    async def _wait(self) -> None:
        self.hits += 1
        await self._released.wait()


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((datetime.datetime.now(tz=datetime.UTC) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 600:
        return f"{seconds // 60}m{seconds % 60}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 48 * 3600:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _json_path(obj: Any, path: str) -> Any:
    """Evaluate a simple printer-column JSONPath like `.status.members.alive` or `.spec.items[0].name`."""
    node = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.strip().lstrip("{").rstrip("}").lstrip(".")):
        if part.startswith("["):
            index = int(part[1:-1])
            node = node[index] if isinstance(node, list) and index < len(node) else None
        else:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


def _strip_directives(value: Any) -> Any:
    """Drop strategic-merge-patch directives ($patch, $setElementOrder/..., $retainKeys) from a patch."""
    if isinstance(value, Mapping):
        return {k: _strip_directives(v) for k, v in value.items() if not str(k).startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _label_selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.split("=", 1))
            key = key.rstrip("=")
            if labels.get(key) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_selector(params: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for term in filter(None, (params.get("fieldSelector") or "").split(",")):
        key, _, value = term.partition("=")
        out[key.strip().rstrip("=")] = value.strip().lstrip("=")
    return out


@attrs.define(kw_only=True)
class KubeEmulator(kmock.KubernetesEmulator):
    """See the module docstring. Use as `async with KubeEmulator() as k, kmock.Server(k, host=..., port=...)`."""

    calls: list[ApiCall] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _history: collections.deque[tuple[int, kmock.resource, str | None, str, dict[str, Any]]] = attrs.field(
        factory=lambda: collections.deque(maxlen=_HISTORY), init=False)
    _watchers: list[_Watcher] = attrs.field(factory=list, init=False)
    _results: dict[int, tuple[int, Any]] = attrs.field(factory=dict, init=False)
    _printer_columns: dict[kmock.resource, list[dict[str, Any]]] = attrs.field(factory=dict, init=False)
    _scale_paths: dict[kmock.resource, tuple[str, str, str | None]] = attrs.field(factory=dict, init=False)
    _status_subresource: set[kmock.resource] = attrs.field(factory=set, init=False)
    # The loop the emulator serves in (set on entering it): direct calls from other threads run there.
    _loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)
    _stalls: list[Stall] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.resources.load_bundled()
        for res in self.resources:
            if "status" in self.resources[res].subresources and res.plural != "namespaces":
                self._status_subresource.add(res)
            if (res.group, res.plural) in _SCALABLE_BUILTINS:
                self._scale_paths[res] = (".spec.replicas", ".status.replicas", None)
        self.fallback[kmock.method.PUT] << self._serve_result

    async def __aenter__(self) -> KubeEmulator:
        self._loop = asyncio.get_running_loop()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            await super().__aexit__(*exc_info)
        finally:
            self._loop = None

    # ---------------------------------------------------------------- bookkeeping

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, resource: kmock.resource, event_type: str, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        event = {"type": event_type, "object": copy.deepcopy(dict(obj))}
        self._history.append((int(meta.get("resourceVersion") or self._rv), resource, namespace, name, event))
        for watcher in self._watchers:
            if watcher.resource == resource and watcher.namespace in (None, namespace) and watcher.name in (None, name):
                watcher.queue.put_nowait(event)

    def _info(self, resource: kmock.resource) -> Any:
        for known in self.resources:
            if known == resource:
                return self.resources[known]
        return None

    def _kind(self, resource: kmock.resource) -> str:
        info = self._info(resource)
        return (info.kind if info is not None and info.kind else None) or str(resource.plural).capitalize()

    def _api_version(self, resource: kmock.resource) -> str:
        return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)

    def _namespaced(self, resource: kmock.resource) -> bool:
        info = self._info(resource)
        return True if info is None or info.namespaced is None else bool(info.namespaced)

    def _known(self, resource: kmock.resource) -> bool:
        return any(r == resource for r in self._get_resources())

    def _live(self, key: tuple[kmock.resource, str | None, str]) -> dict[str, Any] | None:
        if key in self._objects and not self._objects[key].deleted:
            return copy.deepcopy(self._objects[key].raw)
        return None

    def _store(self, key: tuple[kmock.resource, str | None, str], obj: dict[str, Any]) -> None:
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj

    def _key(self, request: rendering.Request, name: str | None = None) -> tuple[kmock.resource, str | None, str]:
        assert request.resource is not None
        namespace = request.namespace if self._namespaced(request.resource) else None
        return request.resource, namespace, str(name or request.name)

    # ---------------------------------------------------------------- dispatch

    def _record(self, request: rendering.Request) -> None:
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        res = request.resource
        verb = ""
        if res is not None and res.plural is not None:
            if request.action == kmock.action.WATCH:
                verb = "watch"
            elif request.action == kmock.action.LIST:
                verb = "list"
            elif request.action == kmock.action.FETCH:
                verb = "get"
            elif request.action == kmock.action.CREATE:
                verb = "create"
            elif request.action == kmock.action.UPDATE:
                verb = "patch"
            elif request.action == kmock.action.DELETE:
                verb = "delete"
            elif method == "PUT":
                verb = "update"
        plural = None if res is None or res.plural is None else (
            f"{res.plural}/{request.subresource}" if request.subresource else str(res.plural))
        self.calls.append(ApiCall(method, request.url.path, verb, None if res is None else res.group, plural))

    def stall(self, method: str, path: str) -> Stall:
        """Hold requests for `method` `path` until the returned Stall is released (see Stall)."""
        stall = Stall(method.upper(), path, _emulator=self)
        self._on_loop(lambda: self._stalls.append(stall))
        return stall

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        self._record(request)
        res = request.resource
        method = str(getattr(request.method, "value", request.method)).upper()
        for stall in list(self._stalls):
            if stall.matches(method, request.url.path):
                await stall._wait()
        if res is not None and res.plural is not None and res.group is not None:
            mutating = request.action in (kmock.action.CREATE, kmock.action.UPDATE, kmock.action.DELETE) or (
                method == "PUT" and request.name is not None)
            if mutating:
                if not self._known(res):
                    raise _failure(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
                async with self._lock:
                    self._results[id(request)] = self._mutate(request, method)
        # Skip kmock's own mutation logic (KubernetesEmulator._handle): dispatch to reactions and fallbacks.
        return await kmock.RawHandler._handle(self, request)

    def _mutate(self, request: rendering.Request, method: str) -> tuple[int, Any]:
        if request.action == kmock.action.CREATE:
            if request.subresource:
                raise _failure(405, "MethodNotAllowed", f"POST to {request.subresource} is not supported")
            return 201, self._create(request, self._body(request))
        if request.action == kmock.action.DELETE:
            return 200, self._delete(self._key(request), request.data if isinstance(request.data, Mapping) else {})
        if method == "PUT":
            return 200, self._replace(request, self._body(request))
        return 200, self._patch(request)

    def _body(self, request: rendering.Request) -> dict[str, Any]:
        data = request.data
        if data is None and request.text:
            with contextlib.suppress(yaml.YAMLError):
                data = yaml.safe_load(request.text)
        if not isinstance(data, Mapping):
            raise _failure(415, "UnsupportedMediaType", "the body must be a JSON object")
        return copy.deepcopy(dict(data))

    # ---------------------------------------------------------------- writes

    def _create(self, request: rendering.Request, body: dict[str, Any]) -> dict[str, Any]:
        res = request.resource
        assert res is not None
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise _failure(422, "Invalid", "metadata.name or metadata.generateName is required")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        namespaced = self._namespaced(res)
        if namespaced:
            namespace = request.namespace or meta.get("namespace")
            if request.namespace and meta.get("namespace") and meta["namespace"] != request.namespace:
                raise _failure(400, "BadRequest", "the namespace of the object does not match the request")
            if not namespace:
                raise _failure(400, "BadRequest", "a namespace is required for a namespaced resource")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (res, meta.get("namespace"), meta["name"])
        if self._live(key) is not None:
            raise _failure(409, "AlreadyExists", f'{res.plural} "{meta["name"]}" already exists',
                           name=meta["name"], kind=res.plural)
        body.setdefault("apiVersion", self._api_version(res))
        body.setdefault("kind", self._kind(res))
        meta.pop("deletionTimestamp", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1, resourceVersion=self._next_rv())
        if res in self._status_subresource:
            body.pop("status", None)
        if res.group == "apiextensions.k8s.io" and res.plural == "customresourcedefinitions":
            self._register_crd(body)
        self._store(key, body)
        self._emit(res, "ADDED", body)
        return body

    def _finish_update(self, key: tuple[kmock.resource, str | None, str], old: dict[str, Any],
                       new: dict[str, Any]) -> dict[str, Any]:
        """Keep system metadata, bump generation/resourceVersion when something changed, store, notify."""
        res = key[0]
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return new
        strip = ("metadata", "status")
        if {k: v for k, v in new.items() if k not in strip} != {k: v for k, v in old.items() if k not in strip}:
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(key, new)
            return new
        if res.group == "apiextensions.k8s.io" and res.plural == "customresourcedefinitions":
            self._register_crd(new)
        self._store(key, new)
        self._emit(res, "MODIFIED", new)
        return new

    def _check_version(self, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            name = old["metadata"]["name"]
            raise _failure(409, "Conflict", f'Operation cannot be fulfilled on "{name}": the object has been '
                           "modified; please apply your changes to the latest version and try again")

    def _apply_patch(self, target: dict[str, Any], request: rendering.Request) -> dict[str, Any]:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        data = request.data
        if data is None and request.text:
            with contextlib.suppress(yaml.YAMLError):
                data = yaml.safe_load(request.text)
        if content_type == "application/json-patch+json" or isinstance(data, list):
            try:
                return dict(jsonpatch.apply_patch(target, list(data or []), in_place=False))
            except jsonpatch.JsonPatchTestFailed as exc:
                raise _failure(422, "Invalid", f"the JSON patch test failed: {exc}") from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _failure(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from exc
        if not isinstance(data, Mapping):
            raise _failure(400, "BadRequest", "the patch must be a JSON object")
        if content_type == "application/strategic-merge-patch+json":
            data = _strip_directives(data)
        try:
            return dict(kmock_dicts.merge_patch_dict(target, data))
        except ValueError as exc:
            raise _failure(422, "Invalid", str(exc)) from exc

    def _patch(self, request: rendering.Request) -> dict[str, Any]:
        key = self._key(request)
        old = self._live(key)
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        if old is None:
            if content_type == "application/apply-patch+yaml" and not request.subresource:
                return self._create(request, self._body(request))
            raise self._not_found(key)
        if request.subresource == "scale":
            return self._patch_scale(key, old, request)
        patched = self._apply_patch(copy.deepcopy(old), request)
        if content_type != "application/json-patch+json":
            self._check_version(old, patched)
        if request.subresource == "status":
            new = copy.deepcopy(old)
            if "status" in patched:
                new["status"] = patched["status"]
            else:
                new.pop("status", None)
        elif request.subresource:
            raise _failure(405, "MethodNotAllowed", f"PATCH of {request.subresource} is not supported")
        else:
            new = patched
            if key[0] in self._status_subresource:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
        return self._finish_update(key, old, new)

    def _replace(self, request: rendering.Request, body: dict[str, Any]) -> dict[str, Any]:
        key = self._key(request)
        old = self._live(key)
        if old is None:
            raise self._not_found(key)
        if request.subresource == "scale":
            return self._set_scale(key, old, body)
        self._check_version(old, body)
        if request.subresource == "status":
            new = copy.deepcopy(old)
            new["status"] = body.get("status")
        else:
            new = body
            if key[0] in self._status_subresource:
                new["status"] = old.get("status")
            new.setdefault("apiVersion", old.get("apiVersion"))
            new.setdefault("kind", old.get("kind"))
        if new.get("status") is None:
            new.pop("status", None)
        return self._finish_update(key, old, new)

    def _delete(self, key: tuple[kmock.resource, str | None, str], options: Mapping[str, Any]) -> dict[str, Any]:
        old = self._live(key)
        if old is None:
            raise self._not_found(key)
        meta = old["metadata"]
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = _now()
                meta["resourceVersion"] = self._next_rv()
                self._store(key, old)
                self._emit(key[0], "MODIFIED", old)
            return old
        self._remove(key, old, orphan=options.get("propagationPolicy") == "Orphan")
        return old

    def _remove(self, key: tuple[kmock.resource, str | None, str], last: dict[str, Any], *,
                orphan: bool = False) -> None:
        last["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[key].history.append(last)
        self._objects[key].delete()
        self._emit(key[0], "DELETED", last)
        if key[0].group == "apiextensions.k8s.io" and key[0].plural == "customresourcedefinitions":
            self._unregister_crd(last)
        if not orphan:
            self._collect_garbage(str(last["metadata"].get("uid")))

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion: dependents whose every owner is gone are deleted (recursively)."""
        live_uids = {obj.raw["metadata"].get("uid") for obj in self._objects.values() if not obj.deleted}
        for key, obj in list(self._objects.items()):
            if obj.deleted:
                continue
            refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if any(r.get("uid") == owner_uid for r in refs) and not any(r.get("uid") in live_uids for r in refs):
                with contextlib.suppress(ApiFailure):
                    self._delete(key, {})

    def _not_found(self, key: tuple[kmock.resource, str | None, str]) -> ApiFailure:
        res = key[0]
        group = f".{res.group}" if res.group else ""
        return _failure(404, "NotFound", f'{res.plural}{group} "{key[2]}" not found', name=key[2], kind=res.plural)

    # ---------------------------------------------------------------- scale

    def _scale_doc(self, key: tuple[kmock.resource, str | None, str], obj: Mapping[str, Any]) -> dict[str, Any]:
        spec_path, status_path, selector_path = self._scale_paths[key[0]]
        selector = _json_path(obj, selector_path) if selector_path else None
        if selector is None and not selector_path:
            labels = (_json_path(obj, ".spec.selector.matchLabels") or {})
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        meta = obj["metadata"]
        status: dict[str, Any] = {"replicas": _json_path(obj, status_path) or 0}
        if selector:
            status["selector"] = selector
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": _json_path(obj, spec_path) or 0},
            "status": status,
        }

    def _patch_scale(self, key: tuple[kmock.resource, str | None, str], old: dict[str, Any],
                     request: rendering.Request) -> dict[str, Any]:
        if key[0] not in self._scale_paths:
            raise _failure(404, "NotFound", f"{key[0].plural} has no scale subresource")
        scale = self._apply_patch(self._scale_doc(key, old), request)
        return self._set_scale(key, old, scale)

    def _set_scale(self, key: tuple[kmock.resource, str | None, str], old: dict[str, Any],
                   scale: Mapping[str, Any]) -> dict[str, Any]:
        if key[0] not in self._scale_paths:
            raise _failure(404, "NotFound", f"{key[0].plural} has no scale subresource")
        self._check_version(old, scale)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise _failure(422, "Invalid", f"spec.replicas: must be a non-negative integer, got {replicas!r}")
        new = copy.deepcopy(old)
        node = new
        parts = self._scale_paths[key[0]][0].lstrip(".").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = replicas
        return self._scale_doc(key, self._finish_update(key, old, new))

    # ---------------------------------------------------------------- CRDs

    def _register_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if not version.get("served", True):
                continue
            res = kmock.resource(spec.get("group", ""), version["name"], names.get("plural"))
            subresources = version.get("subresources") or {}
            self.resources[res] = kmock.ResourceInfo(
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                kind=names.get("kind"),
                singular=names.get("singular") or str(names.get("kind", "")).lower(),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"},
                shortnames=set(names.get("shortNames") or ()),
                categories=set(names.get("categories") or ()),
                subresources=set(subresources),
            )
            self._printer_columns[res] = list(version.get("additionalPrinterColumns") or [])
            if "status" in subresources:
                self._status_subresource.add(res)
            else:
                self._status_subresource.discard(res)
            scale = subresources.get("scale")
            if scale:
                self._scale_paths[res] = (scale["specReplicasPath"], scale["statusReplicasPath"],
                                          scale.get("labelSelectorPath"))
            else:
                self._scale_paths.pop(res, None)
        if isinstance(crd, dict):
            crd["status"] = {
                "acceptedNames": dict(names),
                "storedVersions": [v["name"] for v in spec.get("versions") or [] if v.get("storage")],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                     "message": "no conflicts found", "lastTransitionTime": _now()},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                     "message": "the initial names have been accepted", "lastTransitionTime": _now()},
                ],
            }

    def _unregister_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd.get("spec") or {}
        for version in spec.get("versions") or []:
            res = kmock.resource(spec.get("group", ""), version["name"], (spec.get("names") or {}).get("plural"))
            for key in [k for k in self._objects if k[0] == res and not self._objects[k].deleted]:
                self._objects[key].delete()
            with contextlib.suppress(KeyError):
                del self.resources[res]

    # ---------------------------------------------------------------- reads

    def _select(self, request: rendering.Request) -> list[dict[str, Any]]:
        res = request.resource
        fields = _field_selector(request.params)
        labels = request.params.get("labelSelector") or ""
        out = []
        for (r, namespace, name), obj in self._objects.items():
            if r != res or obj.deleted:
                continue
            if request.namespace is not None and namespace != request.namespace:
                continue
            if fields.get("metadata.name", name) != name or fields.get("metadata.namespace", namespace) != namespace:
                continue
            raw = obj.raw
            if labels and not _label_selector_matches(labels, (raw.get("metadata") or {}).get("labels") or {}):
                continue
            out.append(copy.deepcopy(raw))
        return sorted(out, key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))

    def _wants_table(self, request: rendering.Request) -> bool:
        return "as=Table" in (request.headers.get("Accept") or "")

    def _table(self, resource: kmock.resource, objects: list[dict[str, Any]], *, rv: str) -> dict[str, Any]:
        custom = self._printer_columns.get(resource)
        columns = [{"name": "Name", "type": "string", "format": "name", "priority": 0,
                    "description": "Name must be unique within a namespace."}]
        for column in custom if custom is not None else [
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]:
            columns.append({"name": column["name"], "type": column.get("type", "string"),
                            "format": column.get("format", ""), "priority": column.get("priority", 0),
                            "description": column.get("description", "")})
        rows = []
        for obj in objects:
            cells: list[Any] = [obj["metadata"]["name"]]
            for column in custom if custom is not None else [
                    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]:
                value = _json_path(obj, column["jsonPath"])
                cells.append(_age(value) if column.get("type") == "date" else value)
            partial = {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": obj["metadata"]}
            rows.append({"cells": cells, "object": partial})
        return {"apiVersion": "meta.k8s.io/v1", "kind": "Table", "metadata": {"resourceVersion": rv},
                "columnDefinitions": columns, "rows": rows}

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        res = request.resource
        assert res is not None
        if not self._known(res):
            raise _failure(404, "NotFound", f"the server could not find the requested resource ({res.plural})")
        async with self._lock:
            items = self._select(request)
            rv = str(self._rv)
        if self._wants_table(request):
            return self._table(res, items, rv=rv)
        return {"apiVersion": self._api_version(res), "kind": f"{self._kind(res)}List",
                "metadata": {"resourceVersion": rv}, "items": items}

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        res = request.resource
        assert res is not None
        key = self._key(request)
        async with self._lock:
            obj = self._live(key)
        if obj is None:
            raise self._not_found(key)
        if request.subresource == "scale":
            if res not in self._scale_paths:
                raise _failure(404, "NotFound", f"{res.plural} has no scale subresource")
            return self._scale_doc(key, obj)
        if self._wants_table(request) and not request.subresource:
            return self._table(res, [obj], rv=obj["metadata"]["resourceVersion"])
        return obj

    async def _serve_watch(self, request: rendering.Request) -> rendering.Payload:
        res = request.resource
        assert res is not None
        fields = _field_selector(request.params)
        name = request.name or fields.get("metadata.name")
        namespace = request.namespace or fields.get("metadata.namespace")
        since = request.params.get("resourceVersion") or ""
        labels = request.params.get("labelSelector") or ""
        timeout = float(request.params.get("timeoutSeconds") or 0) or None
        table = self._wants_table(request)
        watcher = _Watcher(res, namespace, name, asyncio.Queue())
        async with self._lock:
            if since in ("", "0"):
                initial = [{"type": "ADDED", "object": obj} for obj in self._select(request)
                           if name is None or obj["metadata"]["name"] == name]
            else:
                oldest = self._history[0][0] if self._history else self._rv + 1
                if int(since) < oldest - 1 and self._rv > int(since):
                    raise _failure(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
                initial = [event for rv, r, ns, n, event in self._history
                           if rv > int(since) and r == res and namespace in (None, ns) and name in (None, n)]
            self._watchers.append(watcher)

        def render(event: dict[str, Any]) -> dict[str, Any] | None:
            obj = event["object"]
            if labels and not _label_selector_matches(labels, (obj.get("metadata") or {}).get("labels") or {}):
                return None
            if table:
                return {"type": event["type"], "object": self._table(res, [obj],
                                                                     rv=obj["metadata"]["resourceVersion"])}
            return event

        async def stream() -> AsyncIterator[Any]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            try:
                yield b""  # send the headers now
                for event in initial:
                    if (rendered := render(event)) is not None:
                        yield rendered
                while True:
                    remaining = None if deadline is None else deadline - loop.time()
                    if remaining is not None and remaining <= 0:
                        return
                    try:
                        event = await asyncio.wait_for(watcher.queue.get(), remaining)
                    except TimeoutError:
                        return
                    if (rendered := render(event)) is not None:
                        yield rendered
            finally:
                with contextlib.suppress(ValueError):
                    self._watchers.remove(watcher)

        return kmock.Response(headers={"Content-Type": "application/json"}, payload=stream())

    async def _serve_result(self, request: rendering.Request) -> rendering.Payload:
        status, body = self._results.pop(id(request), (200, {}))
        return kmock.Response(status=status, payload=body)

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        return await self._serve_result(request)

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        return await self._serve_result(request)

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        return await self._serve_result(request)

    # ---------------------------------------------------------------- direct access (tests play controllers)

    def _on_loop(self, fn: Callable[[], _T]) -> _T:
        """Run fn in the emulator's event loop and return its result. Direct calls come from tests, and a test
        may run in another thread (`emulated_cluster_in_thread`): there, touching the objects or waking a
        watcher's asyncio.Queue is not thread-safe, and a wake-up would not even interrupt the loop's select()
        (watchers would see the change only when something else woke the loop). From another thread the call
        is marshalled into the loop (and serialised with the HTTP handlers by the emulator's lock)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return fn()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()  # synchronous, so atomic with respect to the handlers on this loop

        async def locked() -> _T:
            async with self._lock:
                return fn()

        return asyncio.run_coroutine_threadsafe(locked(), loop).result(timeout=_DIRECT_TIMEOUT)

    def _direct(self, resource: str, namespace: str | None, name: str | None = None, *, subresource: str | None = None,
                data: Any = None, action: Any = None, method: str = "PATCH",
                content_type: str = "application/merge-patch+json") -> Any:
        res = kmock.resource(resource)
        request = rendering.Request(resource=res, namespace=namespace, name=name, subresource=subresource, data=data,
                                    action=action, method=method, headers={"Content-Type": content_type})
        return self._on_loop(lambda: self._mutate(request, method)[1])

    def create_object(self, resource: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create as a POST would (resource like "v1/pods" or "apps/v1/statefulsets"); watchers see it."""
        namespace = (body.get("metadata") or {}).get("namespace")
        return dict(self._direct(resource, namespace, data=copy.deepcopy(dict(body)), action=kmock.action.CREATE,
                                 method="POST"))

    def patch_object(self, resource: str, namespace: str | None, name: str, patch: Mapping[str, Any], *,
                     subresource: str | None = None) -> dict[str, Any]:
        """Merge-patch as a PATCH would (status via subresource="status")."""
        return dict(self._direct(resource, namespace, name, subresource=subresource, data=copy.deepcopy(dict(patch)),
                                 action=kmock.action.UPDATE))

    def delete_object(self, resource: str, namespace: str | None, name: str) -> None:
        self._direct(resource, namespace, name, action=kmock.action.DELETE, method="DELETE", data={})

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        res = kmock.resource(resource)
        return self._on_loop(lambda: self._live((res, namespace if self._namespaced(res) else None, name)))

    def list_objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        res = kmock.resource(resource)
        return self._on_loop(lambda: self._select(rendering.Request(resource=res, namespace=namespace)))

    # ---------------------------------------------------------------- discovery

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-emulator", "gitCommit": "",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
                "compiler": "gc", "platform": "linux/amd64"}

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        assert request.resource is not None
        group, version = request.resource.group, request.resource.version
        resources = [r for r in self._get_resources()
                     if r.group == group and r.version == version and r.plural is not None]
        if not resources and group != "":
            raise _failure(404, "NotFound", f"the server could not find the requested resource ({group}/{version})")
        entries = []
        for res in sorted(resources, key=lambda r: str(r.plural)):
            info = self._info(res) or kmock.ResourceInfo()
            kind = info.kind or str(res.plural).capitalize()
            entries.append({
                "name": res.plural, "singularName": info.singular or str(res.plural), "kind": kind,
                "namespaced": True if info.namespaced is None else info.namespaced,
                "verbs": sorted(info.verbs or {"get", "list", "watch", "create", "patch", "delete"}),
                "shortNames": sorted(info.shortnames), "categories": sorted(info.categories),
            })
            for sub in sorted(info.subresources):
                entry: dict[str, Any] = {"name": f"{res.plural}/{sub}", "singularName": "", "kind": kind,
                                         "namespaced": True if info.namespaced is None else info.namespaced,
                                         "verbs": ["get", "patch", "update"]}
                if sub == "scale":
                    entry |= {"group": "autoscaling", "version": "v1", "kind": "Scale"}
                entries.append(entry)
        return {"apiVersion": "v1", "kind": "APIResourceList",
                "groupVersion": f"{group}/{version}" if group else str(version), "resources": entries}


# -------------------------------------------------------------------- running it


def write_kubeconfig(path: Path, server: str, *, namespace: str = "default") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "emulator", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator",
                                                      "namespace": namespace}}],
        "current-context": "emulator",
    }
    path.write_text(yaml.safe_dump(config))
    return path


# Set by tests/conftest.py on each xdist worker: "START-END", the upper half of that worker's own port slice
# (the lower half is free_port_block's). A port the kernel picks (bind to 0) comes from the ephemeral range,
# where the other worker's client sockets land too: between our close and the server's bind, one of them
# could take it (CI saw "address already in use").
PORT_RANGE_ENV = "GOSSIP_TEST_FREE_PORTS"


# Where the next free_port() search in this worker's range starts: ports are handed out in turn, so calls in a
# row (e.g. twelve servers' ports picked before any binds) never get the same one; drawn at random they did
# (CI saw "address already in use" when two of twelve draws from one slice collided).
_next_port: dict[tuple[int, int], int] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now: from this worker's own range under xdist (each call the next free one after
    the last handed out), else one the kernel picks."""
    span = os.environ.get(PORT_RANGE_ENV, "")
    if span:
        start, end = (int(x) for x in span.split("-", 1))
        key = (start, end)
        first = _next_port.get(key, random.randrange(start, end))
        for k in range(min(400, end - start)):
            port = start + (first - start + k) % (end - start)
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _next_port[key] = start + (port - start + 1) % (end - start)
            return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class EmulatedCluster:
    """A running emulator: `api` (the KubeEmulator, for assertions), its URL and a kubeconfig file."""

    api: KubeEmulator
    url: str
    kubeconfig: Path

    def writes(self, since: int = 0) -> list[ApiCall]:
        return [c for c in self.api.calls[since:] if c.write]


@contextlib.asynccontextmanager
async def emulated_cluster(kubeconfig: Path, *, host: str = "127.0.0.1",
                           port: int | None = None) -> AsyncIterator[EmulatedCluster]:
    """Run a KubeEmulator on host:port (a free port by default) in this event loop; write a kubeconfig."""
    async with KubeEmulator() as api, kmock.Server(api, host=host, port=port or free_port(host)) as server:
        url = f"http://{host}:{server.port}"
        yield EmulatedCluster(api=api, url=url, kubeconfig=write_kubeconfig(kubeconfig, url))


@contextlib.contextmanager
def emulated_cluster_in_thread(kubeconfig: Path, *, host: str = "127.0.0.1",
                               port: int | None = None) -> Iterator[EmulatedCluster]:
    """The same in a background thread with its own event loop, for synchronous tests (kubectl, helm)."""
    loop = asyncio.new_event_loop()
    ready: asyncio.Future[EmulatedCluster] = loop.create_future()
    stop = asyncio.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            async with emulated_cluster(kubeconfig, host=host, port=port) as cluster:
                ready.set_result(cluster)
                await stop.wait()
        except BaseException as exc:  # surface start-up failures in the caller's thread
            failure.append(exc)
            if not ready.done():
                ready.set_exception(exc)

    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(started.set)
        loop.run_until_complete(main())

    thread = threading.Thread(target=run, name="kube-emulator", daemon=True)
    thread.start()
    started.wait()
    cluster = asyncio.run_coroutine_threadsafe(_wait(ready), loop).result(timeout=30)
    try:
        yield cluster
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()
        if failure and not isinstance(failure[0], asyncio.CancelledError):
            raise failure[0]


async def _wait(future: asyncio.Future[EmulatedCluster]) -> EmulatedCluster:
    return await future


def load_crd(api: KubeEmulator, path: Path) -> dict[str, Any]:
    """Create a CRD from a file directly in an emulator (no HTTP), as if `kubectl apply -f` had."""
    return api.create_object("apiextensions.k8s.io/v1/customresourcedefinitions", yaml.safe_load(path.read_text()))


__all__ = ["ApiCall", "EmulatedCluster", "KubeEmulator", "Stall", "emulated_cluster", "emulated_cluster_in_thread",
           "free_port", "load_crd", "write_kubeconfig"]
