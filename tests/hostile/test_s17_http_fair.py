"""Session 17: fairness and memory of the agent's HTTP responses (io/http_limits.py).

Failed before the fixes:
- N2: pipelined small answers to a client that never reads filled the kernel's autotuned send buffer (~3.7 MiB
  per connection on loopback) for a stall window before the reset: 64 such connections held 237 MiB of send
  queue, the 1,024-connection cap ~3.7 GiB. Now every connection's send buffer is clamped as it is accepted
  (`CLIENT_SNDBUF`, which Linux doubles): 64 held 15.7 MiB.
- N1: the cap on large responses being written (`ResponseBudget`) was not fair: 64 connections of one address
  taking 2.5 KiB/s each held all 256 MiB, and every other client's large answer waited 10 s for a 503. Now a
  response that has waited `RESPONSE_PREEMPT_AFTER` resets the slowest holder taking less than `PREEMPT_RATE`
  (`response_preempted`): the other client got its 4 MiB after 2.0 s.

A real in-process agent and raw client sockets that never read; waits are for events, bounded generously (a
failure without the fix is an assertion on bytes or socket options, never on timing).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator

import pytest

from gossip_agent.io import http_limits
from gossip_agent.io.http_limits import HTTP_STATS, HeldResponse, ResponseBudget, unsent_bytes
from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import answer, guarded_runner, non_reader, running, state_of

BOUND = 30.0  # only stops a broken build hanging
VALUE = os.urandom(4 * 1024 * 1024)
CLAMP = getattr(http_limits, "CLIENT_SNDBUF", 128 * 1024)  # (before the fix there was none)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with running("s17", sections={"state": {"maxValueBytes": len(VALUE)}}) as agent:
        yield agent


def _server_sockets(agent: Agent) -> list[socket.socket]:
    server = guarded_runner(agent).server
    assert server is not None
    return [h.transport.get_extra_info("socket") for h in server.connections if h.transport is not None]


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
    state_of(agent).put("medium", os.urandom(http_limits.SMALL_BODY), None)
    request = b"GET /v1/kv/medium HTTP/1.1\r\nHost: x\r\n\r\n" * 100
    socks = [await non_reader(agent.port, request, rcvbuf=None) for _ in range(8)]
    try:
        server = guarded_runner(agent).server
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


async def test_a_waiting_large_answer_resets_a_holder_that_takes_too_slowly(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that takes nothing of its 4 MiB answer (above the stall rule here: its window is long) holds the
    whole cap; another client's large GET used to wait for the 503 (before the fix, after RESPONSE_BUDGET_WAIT).
    Now, after RESPONSE_PREEMPT_AFTER, the slow holder is reset and the other client gets its whole answer."""
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 600.0)
    monkeypatch.setattr(http_limits, "MAX_LARGE_RESPONSE_BYTES", len(VALUE) + len(VALUE) // 2)
    monkeypatch.setattr(http_limits, "RESPONSE_BUDGET_WAIT", BOUND / 2)
    monkeypatch.setattr(http_limits, "RESPONSE_PREEMPT_AFTER", 0.2, raising=False)
    state_of(agent).put("big", VALUE, None)
    state_of(agent).put("big2", VALUE[::-1], None)
    stats = guarded_runner(agent).app[HTTP_STATS]
    stuck = await non_reader(agent.port, b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n", rcvbuf=4096)
    try:
        server = guarded_runner(agent).server
        assert server is not None
        async with asyncio.timeout(BOUND):
            while not any(h.transport is not None and unsent_bytes(h.transport) for h in server.connections):
                await asyncio.sleep(0.02)
            head, body = await answer(agent.port, b"GET /v1/kv/big2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head  # before the fix: 503 after the wait
        assert body == VALUE[::-1]
        assert stats["response_preempted"] == 1 and stats["response_budget"] == 0  # the stuck client was reset
    finally:
        stuck.close()


async def test_the_budget_resets_only_the_slowest_holder_below_the_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit: of the holders old enough, the one taking slowest below PREEMPT_RATE is reset (its room given back
    once: not again when its writer gives it back); a holder at an honest reader's speed is never reset (the
    waiter then gets no room)."""
    monkeypatch.setattr(http_limits, "RESPONSE_PREEMPT_AFTER", 0.05, raising=False)
    budget = ResponseBudget(total=300)
    now = asyncio.get_running_loop().time()
    cut: list[str] = []
    holders = {}
    for name, taken in (("fast", 10**9), ("slow", 1), ("slowest", 0)):
        held = HeldResponse(100, now)
        assert await budget.take(100, 0, held)
        held.taken = lambda t=taken: t  # type: ignore[misc]
        held.cut = lambda n=name: cut.append(n)
        holders[name] = held
    assert budget.used == 300
    async with asyncio.timeout(BOUND):
        assert await budget.take(100, BOUND, HeldResponse(100, now))
    assert cut == ["slowest"] and holders["slowest"].preempted and budget.used == 300
    budget.give_back(100, holders["slowest"])  # (its writer, on its way out)
    assert budget.used == 300
    async with asyncio.timeout(BOUND):
        assert await budget.take(100, BOUND, HeldResponse(100, now))
    assert cut == ["slowest", "slow"] and budget.used == 300
    # Only the fast holder and the newcomers (which hold no cut yet) are left: no room.
    async with asyncio.timeout(BOUND):
        assert not await budget.take(100, 0.5, HeldResponse(100, now))
    assert cut == ["slowest", "slow"] and budget.preempted == 2


async def test_no_holder_is_reset_unless_the_resets_make_the_waiter_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit (review): a fast holder keeps most of the cap, so resetting every slow holder would still leave no
    room for the waiter: none is reset, and the waiter gets its refusal (before: all three slow holders were
    reset, then the 503 anyway). A waiter that two resets make fit resets the two slowest, not the third."""
    monkeypatch.setattr(http_limits, "RESPONSE_PREEMPT_AFTER", 0.05, raising=False)
    budget = ResponseBudget(total=100)
    now = asyncio.get_running_loop().time()
    cut: list[str] = []
    for name, size, taken in (("fast", 70, 10**9), ("slow1", 10, 2), ("slow2", 10, 1), ("slow3", 10, 0)):
        held = HeldResponse(size, now)
        assert await budget.take(size, 0, held)
        held.taken = lambda t=taken: t  # type: ignore[misc]
        held.cut = lambda n=name: cut.append(n)
    async with asyncio.timeout(BOUND):
        assert not await budget.take(40, 0.5, HeldResponse(40, now))
    assert cut == [] and budget.preempted == 0 and budget.used == 100
    async with asyncio.timeout(BOUND):
        assert await budget.take(20, BOUND, HeldResponse(20, now))
    assert cut == ["slow3", "slow2"] and budget.preempted == 2 and budget.used == 100


async def test_a_kept_alive_connection_gets_its_clamp_back_after_a_large_answer(agent: Agent) -> None:
    """Review: a large answer raised the connection's send buffer to LARGE_RESPONSE_SNDBUF and left it there, so
    pipelined small answers on that kept-alive connection could queue twice the clamp. Once the large answer is
    all taken, the clamp is back."""
    state_of(agent).put("big", VALUE[: 2 * 1024 * 1024], None)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            (sock,) = _server_sockets(agent)
            while sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) > 2 * CLAMP:
                await asyncio.sleep(0.02)  # (the writer notices the body taken on its next look)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) <= 2 * CLAMP
    finally:
        writer.close()
