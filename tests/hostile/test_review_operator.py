"""Hostile-input review: the operator's agent queries (an agent pod is trusted no more than its network position).

Failed before the fix: a `/v1/status` answer nested 100,000 levels deep raised RecursionError out of the
operator's status pass (not a failed query), and a huge answer was read whole into memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gossip_operator import agents
from gossip_operator.agents import AgentsClient
from tests.hostile.agent_support import serving


@pytest.fixture
async def hostile_agent() -> AsyncIterator[str]:
    async def nested(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000, content_type="application/json")

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"members": [' + b'"x",' * 100)
        chunk = b'"x",' * 16384
        try:
            for _ in range(1024):  # up to 64 MiB: the client must stop reading first
                await response.write(chunk)
        except (ConnectionResetError, RuntimeError):
            pass
        return response

    app = web.Application()
    app.router.add_get("/v1/status", nested)
    app.router.add_get("/v1/members", huge)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}"


async def test_deep_or_huge_agent_answers_are_a_failed_query(hostile_agent: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agents, "MAX_ANSWER_BYTES", 1 << 20, raising=False)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="nested too deeply"):
            await AgentsClient._get_json(session, f"{hostile_agent}/v1/status", None)
        with pytest.raises(ValueError, match="more than"):
            await AgentsClient._get_json(session, f"{hostile_agent}/v1/members", None)
