"""Review (session 9): the large-body budget can be held without sending a body.

`BodyBudget` (io/http_limits.py) reserves a body's DECLARED length (Content-Length) before a byte of it is
read, and keeps the reservation until the body arrives or BODY_TIMEOUT (30 s) passes. Peer endpoints read
their body before the seal is checked, so this needs no key even in a keyring cluster: 16 connections from
4 addresses, each sending only the head of a POST declaring 4 MiB, hold the whole 64 MiB budget, and every
other client's body over 64 KiB (anti-entropy pushes, push-pull of a large membership, replicated writes of
large values) gets 503 "too many large request bodies", for as long as the attacker reconnects every 30 s.
The cost to the attacker: 16 header-only connections per 30 s.

Fixed: the total now counts bytes that ARRIVED (charged chunk by chunk as the guard reads the body), while
declared lengths are reserved per client address only (16 MiB, refused before a byte is read); header-only
connections hold nothing of the 64 MiB total.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from gossip_agent.io import http_limits
from gossip_agent.io.peer_client import PUSH_PULL_PATH
from tests.hostile.agent_support import running

DECLARED = 4 * 1024 * 1024


def _head_only(port: int, source: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (PUSH_PULL_PATH.encode(), DECLARED))
    return s


async def test_header_only_requests_do_not_lock_other_clients_out_of_large_bodies() -> None:
    per_address = http_limits.MAX_BODY_BYTES_PER_CLIENT // DECLARED  # 4
    addresses = [f"127.0.0.{i}" for i in range(2, 2 + http_limits.MAX_BODY_BYTES_IN_FLIGHT
                                                // http_limits.MAX_BODY_BYTES_PER_CLIENT)]  # 4
    async with running("hold", state=False) as agent:
        socks = [await asyncio.to_thread(_head_only, agent.port, a) for a in addresses for _ in range(per_address)]
        try:
            await asyncio.sleep(0.3)
            # An honest peer's 100 KiB body, from 127.0.0.1:
            async with aiohttp.ClientSession() as session, session.post(
                    f"http://127.0.0.1:{agent.port}{PUSH_PULL_PATH}", data=b"\1" * 100_000) as r:
                assert r.status != 503, "no body bytes sent, yet the 64 MiB body budget is all held"
        finally:
            for s in socks:
                s.close()


def test_declared_lengths_count_per_client_and_arrived_bytes_in_all() -> None:
    budget = http_limits.BodyBudget(total=10, per_client=6)
    assert budget.reserve("a", 6) and budget.reserve("b", 6) and budget.reserve("c", 6)  # no bytes yet: all in
    assert not budget.reserve("a", 1)  # one address claims at most per_client
    assert budget.charge(6) and budget.charge(4)
    assert not budget.charge(1)  # bytes that arrived: at most total, whoever sent them
    budget.release("a", 6, 6)
    assert budget.charge(1)
    budget.release("b", 6, 5)
    budget.release("c", 6, 0)
    assert budget.used == 0 and not budget.by_client
