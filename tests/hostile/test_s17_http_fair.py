"""Session 17: fairness and memory of the agent's HTTP responses (io/http_limits.py).

Failed before the fixes:
- N2: pipelined small answers to a client that never reads filled the kernel's autotuned send buffer (~3.7 MiB
  per connection on loopback) for a stall window before the reset: 64 such connections held 237 MiB of send
  queue, the 1,024-connection cap ~3.7 GiB. Now every connection's send buffer is clamped as it is accepted
  (`CLIENT_SNDBUF`, which Linux doubles): 64 held 15.7 MiB.

A real in-process agent and raw client sockets that never read; waits are for events, bounded generously (a
failure without the fix is an assertion on bytes or socket options, never on timing).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from gossip_agent.core.config import from_mapping
from gossip_agent.io import http_limits
from gossip_agent.io.http_limits import GuardedRunner, unsent_bytes
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService, state_extensions

BOUND = 30.0  # only stops a broken build hanging
CLAMP = getattr(http_limits, "CLIENT_SNDBUF", 128 * 1024)  # (before the fix there was none)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    cfg = from_mapping({"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "name": "s17",
                        "state": {"maxValueBytes": 1024 * 1024}})
    agent = Agent(cfg, extensions=state_extensions(cfg))
    await agent.start()
    try:
        yield agent
    finally:
        await agent.stop()


def _service(agent: Agent) -> StateService:
    return next(e for e in agent.extensions if isinstance(e, StateService))


def _runner(agent: Agent) -> GuardedRunner:
    runner = agent._runner
    assert isinstance(runner, GuardedRunner) and runner.server is not None
    return runner


def _server_sockets(agent: Agent) -> list[socket.socket]:
    server = _runner(agent).server
    assert server is not None
    return [h.transport.get_extra_info("socket") for h in server.connections if h.transport is not None]


async def _non_reader(port: int, request: bytes) -> socket.socket:
    """A connection with an autotuned receive buffer (which lets the kernel grow the agent's send buffer) that
    sends `request` and never reads."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, request)
    return sock


async def test_every_connection_has_its_send_buffer_clamped_as_it_is_accepted(agent: Agent) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        async with asyncio.timeout(BOUND):
            while not _server_sockets(agent):
                await asyncio.sleep(0.01)
        (sock,) = _server_sockets(agent)
        # Linux doubles the value set; unclamped, it starts at tcp_wmem's default and autotunes up to its max.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * CLAMP
    finally:
        writer.close()


async def test_pipelined_small_answers_to_non_readers_queue_at_most_the_clamp(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 connections pipeline 100 GETs of a 64 KiB value (a small answer) and never read: the kernel's send
    queue toward each stops growing at the clamp (before the fix: ~3.7 MiB each, for a stall window)."""
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 600.0)  # the queues are looked at before any reset
    _service(agent).put("medium", os.urandom(http_limits.SMALL_BODY), None)
    request = b"GET /v1/kv/medium HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    socks = [await _non_reader(agent.port, request) for _ in range(8)]
    try:
        server = _runner(agent).server
        assert server is not None
        queued: list[int] = []
        last: list[int] = []
        steady = 0
        async with asyncio.timeout(BOUND):
            while steady < 25:  # the send queues have stopped growing (0.5 s unchanged)
                await asyncio.sleep(0.02)
                queued = sorted(unsent_bytes(t) - t.get_write_buffer_size()
                                for h in server.connections if (t := h.transport) is not None)
                steady, last = (steady + 1 if queued == last and len(queued) == 8 and all(queued) else 0), queued
        # Each at most what the doubled clamp lets the kernel queue (plus a segment's slack).
        assert max(queued) <= 2 * CLAMP + 64 * 1024, queued
    finally:
        for sock in socks:
            sock.close()
