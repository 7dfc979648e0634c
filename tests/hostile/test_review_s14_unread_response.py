"""Hostile review, session 14: clients that ask for a large response and never read it.

Failed before its fix: aiohttp writes a handler's response after the handler returned and waits, with no
timeout, while the client's socket buffers are full. 32 clients that sent GET for a 4 MiB value and never read
held ~34-47 MB of the agent (the unsent rest of each body, in the connections' write buffers) for as long as they
kept their connections. Since session 16 (test_s16_http_stream.py) a large response is written in chunks and a
client that takes less than `http_limits.STALL_MIN_BYTES` in `STALL_WINDOW` seconds is cut off: the connection
is aborted, which drops its unsent bytes, and `gossip_http_refused_total{reason="response_stalled"}` counts it.
(The session 14 fix, a deadline on the whole response and a per-address budget of unfinished large responses,
cut off honest slow readers and refused honest concurrent ones; its budget test went with it.)

A real in-process agent and raw client sockets with a 4 KiB receive buffer that never read; the stall window is
shortened to keep the test fast, and every wait is for an event, bounded generously.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from gossip_agent.io import http_limits
from gossip_agent.io.http_limits import HTTP_STATS
from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import bytes_left, guarded_runner, held_bytes, non_readers, running, state_of

VALUE = os.urandom(4 * 1024 * 1024)
CLIENTS = 4
BOUND = 15.0  # the stall window is 0.5 s here: this only stops a broken build hanging


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with running("unread", sections={"state": {"maxValueBytes": len(VALUE)}}) as agent:
        yield agent


async def test_a_client_that_never_reads_its_response_is_cut_off_and_its_bytes_dropped(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 0.5)
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    runner, stats = guarded_runner(agent), guarded_runner(agent).app[HTTP_STATS]
    socks = await non_readers(agent.port, [(None, b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n")] * CLIENTS)
    try:
        async with asyncio.timeout(BOUND):
            while stats["response_stalled"] < CLIENTS:  # before the fix: never, the writes wait forever
                await asyncio.sleep(0.02)
            while sum(runner.guard.per_client.values()):  # the aborted connections are gone
                await asyncio.sleep(0.02)
        assert held_bytes(runner) == 0
        for sock in socks:  # each client, once it reads, gets what the kernel still held, then the end
            assert await bytes_left(sock, BOUND) < len(VALUE)  # cut short
    finally:
        for sock in socks:
            sock.close()


async def test_a_client_that_reads_gets_the_whole_response(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stall rule changes nothing for a client that takes its response (and a refusal is still answered)."""
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 5.0)
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /v1/kv/absent HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(BOUND):
            data = await reader.read()
    finally:
        writer.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: %d" % len(VALUE) in head
    assert rest[:len(VALUE)] == VALUE
    assert rest[len(VALUE):].startswith(b"HTTP/1.1 404")
    assert agent._runner.app[HTTP_STATS]["response_stalled"] == 0  # type: ignore[union-attr]
