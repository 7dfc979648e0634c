"""Session 16: peers that ask for large answers and never read them; fetches that retry when told "busy".

Failed before its fix: peers' answers (a value fetch, an anti-entropy round) were exempt from the HTTP layer's
response budget, and were written by aiohttp after the handler returned. One member (or many connections of
one) asking for a 3 MiB value over and over and never reading made the agent render and hold every answer:
24 fetches +79 MB of RSS, 96 fetches +296 MB, 96 anti-entropy rounds +299 MB. Now each answer is taken from an
answer budget (core/answer_budget.py: 32 MiB per agent, 8 MiB per remote address) before it is rendered, and
held until the handler has written it or the connection dropped; over it a 503 with `Retry-After: 1`, counted
in `gossip_peer_answers_refused_total{reason}`.

And a value fetch answered 503/429 is retried with backoff for up to 10 s (counted as
`gossip_state_rumors_total{result="pull_busy"}`), so an honest burst of pulls over a squeezed budget still
delivers every value (before: the pull failed at once and the value waited for anti-entropy, off here).

Real in-process agents on loopback without a keyring (a peer body is then the plain frame); raw client sockets
with a 4 KiB receive buffer that never read. Every wait is for an event, bounded generously.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.answer_budget import REFUSED_ADDRESS, REFUSED_BUDGET, AnswerBudget
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.config import from_mapping
from gossip_agent.core.messages import MemberState
from gossip_agent.io import http_limits, state_service
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, FETCH_PATH, FRAME, StateService, state_extensions
from tests.hostile.agent_support import non_readers, running, state_of

MIB = 1024 * 1024
VALUE = os.urandom(3 * MIB)
BOUND = 30.0  # only stops a broken build hanging; every wait below is for an event
STALL_WINDOW = 60.0  # longer than any test here: answers stay held until their connection drops


def _config(name: str, **extra: Any) -> dict[str, Any]:
    return {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "name": name,
            "state": {"maxValueBytes": len(VALUE)}, **extra}


@pytest.fixture
async def agent(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Agent]:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", STALL_WINDOW)
    async with running("answers", sections={"state": {"maxValueBytes": len(VALUE)}}) as agent:
        yield agent


def _post(path: str, body: bytes) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def _fetch_request(key: str) -> bytes:
    return _post(FETCH_PATH, FRAME + msgpack.packb([key], use_bin_type=True))


def _ae_request(svc: StateService) -> bytes:
    """A round asking for every entry the agent holds (all of them under the root)."""
    merkle = svc.store.merkle
    return _post(AE_PATH, FRAME + encode_ae(AeRequest(shape=(merkle.bits, merkle.depth), want_nodes=((0, 0),))))


async def _heads(socks: list[socket.socket]) -> list[bytes]:
    """The first bytes each connection got: the status line and headers (a body beyond 4 KiB stays unread)."""
    loop = asyncio.get_running_loop()
    heads = []
    async with asyncio.timeout(BOUND):
        for sock in socks:
            heads.append(await loop.sock_recv(sock, 4096))
    return heads


async def _until_released(svc: StateService) -> None:
    async with asyncio.timeout(BOUND):
        while svc.answers.in_flight or svc.answers.used:
            await asyncio.sleep(0.02)


def _status(head: bytes) -> int:
    return int(head.split(b" ", 2)[1])


@contextlib.asynccontextmanager
async def _unread_answers(agent: Agent, requests: list[tuple[str | None, bytes]]) -> AsyncIterator[list[bytes]]:
    """Sends each (source address, request) on a connection that never reads and yields the heads of their
    answers; at the end the connections drop, and every answer's bytes must then be given back."""
    socks = await non_readers(agent.port, requests)
    try:
        yield await _heads(socks)
    finally:
        for sock in socks:
            sock.close()
    await _until_released(state_of(agent))  # a dropped connection gives its answer's bytes back


