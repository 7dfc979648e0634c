"""The agent's HTTP server: user API, probes, metrics, and the peer endpoints under /v1/internal/.

Handlers are thin: they call an `AgentAPI` (the runtime, or a fake in tests), which owns the Node. Peer
endpoints take and return sealed binary bodies; a body that fails authentication or decoding answers 400
and is counted as a dropped packet by the runtime. User endpoints speak JSON (see docs/agent-api.md).

Every request passes `guard_middleware` first (io/http_limits.py): access control (io/auth.py), then the
body read within its time and size bounds, so handlers never see an unauthenticated or unbounded body.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from aiohttp import web

from gossip_agent.core.codec import DecodeError
from gossip_agent.core.messages import MemberSnapshot
from gossip_agent.io.auth import ApiAuth
from gossip_agent.io.http_limits import (
    API_AUTH,
    HTTP_STATS,
    Inflater,
    guard_middleware,
    handler_args,
    stream_large_responses,
)
from gossip_agent.io.metrics import CONTENT_TYPE
from gossip_agent.io.peer_client import MAX_PUSH_PULL_BYTES, PING_PATH, PUSH_PULL_PATH
from gossip_agent.io.security import AuthError

# Largest request body accepted (a push-pull of a few thousand members, sealed); extensions that need more
# check their own limits within it.
MAX_REQUEST_BYTES = MAX_PUSH_PULL_BYTES + 1024


class AgentAPI(Protocol):
    def members(self) -> list[MemberSnapshot]: ...
    def status(self) -> Mapping[str, Any]: ...
    def ready(self) -> bool: ...
    def render_metrics(self) -> bytes: ...
    def request_leave(self) -> None: ...
    async def serve_push_pull(self, body: bytes, source_host: str | None = None) -> bytes: ...
    async def serve_ping(self, body: bytes) -> bytes | None: ...


AGENT = web.AppKey("agent", AgentAPI)


def member_json(m: MemberSnapshot) -> dict[str, Any]:
    return {"name": m.name, "address": m.addr[0], "port": m.addr[1], "state": m.state.label,
            "incarnation": m.incarnation, "meta": dict(m.meta)}


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    agent = request.app[AGENT]
    readiness = getattr(agent, "readiness", None)  # the runtime says why (UDP down, loop stalled, ...)
    ok, why = readiness() if readiness is not None else (agent.ready(), "not joined")
    if ok:
        return web.Response(text="ready")
    return web.Response(status=503, text=why)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[AGENT].render_metrics(), headers={"Content-Type": CONTENT_TYPE})


async def members(request: web.Request) -> web.Response:
    rows = sorted(request.app[AGENT].members(), key=lambda m: m.name)
    return web.json_response({"members": [member_json(m) for m in rows]})


async def status(request: web.Request) -> web.Response:
    return web.json_response(dict(request.app[AGENT].status()))


async def leave(request: web.Request) -> web.Response:
    request.app[AGENT].request_leave()
    return web.json_response({"leaving": True})


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_REQUEST_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REQUEST_BYTES, actual_size=request.content_length)
    return await request.read()


async def internal_push_pull(request: web.Request) -> web.Response:
    try:
        answer = await request.app[AGENT].serve_push_pull(await _body(request), request.remote)
    except (AuthError, DecodeError) as exc:
        return web.Response(status=400, text=str(exc))
    return web.Response(body=answer, content_type="application/octet-stream")


async def internal_ping(request: web.Request) -> web.Response:
    try:
        answer = await request.app[AGENT].serve_ping(await _body(request))
    except (AuthError, DecodeError) as exc:
        return web.Response(status=400, text=str(exc))
    if answer is None:
        return web.Response(status=404, text="not the ping's target")
    return web.Response(body=answer, content_type="application/octet-stream")


def make_app(agent: AgentAPI, extra_routes: Iterable[web.AbstractRouteDef] = (), *,
             auth: ApiAuth | None = None) -> web.Application:
    """The agent's app. `auth` None means an open API (tests, local development)."""
    policy = auth or ApiAuth()
    guard = guard_middleware(policy, Inflater(), MAX_REQUEST_BYTES)
    # The streamer is outermost: it writes any large answer, the guard's or a handler's.
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[stream_large_responses(), guard],
                          handler_args=handler_args())
    app[AGENT] = agent
    app[HTTP_STATS] = Counter()
    app[API_AUTH] = policy  # (expect handlers run before the middlewares: they check access themselves)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/members", members)
    app.router.add_get("/v1/status", status)
    app.router.add_post("/v1/leave", leave)
    app.router.add_post(PUSH_PULL_PATH, internal_push_pull)
    app.router.add_post(PING_PATH, internal_ping)
    app.router.add_routes(list(extra_routes))
    return app
