"""Hostile-input review: watch slots from many source addresses (not fixed; xfail documents it).

The per-client caps (8 membership watches, 16 key watches per address) stop one address, but a client with 8
addresses (any pod network peer with a few pods, or 127.0.0.2-9 on loopback) takes all 64 membership-watch
slots; with a token configured it needs only the read scope. Legitimate watchers (the operator, gossipctl
monitor) then get 503 for as long as the attacker holds the connections. A real fix needs a policy (slots
reserved per token, or eviction of the oldest watcher of the busiest client), not a constant.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from gossip_agent.io import events_http
from tests.hostile.agent_support import running


def _watch(port: int, source: str) -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {events_http.PATH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.settimeout(5)
    return s, int(s.recv(64).split()[1])


@pytest.mark.xfail(strict=True, reason="watch slots are capped per address only: 8 addresses take all 64")
async def test_many_source_addresses_cannot_take_every_membership_watch_slot() -> None:
    async with running("w", state=False) as agent:
        held = []
        try:
            for a in range(2, 2 + events_http.MAX_WATCHERS // events_http.MAX_PER_CLIENT):
                for _ in range(events_http.MAX_PER_CLIENT):
                    held.append(await asyncio.to_thread(_watch, agent.port, f"127.0.0.{a}"))
            assert all(status == 200 for _, status in held)
            _, status = await asyncio.to_thread(_watch, agent.port, "127.0.0.1")
            assert status == 200, "a legitimate watcher was refused: every slot is held by one attacker"
        finally:
            for s, _ in held:
                s.close()
