"""The one module that talks to agents: GET /v1/status and /v1/members of a few of a cluster's pods.

A status pass asks `limit` agents at once (ready pods first, by name), and one more for each that fails, so a
killed agent costs one failed query, not a blind spot. Agents are reached at the pod IP and the port from the
pod's `gossip-operator.dev/agent-port` annotation, else the pod's `http` container port, else the spec's
port. With TLS the CA comes from the cluster's TLS Secret (`ca.crt`); the pod IP is not expected in the
certificate, so the chain is verified but not the host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from typing import Any

import aiohttp

from gossip_operator.status import AgentReport, MemberView, PodObservation

MAX_MEMBERS = 10_000


class AgentsClient:
    def __init__(self, *, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def query(self, pods: Sequence[PodObservation], *, default_port: int, limit: int,
                    tls_ca: str | None = None, tls: bool = False,
                    token: str | None = None) -> tuple[AgentReport, ...]:
        candidates = sorted((p for p in pods if p.ip and not p.terminating), key=lambda p: (not p.ready, p.name))
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cadata=tls_ca) if tls_ca else ssl.create_default_context()
            context.check_hostname = False
        reports: list[AgentReport] = []
        queue = list(candidates)
        batch, queue = queue[:limit], queue[limit:]
        while batch:
            results = await asyncio.gather(*(self._query_one(p, default_port, context, token) for p in batch))
            reports.extend(results)
            failures = sum(1 for r in results if not r.ok)
            batch, queue = queue[:failures], queue[failures:]
        return tuple(reports)

    async def _query_one(self, pod: PodObservation, default_port: int,
                         context: ssl.SSLContext | None, token: str | None = None) -> AgentReport:
        scheme = "https" if context is not None else "http"
        base = f"{scheme}://{pod.ip}:{pod.port or default_port}"
        session = self._get_session()
        try:
            status = await self._get_json(session, f"{base}/v1/status", context, token)
            members_doc = await self._get_json(session, f"{base}/v1/members", context, token)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return AgentReport(pod=pod.name, error=f"{type(exc).__name__}: {exc}"[:200])
        return AgentReport(pod=pod.name, status=status, members=_members(members_doc))

    @staticmethod
    async def _get_json(session: aiohttp.ClientSession, url: str, context: ssl.SSLContext | None,
                        token: str | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        async with session.get(url, ssl=context if context is not None else False, headers=headers) as response:
            if response.status != 200:
                raise ValueError(f"{url} answered {response.status}")
            doc = await response.json(content_type=None)
            if not isinstance(doc, dict):
                raise ValueError(f"{url} answered {type(doc).__name__}, expected an object")
            return doc


def _members(doc: dict[str, Any]) -> tuple[MemberView, ...] | None:
    items = doc.get("members")
    if not isinstance(items, list):
        return None
    out = []
    for item in items[:MAX_MEMBERS]:
        if isinstance(item, dict) and isinstance(item.get("name"), str) and isinstance(item.get("state"), str):
            incarnation = item.get("incarnation")
            out.append(MemberView(item["name"], item["state"],
                                  incarnation if isinstance(incarnation, int) else 0))
    return tuple(out)
