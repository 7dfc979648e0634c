"""Hostile review of session 16's stall rule (io/http_limits.py `stream_large_responses`).

Failed before the fixes:
- F1: responses of at most `SMALL_BODY` bytes, raised HTTPExceptions and HEAD answers were left to aiohttp,
  which waits untimed while the client's buffers are full: 128 connections that pipelined 100 GETs of a 64 KiB
  value and never read held 342 MiB of kernel send queue for as long as they liked. Now every response the
  handler did not prepare itself is written under the stall rule (`_write_small`), and a stuck client is reset.
- F3: trickling clients (above the stall floor) held every rendered large body, and up to ~2.6 MiB of autotuned
  kernel send buffer each, for up to an hour: 128 of them grew RSS by 700 MiB. Now large bodies being written
  are capped in all (`MAX_LARGE_RESPONSE_BYTES`: past it a response waits `RESPONSE_BUDGET_WAIT`, then 503,
  `response_budget`) and a connection given a large answer has its send buffer clamped (`LARGE_RESPONSE_SNDBUF`).

A real in-process agent (or a one-route app) and raw client sockets that never read; windows and waits are
shortened, and every wait is for an event, bounded generously (a failure without the fix is a timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gossip_agent.io import http_limits
from gossip_agent.io.auth import PEER_PREFIX
from gossip_agent.io.http_limits import (
    HTTP_STATS,
    ResponseBudget,
    stream_large_responses,
    unsent_bytes,
)
from gossip_agent.io.runtime import Agent
from tests.hostile.agent_support import answer, guarded_runner, non_reader, running, serving, state_of

VALUE = os.urandom(4 * 1024 * 1024)
BOUND = 30.0  # only stops a broken build hanging (and is how a test fails without its fix)


@pytest.fixture
async def agent() -> AsyncIterator[Agent]:
    async with running("review", sections={"state": {"maxValueBytes": len(VALUE)}}) as agent:
        yield agent


async def test_pipelined_small_answers_to_a_client_that_never_reads_are_cut_off(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 0.5)
    state_of(agent).put("medium", VALUE[:http_limits.SMALL_BODY], None)  # not over SMALL_BODY: a small answer
    runner, stats = guarded_runner(agent), guarded_runner(agent).app[HTTP_STATS]
    sock = await non_reader(agent.port, b"GET /v1/kv/medium HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
    try:
        async with asyncio.timeout(BOUND):
            while stats["response_stalled"] < 1 or sum(runner.guard.per_client.values()):  # before: never
                await asyncio.sleep(0.02)
    finally:
        sock.close()


async def test_a_raised_error_whose_client_never_reads_it_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 0.5)

    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPBadRequest(text="x" * (8 * 1024 * 1024))  # an error too large for the socket buffers

    app = web.Application(middlewares=[stream_large_responses()])
    app[HTTP_STATS] = Counter()
    app.router.add_get("/", refuse)
    async with serving(app) as port:
        sock = await non_reader(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            async with asyncio.timeout(BOUND):
                while app[HTTP_STATS]["response_stalled"] < 1:  # before the fix: aiohttp waits for ever
                    await asyncio.sleep(0.02)
            head, body = await answer(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400") and len(body) == 8 * 1024 * 1024  # a reader gets it whole
        finally:
            sock.close()


async def test_a_reading_client_gets_small_answers_and_errors_on_one_connection(agent: Agent) -> None:
    """Small answers written here go at once (no wait for the client to take them): 200 requests on one
    keep-alive connection, answers and 404s alternating, each answered in order."""
    state_of(agent).put("small", b"v" * 100, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        async with asyncio.timeout(BOUND):
            for n in range(200):
                path = b"/v1/kv/small" if n % 2 else b"/v1/kv/missing"
                writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                await reader.readexactly(length)
                assert head.startswith(b"HTTP/1.1 200" if n % 2 else b"HTTP/1.1 404")
    finally:
        writer.close()


async def test_large_answers_past_the_agents_cap_wait_then_get_503(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 600.0)  # the non-reader holds its answer for the test
    monkeypatch.setattr(http_limits, "MAX_LARGE_RESPONSE_BYTES", len(VALUE) + len(VALUE) // 2, raising=False)
    monkeypatch.setattr(http_limits, "RESPONSE_BUDGET_WAIT", 0.5, raising=False)
    state_of(agent).put("big", VALUE, None)
    state_of(agent).put("big2", VALUE[::-1], None)
    stats = guarded_runner(agent).app[HTTP_STATS]
    # Over the cap on its own, the first goes: nothing else is held.
    stuck = await non_reader(agent.port, b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        async with asyncio.timeout(BOUND):
            while not any(h.transport is not None and unsent_bytes(h.transport)
                          for h in guarded_runner(agent).server.connections):  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
        request = b"GET /v1/kv/big2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        head, body = await answer(agent.port, request)
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head  # before the fix: 200
        assert "error" in json.loads(body) and stats["response_budget"] == 1
        # Room comes back once the stuck client goes: a waiting answer then goes out.
        monkeypatch.setattr(http_limits, "RESPONSE_BUDGET_WAIT", BOUND)
        waiting = asyncio.ensure_future(answer(agent.port, request))
        await asyncio.sleep(0.2)
        stuck.close()
        async with asyncio.timeout(BOUND):
            head, body = await waiting
        assert head.startswith(b"HTTP/1.1 200") and body == VALUE[::-1]
    finally:
        stuck.close()


async def test_a_large_answer_clamps_the_connections_kernel_send_buffer(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 600.0)
    state_of(agent).put("big", VALUE, None)
    runner = guarded_runner(agent)
    # A client with an autotuned receive buffer (that lets the kernel grow the send buffer) that never reads.
    stuck = await non_reader(agent.port, b"GET /v1/kv/big HTTP/1.1\r\nHost: x\r\n\r\n", rcvbuf=None)
    try:
        queued, last, steady = 0, -1, 0
        async with asyncio.timeout(BOUND):
            while steady < 25:  # the kernel's send queue toward it has stopped growing (0.5 s unchanged)
                await asyncio.sleep(0.02)
                transports = [h.transport for h in runner.server.connections  # type: ignore[union-attr]
                              if h.transport is not None]
                queued = sum(unsent_bytes(t) - t.get_write_buffer_size() for t in transports)
                steady, last = (steady + 1 if queued == last and queued else 0), queued
        # Linux doubles the value set; before the fix autotuning let the queue grow to a few MiB.
        assert queued <= 2 * getattr(http_limits, "LARGE_RESPONSE_SNDBUF", 256 * 1024) + 64 * 1024, queued
    finally:
        stuck.close()


def test_write_under_stall_rule_takes_a_floor_for_peers() -> None:
    import inspect

    assert http_limits.PEER_STALL_MIN_BYTES == 1024 * 1024
    param = inspect.signature(http_limits.write_under_stall_rule).parameters["min_bytes"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None


async def test_write_under_stall_rule_applies_the_floor_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that never reads: with a floor of 0 bytes it is never stalled (over several windows), with the
    peers' floor it is: the floor passed is the one applied."""
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 0.25)

    async def respond(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        floor = int(request.query["floor"])
        await http_limits.write_under_stall_rule(request, response, [VALUE], min_bytes=floor)
        return response

    app = web.Application()
    app[HTTP_STATS] = Counter()
    app.router.add_get("/", respond)
    stats = app[HTTP_STATS]
    async with serving(app) as port:
        lenient = await non_reader(port, b"GET /?floor=0 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(8 * 0.25)
        assert stats["response_stalled"] == 0
        lenient.close()
        strict = await non_reader(port, f"GET /?floor={http_limits.PEER_STALL_MIN_BYTES} HTTP/1.1\r\n"
                                         "Host: x\r\n\r\n".encode())
        try:
            async with asyncio.timeout(BOUND):
                while stats["response_stalled"] < 1:
                    await asyncio.sleep(0.02)
        finally:
            strict.close()


def _get(key: str) -> bytes:
    return f"GET /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


async def test_members_answers_are_not_held_to_the_clients_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-review N1: a membership push-pull answer is a plain response on a peer route; held to the clients'
    cap, it would wait 10 s (the push-pull's own stream timeout) while clients filled the cap. Now a peer route's
    large answer goes at once whatever clients hold, and a client's waits and gets a 503."""
    budget = ResponseBudget(total=1024 * 1024)
    assert await budget.take(1024 * 1024, 0)  # clients hold the whole cap

    async def big(request: web.Request) -> web.StreamResponse:
        return web.Response(body=VALUE)

    app = web.Application(middlewares=[stream_large_responses(budget)])
    app[HTTP_STATS] = Counter()
    app.router.add_get(PEER_PREFIX + "pushpull", big)
    app.router.add_get("/v1/kv/big", big)
    async with serving(app) as port:
        monkeypatch.setattr(http_limits, "RESPONSE_BUDGET_WAIT", 0.2)
        try:
            async with asyncio.timeout(BOUND):
                head, body = await answer(port, f"GET {PEER_PREFIX}pushpull HTTP/1.1\r\nHost: x\r\n"
                                                 "Connection: close\r\n\r\n".encode())
                assert head.startswith(b"HTTP/1.1 200") and body == VALUE  # before the fix: 503 after the wait
                head, _ = await answer(port, _get("big"))
                assert head.startswith(b"HTTP/1.1 503")
        finally:
            budget.give_back(1024 * 1024)
