"""Review (session 8): a critical write that writes nothing does not spend the critical rate
(io/critical_limit.py). The place was taken before the write was made, so a DELETE of a key that does not
exist (404) or a refused PUT with `?priority=critical` spent the client's share and the agent's, and the
client's next real critical write was made as a normal one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import raw_exchange, with_state


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with with_state({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                           "state": {"criticalWritesPerSecond": 2}}) as (a, _):  # one a second per client
        yield a


async def _answer(port: int, head: str, body: bytes = b"") -> bytes:
    return await raw_exchange(port, f"{head} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)


async def test_a_critical_delete_of_no_key_leaves_the_client_its_critical_write(agent: Agent) -> None:
    missing = await _answer(agent.port, "DELETE /v1/kv/nothing-here?priority=critical")
    assert missing.startswith(b"HTTP/1.1 404"), missing[:100]
    put = await _answer(agent.port, "PUT /v1/kv/k?priority=critical", b"v")
    assert put.startswith(b"HTTP/1.1 200"), put[:100]
    assert b"X-Gossip-Priority: critical" in put, put[:400]
