"""Hostile-input review of the HTTP guard (issue 10): breaks found by attacking a real agent on loopback.

Failed before its fix: peer endpoints read their body before the seal can be checked, so an unauthenticated
client that opened 100 connections, each sending 4 MiB minus one byte of a push-pull body and then waiting,
pinned 420 MB of the agent's RSS (not returned after the connections closed; 8 source addresses could pin
4 GiB). Large bodies are now read within a byte budget (16 MiB per client, 64 MiB in all): the rest get a 503
before a byte is read. A client hanging up mid-body logged a traceback per connection; now it is counted.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from gossip_agent.io import http_limits
from gossip_agent.io.peer_client import PUSH_PULL_PATH
from tests.hostile.agent_support import running

BODY = 4 * 1024 * 1024


def _almost_whole_body(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (PUSH_PULL_PATH.encode(), BODY))
    s.sendall(b"\0" * (BODY - 1))
    return s


def _status(s: socket.socket) -> int | None:
    s.setblocking(False)
    try:
        head = s.recv(64)
    except BlockingIOError:
        return None
    return int(head.split()[1]) if head else None


async def test_unauthenticated_large_bodies_are_held_only_within_a_byte_budget() -> None:
    async with running("budget", state=False) as agent:
        per_client = getattr(http_limits, "MAX_BODY_BYTES_PER_CLIENT", 16 << 20) // BODY  # 4
        socks = [await asyncio.to_thread(_almost_whole_body, agent.port) for _ in range(per_client + 6)]
        try:
            await asyncio.sleep(0.5)
            statuses = [_status(s) for s in socks]
            assert statuses[:per_client] == [None] * per_client  # within the budget: read, still waiting
            assert statuses[per_client:] == [503] * 6, statuses  # before the fix: all held (4 MiB each)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://127.0.0.1:{agent.port}/healthz") as r:
                    assert r.status == 200
                async with session.post(f"http://127.0.0.1:{agent.port}{PUSH_PULL_PATH}", data=b"\1" * 1000) as r:
                    assert r.status == 400  # a small body is never refused for budget: decoded (and refused)
        finally:
            for s in socks:
                s.close()
