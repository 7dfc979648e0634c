"""The one module that talks to agents: GET /v1/status and /v1/members of a few of a cluster's pods.

A status pass asks `limit` agents at once (ready pods first, by name) and, for each that fails, one more (at
most `limit` more), all in parallel and within a time budget: a killed agent costs one failed query, not a
blind spot, and a cluster whose agents are all unreachable costs at most 2 x limit queries and `budget`
seconds, however large its StatefulSet (the pass used to walk every pod, `agent_timeout` per batch).
Agents are reached at the pod IP and the port from the pod's `gossip-operator.dev/agent-port` annotation,
else the pod's `http` container port, else the spec's port.

TLS: the trust anchors are the PEM certificates the caller passes (the TLS Secret's `ca.crt`, or without one
its `tls.crt`: the certificate every agent serves, pinned). Partial chains are accepted, so an anchor need not
be a self-signed root. The pod IP is not expected in the certificate, so the chain is verified but not the
host name.
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
        self._query_timeout = timeout  # one agent's two requests together
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
                    tls_ca: str | None = None, tls: bool = False, budget: float | None = None,
                    ) -> tuple[AgentReport, ...]:
        """Reports of up to `limit` agents (see the module docstring); queries still running when `budget`
        seconds (default: two query timeouts) are over count as failed."""
        candidates = sorted((p for p in pods if p.ip and not p.terminating), key=lambda p: (not p.ready, p.name))
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context(cadata=tls_ca) if tls_ca else ssl.create_default_context()
            context.check_hostname = False
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (budget if budget is not None else 2 * self._query_timeout)
        queue = list(candidates)
        spare = limit  # replacements for failed queries
        running: dict[asyncio.Task[AgentReport], PodObservation] = {}

        def start(pod: PodObservation) -> None:
            running[asyncio.ensure_future(self._query_one(pod, default_port, context))] = pod

        for pod in queue[:limit]:
            start(pod)
        queue = queue[limit:]
        reports: list[AgentReport] = []
        try:
            while running:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                done, _ = await asyncio.wait(running, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    report = task.result()
                    reports.append(report)
                    if not report.ok and queue and spare > 0:
                        spare -= 1
                        start(queue.pop(0))
        finally:
            for task, pod in running.items():
                task.cancel()
                reports.append(AgentReport(pod=pod.name, error="no answer within the status pass's time budget"))
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return tuple(reports)

    async def _query_one(self, pod: PodObservation, default_port: int,
                         context: ssl.SSLContext | None) -> AgentReport:
        scheme = "https" if context is not None else "http"
        base = f"{scheme}://{pod.ip}:{pod.port or default_port}"
        session = self._get_session()
        try:
            async with asyncio.timeout(self._query_timeout):
                status = await self._get_json(session, f"{base}/v1/status", context)
                members_doc = await self._get_json(session, f"{base}/v1/members", context)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return AgentReport(pod=pod.name, error=f"{type(exc).__name__}: {exc}"[:200])
        return AgentReport(pod=pod.name, status=status, members=_members(members_doc))

    @staticmethod
    async def _get_json(session: aiohttp.ClientSession, url: str, context: ssl.SSLContext | None) -> dict[str, Any]:
        async with session.get(url, ssl=context if context is not None else False) as response:
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