async def test_one_address_that_never_reads_holds_at_most_its_share_of_fetch_answers(agent: Agent) -> None:
    """8 non-reading fetches of a 3 MiB value from one address: 2 answered (6 MiB of its 8), 6 refused with
    503 and Retry-After (before the fix: 8 answered, every one held); the bytes stay counted until the
    connections drop, then all are given back."""
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    async with _unread_answers(agent, [("127.0.0.1", _fetch_request("big"))] * 8) as heads:
        statuses = sorted(_status(h) for h in heads)
        assert statuses == [200] * 2 + [503] * 6, statuses
        assert all(b"Retry-After: 1" in h for h in heads if _status(h) == 503)
        assert svc.answers.refused[REFUSED_ADDRESS] == 6
        assert svc.answers.in_flight == 2 and svc.answers.used >= 2 * len(VALUE)  # held while unwritten
        text = agent.metrics.render().decode()
        assert 'gossip_peer_answers_refused_total{reason="address"} 6.0' in text
        assert "gossip_peer_answers_in_flight 2.0" in text


async def test_many_addresses_together_hold_at_most_the_agent_total(agent: Agent) -> None:
    """12 addresses, one non-reading fetch each: 10 x 3 MiB fit the agent's 32 MiB, 2 are refused."""
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    async with _unread_answers(agent, [(f"127.0.0.{i}", _fetch_request("big")) for i in range(2, 14)]) as heads:
        statuses = sorted(_status(h) for h in heads)
        assert statuses == [200] * 10 + [503] * 2, statuses
        assert svc.answers.refused[REFUSED_BUDGET] == 2
        assert svc.answers.used <= svc.answers.total


async def test_anti_entropy_answers_are_budgeted_too(agent: Agent) -> None:
    """8 non-reading anti-entropy rounds that want every entry (a 3 MiB value): 2 answered, 6 refused."""
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    async with _unread_answers(agent, [("127.0.0.1", _ae_request(svc))] * 8) as heads:
        statuses = sorted(_status(h) for h in heads)
        assert statuses == [200] * 2 + [503] * 6, statuses
        assert svc.answers.in_flight == 2 and svc.answers.used >= 2 * len(VALUE)


async def test_a_peer_that_reads_gets_its_whole_answer_and_the_budget_is_given_back(agent: Agent) -> None:
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.port)
    try:
        writer.write(_fetch_request("big"))
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            body = await reader.readexactly(length)
    finally:
        writer.close()
    assert _status(head) == 200 and body.startswith(FRAME) and VALUE in body
    await _until_released(svc)


async def test_an_answer_the_peer_stops_taking_is_cut_off_and_released(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 0.5)
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    assert agent._runner is not None
    stats = agent._runner.app[http_limits.HTTP_STATS]
    socks = await non_readers(agent.port, [("127.0.0.1", _fetch_request("big"))])
    try:
        async with asyncio.timeout(BOUND):
            while not stats["response_stalled"]:  # the stall rule resets the connection, not the client
                await asyncio.sleep(0.02)
        assert stats["response_stalled"] == 1
        await _until_released(svc)
    finally:
        for sock in socks:
            sock.close()


def _tree_reaches_all(agents: list[Agent]) -> bool:
    """Whether the first agent's pushes reach every agent along eager tree links. A write pushed before the last
    joiner's links exist never reaches it by the tree (nobody holds it as lazy to announce to it), and anti-
    entropy, the safety net for that, is off here: on a busy machine the writes sometimes beat the links."""
    names = {a.node.name: a for a in agents}
    reached, todo = {agents[0].node.name}, [agents[0].node.name]
    while todo:
        for peer in names[todo.pop()].node.tree.eager:
            if peer in names and peer not in reached:
                reached.add(peer)
                todo.append(peer)
    return len(reached) == len(agents)


@contextlib.asynccontextmanager
async def _cluster(n: int) -> AsyncIterator[list[Agent]]:
    """`n` agents joined on loopback, anti-entropy off: a value reaches the others only by their pulls."""
    agents: list[Agent] = []
    try:
        for i in range(n):
            seeds = [f"127.0.0.1:{agents[0].port}"] if agents else []
            cfg = from_mapping(_config(f"pull{i}", seeds=seeds, antiEntropy={"enabled": False}))
            agent = Agent(cfg, extensions=state_extensions(cfg))
            await agent.start()
            agents.append(agent)
        async with asyncio.timeout(BOUND):
            while any(a.node.counts().get(MemberState.ALIVE, 0) < n for a in agents) or not _tree_reaches_all(agents):
                await asyncio.sleep(0.05)
        yield agents
    finally:
        for agent in agents:
            await agent.stop()


