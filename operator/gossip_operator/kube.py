"""The one module that talks to the Kubernetes API (besides kopf's own machinery, whose calls are declared here).

Requests go over aiohttp with the credentials the `kubernetes` library's config loaders produce (in-cluster
service account, refreshed as the token file rotates; else a kubeconfig), and kopf logs in with the same
credentials (`connection_info`). The operator only creates, GETs, merge-patches and deletes (never PUT,
LIST or label selectors), which keeps it runnable against a small API emulator too.

`API_CALLS` is every (apiGroup, resource, verb) the operator process uses, kopf's own needs included; the Helm
chart's RBAC is built from exactly this set, and a test checks the code's calls against it.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
import kubernetes.client
import kubernetes.config

from gossip_operator.manifests.resources import Resource
from gossip_operator.spec import GROUP, PLURAL

API_CALLS: frozenset[tuple[str, str, str]] = frozenset({
    # kopf: list+watch the custom resources, patch them (finalizer, progress annotations) and their status.
    (GROUP, PLURAL, "list"),
    (GROUP, PLURAL, "watch"),
    # ours: a resync re-reads its cluster before creating children (the watch's view can be stale).
    (GROUP, PLURAL, "get"),
    (GROUP, PLURAL, "patch"),
    (GROUP, f"{PLURAL}/status", "patch"),
    # Not a call: children's ownerReferences set blockOwnerDeletion, and the OwnerReferencesPermissionEnforcement
    # admission plugin (OpenShift) then requires update on the owner's finalizers (creates get 403 without it).
    (GROUP, f"{PLURAL}/finalizers", "update"),
    # kopf: notice CRDs appearing/changing (resource scanning).
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    # kopf, namespaced mode only (GOSSIP_OPERATOR_NAMESPACES set): which of the namespaces exist.
    ("", "namespaces", "list"),
    ("", "namespaces", "watch"),
    # kopf's event poster (our MemberFailed, InvalidSpec, ... and kopf's handler failures).
    ("", "events", "create"),
    # indexes: agent pods (where to reach agents) and StatefulSets (rollout progress), no LIST per pass.
    ("", "pods", "list"),
    ("", "pods", "watch"),
    # zones: each agent pod gets its node's zone as an annotation (zones.py); nodes are indexed, never read
    # one by one.
    ("", "pods", "patch"),
    ("", "nodes", "list"),
    ("", "nodes", "watch"),
    ("apps", "statefulsets", "list"),
    ("apps", "statefulsets", "watch"),
    # children.
    ("apps", "statefulsets", "get"),
    ("apps", "statefulsets", "create"),
    ("apps", "statefulsets", "patch"),
    ("", "services", "get"),
    ("", "services", "create"),
    ("", "services", "patch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "create"),
    ("", "configmaps", "patch"),
    ("", "secrets", "get"),  # the gossip keyring (hash for the pod template) and the TLS CA for agent queries
    ("", "secrets", "create"),  # generated keyring, never patched
    ("policy", "poddisruptionbudgets", "get"),
    ("policy", "poddisruptionbudgets", "create"),
    ("policy", "poddisruptionbudgets", "patch"),
    ("policy", "poddisruptionbudgets", "delete"),  # when disabled in the spec
    ("networking.k8s.io", "networkpolicies", "get"),
    ("networking.k8s.io", "networkpolicies", "create"),
    ("networking.k8s.io", "networkpolicies", "patch"),
    ("networking.k8s.io", "networkpolicies", "delete"),  # when disabled in the spec
})
# Resources in API_CALLS that are cluster-scoped (a ClusterRole is needed for them in any mode).
CLUSTER_SCOPED: frozenset[tuple[str, str]] = frozenset({
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("", "namespaces"),
    ("", "nodes"),
})

MERGE_PATCH = "application/merge-patch+json"


class ApiError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class UndeclaredApiCall(AssertionError):
    """The code made a call that API_CALLS (and so the chart's RBAC) does not allow."""


def _check_declared(resource: Resource, verb: str, subresource: str | None = None) -> None:
    name = f"{resource.plural}/{subresource}" if subresource else resource.plural
    if (resource.group, name, verb) not in API_CALLS:
        raise UndeclaredApiCall(f"({resource.group!r}, {name!r}, {verb!r}) is missing from API_CALLS")


def load_configuration(kubeconfig: str | None = None) -> kubernetes.client.Configuration:
    """In-cluster service account if there is one, else the kubeconfig (argument, $KUBECONFIG, ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except kubernetes.config.ConfigException:
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        kubernetes.config.load_kube_config(config_file=path, client_configuration=configuration)  # type: ignore[no-untyped-call]
    return configuration


class KubeClient:
    """Async create / get / merge-patch / delete of single objects."""

    def __init__(self, configuration: kubernetes.client.Configuration, *, timeout: float = 30.0) -> None:
        self._configuration = configuration
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()

    @property
    def server(self) -> str:
        return str(self._configuration.host).rstrip("/")

    def _token(self) -> tuple[str | None, str | None]:
        header = (self._configuration.get_api_key_with_prefix("BearerToken")
                  or self._configuration.get_api_key_with_prefix("authorization"))
        if not header:
            return None, None
        parts = header.split(" ", 1)
        return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])

    def connection_info(self) -> kopf.ConnectionInfo:
        """The same credentials for kopf's own API client (the `kopf.on.login` handler returns this)."""
        scheme, token = self._token()
        c = self._configuration
        return kopf.ConnectionInfo(
            server=self.server,
            ca_path=c.ssl_ca_cert,
            insecure=not c.verify_ssl,
            username=c.username or None,
            password=c.password or None,
            scheme=scheme,
            token=token,
            certificate_path=c.cert_file,
            private_key_path=c.key_file,
        )

    def _ssl(self) -> ssl.SSLContext | bool:
        c = self._configuration
        if not self.server.startswith("https"):
            return False
        context = ssl.create_default_context(cafile=c.ssl_ca_cert if c.verify_ssl else None)
        if not c.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if c.cert_file and c.key_file:
            context.load_cert_chain(c.cert_file, c.key_file)
        return context

    async def _get_session(self) -> aiohttp.ClientSession:
        async with self._lock:
            if self._session is None or self._session.closed:
                self._session = aiohttp.ClientSession(timeout=self._timeout,
                                                      connector=aiohttp.TCPConnector(ssl=self._ssl()))
            return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, *, body: Any = None,
                       content_type: str = "application/json") -> dict[str, Any]:
        session = await self._get_session()
        headers = {"Accept": "application/json"}
        scheme, token = self._token()
        if token:
            headers["Authorization"] = f"{scheme or 'Bearer'} {token}"
        elif self._configuration.username:
            auth = aiohttp.BasicAuth(self._configuration.username, self._configuration.password or "")
            headers["Authorization"] = auth.encode()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with session.request(method, self.server + path, data=data, headers=headers) as response:
            text = await response.text()
            payload: dict[str, Any] = json.loads(text) if text.strip().startswith("{") else {}
            if response.status >= 400:
                reason = str(payload.get("reason") or response.reason or "")
                message = str(payload.get("message") or text[:200])
                cls = NotFound if response.status == 404 else Conflict if response.status == 409 else ApiError
                raise cls(response.status, reason, message)
            return payload

    async def serves(self, resource: Resource) -> bool:
        """Discovery: does the API server serve this group/version/plural? (GET /apis/GROUP/VERSION, which
        RBAC's system:discovery role lets every authenticated client read; no API_CALLS entry needed.)"""
        try:
            listing = await self._request("GET", resource.path().rsplit("/", 1)[0])
        except NotFound:
            return False
        return any(isinstance(r, Mapping) and r.get("name") == resource.plural
                   for r in listing.get("resources") or [])

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        _check_declared(resource, "get")
        try:
            return await self._request("GET", resource.path(namespace, name))
        except NotFound:
            return None

    async def create(self, resource: Resource, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        _check_declared(resource, "create")
        return await self._request("POST", resource.path(namespace), body=body)

    async def patch(self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any], *,
                    subresource: str | None = None) -> dict[str, Any]:
        _check_declared(resource, "patch", subresource)
        return await self._request("PATCH", resource.path(namespace, name, subresource), body=patch,
                                   content_type=MERGE_PATCH)

    async def delete(self, resource: Resource, namespace: str, name: str) -> bool:
        """Delete (background propagation); False when it was already gone."""
        _check_declared(resource, "delete")
        try:
            await self._request("DELETE", resource.path(namespace, name),
                                body={"apiVersion": "v1", "kind": "DeleteOptions",
                                      "propagationPolicy": "Background"})
        except NotFound:
            return False
        return True
