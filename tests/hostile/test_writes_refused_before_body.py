"""A write the agent refuses whatever its body holds is refused before the body is read (io/state_http.py,
io/http_limits.py `refuse_before_body`).

The guard reads every body (up to 4 MiB) before the handler runs, so a value declared larger than
`state.maxValueBytes`, a bad key or a bad `?w=` was refused only once the whole body had arrived: a client
could make the agent take 4 MiB per request to learn it was too large, and a body that never finished held
the request until the 30 s body timeout (408) instead of getting its 413 or 400. Each request here declares
1 MiB, sends a few bytes and waits: the answer must come without the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import answer_head, raw_exchange, with_state

DECLARED = 1 << 20  # over the default state.maxValueBytes (64 KiB), under the guard's 4 MiB


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with with_state({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0}) as (a, _):
        yield a


async def _head_of_answer(port: int, method: str, path: str, content_type: str = "application/octet-stream",
                          declared: int = DECLARED) -> bytes:
    """Send a request head declaring `declared` body bytes and 16 of them, then wait for the answer's head."""
    return await answer_head(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                                   f"Content-Length: {declared}\r\n\r\n".encode() + b"x" * 16,
                             timeout=20.0)  # generous: the answer needs none of the missing bytes


@pytest.mark.parametrize(("method", "path", "content_type", "status"), [
    ("PUT", "/v1/kv/big", "application/octet-stream", 413),
    ("POST", "/v1/kv/big", "application/json", 413),
    ("PUT", "/v1/kv/big?w=0", "application/octet-stream", 400),
    ("PUT", "/v1/kv/big?priority=urgent", "application/octet-stream", 400),
    ("PUT", "/v1/kv/a/../b", "application/octet-stream", 400),
    ("PUT", "/v1/kv/a%01b", "application/octet-stream", 400),
    ("POST", "/v1/crdt/counters/c", "application/json", 413),
    ("PUT", "/v1/crdt/registers/lww/r", "application/octet-stream", 413),
    ("PUT", "/v1/crdt/registers/mv/r?timeout=-1", "application/octet-stream", 400),
])
async def test_a_write_refused_whatever_its_body_is_answered_before_the_body(
        agent: Agent, method: str, path: str, content_type: str, status: int) -> None:
    head = await _head_of_answer(agent.port, method, path, content_type)
    assert head.startswith(f"HTTP/1.1 {status}".encode()), head[:200]


async def _request(port: int, head: str, body: bytes) -> bytes:
    return await raw_exchange(port, head.format(n=len(body)).encode() + body)


async def test_refusals_before_the_body_are_counted_and_good_writes_still_go(agent: Agent) -> None:
    await _head_of_answer(agent.port, "PUT", "/v1/kv/big")
    # A set's body may be larger than a value (up to 1 MiB): such a write is read and done.
    answer = await _request(agent.port, "POST /v1/crdt/sets/s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            "Content-Type: application/json\r\nContent-Length: {n}\r\n\r\n",
                            b'{"add": ["' + b"e" * 200 + b'"]}')
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    answer = await _request(agent.port, "PUT /v1/kv/ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                            "Content-Length: {n}\r\n\r\n", b"v" * 65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    metrics = await _request(agent.port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"")
    assert b'gossip_http_refused_total{reason="refused_before_body"} 1.0' in metrics, metrics[-3000:]