async def test_pulls_answered_busy_are_retried_until_every_agent_has_every_value(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A budget squeezed to one answer at a time at the writer, and held full by someone else for the first
    2 s: its peers' pulls of 3 large values get 503s, wait, retry, and every agent ends up with every value
    (before the fix: the 503 failed the pull, and with anti-entropy off the value never came). The pulls'
    bound is lengthened to the test's: nine pulls share one slot, each held until its peer has taken the
    answer, and on a busy machine some waited past the default 10 s and gave up (anti-entropy, off here,
    would have repaired them): what is tested is that busy answers are retried, not how fast."""
    monkeypatch.setattr(state_service, "FETCH_BUSY_WAIT", 3 * BOUND, raising=False)  # (absent before the fix)
    async with _cluster(4) as agents:
        writer = state_of(agents[0])
        writer.answers = AnswerBudget(total=len(VALUE) // 2, per_address=len(VALUE) // 2)
        other = writer.answers.take("192.0.2.1", 1)  # an answer to someone else, not taken yet
        assert not isinstance(other, str)
        asyncio.get_running_loop().call_later(2.0, writer.answers.give_back, other)
        values = {f"big{i}": os.urandom(len(VALUE) // 2) for i in range(3)}
        for key, value in values.items():
            writer.put(key, value, None)
        services = [state_of(a) for a in agents]
        async with asyncio.timeout(3 * BOUND):
            while not all(s.store.merkle.digest_of(k) == writer.store.merkle.digest_of(k)
                          for s in services for k in values):
                await asyncio.sleep(0.1)
        assert sum(s.stats.rumors["pull_busy"] for s in services) > 0  # the squeeze did refuse some
        assert sum(s.stats.rumors["pull_failed"] for s in services) == 0
        assert writer.answers.refused[REFUSED_BUDGET] > 0


async def test_a_pull_busy_for_longer_than_its_bound_gives_up_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that answers 503 to every fetch: the pull retries within its bound (shortened here), then fails
    (counted; anti-entropy would repair the key), never retrying forever."""
    monkeypatch.setattr(state_service, "FETCH_BUSY_WAIT", 2.0, raising=False)  # (absent before the fix)
    async with _cluster(2) as agents:
        writer, reader = state_of(agents[0]), state_of(agents[1])
        writer.answers = AnswerBudget(total=1, per_address=1)
        assert not isinstance(writer.answers.take("192.0.2.1", 1), str)  # never given back
        writer.put("big", VALUE, None)
        async with asyncio.timeout(BOUND):
            while not reader.stats.rumors["pull_failed"]:
                await asyncio.sleep(0.05)
        assert reader.stats.rumors["pull_busy"] >= 2  # retried at least once before giving up
        assert reader.store.entry("big") is None


async def test_a_peer_trickling_its_answer_at_a_clients_pace_is_cut_off(
        agent: Agent, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fetch whose reader takes ~32 KiB/s: enough for a client's stall floor (16 KiB per window), not for a
    peer's (`PEER_STALL_MIN_BYTES`, 1 MiB per window). Its answer is reset and its bytes given back (before the
    fix, at a client's floor, ten such connections held the whole budget for as long as they liked, every
    honest fetch answered 503: review F2). The window is shortened to 1 s; the trickle is paced by sleeps, and
    at any pace below 1 MiB/s the outcome is the same."""
    monkeypatch.setattr(http_limits, "STALL_WINDOW", 1.0)
    svc = state_of(agent)
    svc.put("big", VALUE, None)
    assert agent._runner is not None
    stats = agent._runner.app[http_limits.HTTP_STATS]
    (sock,) = await non_readers(agent.port, [("127.0.0.1", _fetch_request("big"))])
    loop = asyncio.get_running_loop()
    got = 0
    try:
        async with asyncio.timeout(BOUND):
            while not stats["response_stalled"]:
                try:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 0.5)
                except TimeoutError:
                    continue
                except ConnectionError:
                    chunk = b""  # the reset reached the reader before the count was read
                if not chunk:
                    while not stats["response_stalled"]:
                        await asyncio.sleep(0.02)
                    break
                got += len(chunk)
                await asyncio.sleep(0.125)  # ~32 KiB/s
        assert stats["response_stalled"] == 1
        assert got < len(VALUE)
        await _until_released(svc)
    finally:
        sock.close()
