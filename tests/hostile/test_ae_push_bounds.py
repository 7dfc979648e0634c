"""Anti-entropy requests are bounded before they cost the responder anything (core/anti_entropy.py,
io/state_service.py, io/http_limits.py).

Three findings, each with a test that fails without its fix:
- A request could push any number of entries, all decoded and merged on the event loop: 50k tiny entries in
  a 4 MiB body held the responder's loop ~1 s (its probes stalled, peers suspected it, readiness lied). Now
  at most `Limits.max_push` entries per request: more is a 413 naming the limit, counted
  (`gossip_packets_dropped_total{reason="antientropy_push_count"}`), read from the push array's header
  before anything is decoded. The initiator splits its pushes to fit, so honest peers never meet it.
- The pushed entries were merged in one go; now in chunks of `MERGE_CHUNK`, the event loop running other
  tasks between chunks (checked by structure: a probe task runs between every two chunks).
- An over-budget request was read whole before its 429: the "retry later" (and the 503 for too many
  requests at once) is now answered before the body is read; a body that never finishes still gets it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiohttp
import msgpack
import pytest

from gossip_agent.core import anti_entropy
from gossip_agent.core.ae_codec import ae_request_push_count, encode_ae
from gossip_agent.core.anti_entropy import (
    MERGE_CHUNK,
    AeRequest,
    AntiEntropyError,
    Limits,
    exchange,
    respond,
)
from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore, ValueEntry
from gossip_agent.core.send_budget import SendBudget
from gossip_agent.core.state_node import AE_LIMITS
from gossip_agent.io import state_service
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import AE_PATH, FRAME, StateService
from tests.hostile.agent_support import answer_head, with_state

T0 = 1_700_000_000_000
MAX_PUSH = Limits().max_push
AGENT = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"enabled": False},
         "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}


def _entries(n: int, prefix: str = "k") -> list[ValueEntry]:
    source = KvStore("src@1", StateConfig())
    return [source.local_put(f"{prefix}{i:05d}", b"v%d" % i, T0) for i in range(n)]


def _request(store: KvStore, push: list[ValueEntry]) -> AeRequest:
    return AeRequest((store.merkle.bits, store.merkle.depth), push=tuple(push))


# -- the core ----------------------------------------------------------------------------------------------
def test_a_request_pushing_more_than_the_limit_is_refused_before_anything_is_merged() -> None:
    store = KvStore("r@1", StateConfig())
    with pytest.raises(AntiEntropyError, match=f"at most {MAX_PUSH}"):
        respond(store, _request(store, _entries(MAX_PUSH + 1)), T0)
    assert len(store) == 0
    respond(store, _request(store, _entries(MAX_PUSH)), T0)  # the limit itself is fine
    assert len(store) == MAX_PUSH


def test_the_initiator_splits_its_pushes_so_honest_peers_never_meet_the_limit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    holder, empty = KvStore("h@1", StateConfig()), KvStore("e@1", StateConfig())
    n = 3 * MAX_PUSH + 100
    for i in range(n):
        holder.local_put(f"k{i:05d}", b"x", T0)
    pushes: list[int] = []
    real = anti_entropy.respond

    def counting(store: KvStore, request: AeRequest, now_ms: int, limits: Limits = AE_LIMITS,
                 merged: anti_entropy.PushMerge | None = None) -> anti_entropy.AeResponse:
        pushes.append(len(request.push))
        return real(store, request, now_ms, limits, merged)

    monkeypatch.setattr(anti_entropy, "respond", counting)
    report = exchange(holder, empty, T0)  # the holder pushes everything (the peer holds nothing)
    assert report.pushed == n and holder.root_hex() == empty.root_hex()
    assert max(pushes) == MAX_PUSH and sum(pushes) == n, pushes


def test_the_push_count_is_read_from_the_header_without_decoding() -> None:
    store = KvStore("r@1", StateConfig())
    for n in (0, 1, 15, 16, 700):
        body = encode_ae(AeRequest((4, 4), root=b"r" * 32, descend=((1, 2),), listing=((2, 3),),
                                   push=tuple(_entries(n)), want=(b"12345678",)))
        assert ae_request_push_count(body) == n
    # Past 65,535 (a 32-bit array header); the items are never looked at, so they need not be entries.
    assert ae_request_push_count(msgpack.packb([3, [4, 4], None, [], [], [0] * 70_000, [], []])) == 70_000
    good = encode_ae(_request(store, _entries(3)))
    for bad in (b"", b"\x93", b"\xc1", good[:6], b"\x98\x04" + good[2:], b"\x97" + good[1:],
                encode_ae(anti_entropy.AeResponse((4, 4)))):
        with pytest.raises(StateCodecError):
            ae_request_push_count(bad)


# -- a real agent's endpoint --------------------------------------------------------------------------------
@pytest.fixture
async def agent() -> AsyncIterator[tuple[Agent, StateService]]:
    async with with_state({**AGENT, "name": "solo"}) as solo:
        yield solo


async def _post(a: Agent, body: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        sealed = a.security.seal(FRAME + body, state_service.Purpose.STREAM)
        async with http.post(f"http://127.0.0.1:{a.port}{AE_PATH}", data=sealed) as r:
            return r.status, (await r.read()).decode(errors="replace")


async def test_an_oversized_push_is_a_413_before_it_is_decoded(agent: tuple[Agent, StateService],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a, svc = agent
    decoded: list[int] = []
    real = state_service.decode_ae_request
    monkeypatch.setattr(state_service, "decode_ae_request", lambda *args: decoded.append(1) or real(*args))
    body = encode_ae(_request(svc.store, _entries(MAX_PUSH + 1)))
    status, text = await _post(a, body)
    assert status == 413 and f"at most {MAX_PUSH} per request" in text and "upgrade" in text, (status, text)
    assert decoded == [] and len(svc.store) == 0
    assert a.stats.dropped["antientropy_push_count"] == 1
    status, _ = await _post(a, encode_ae(_request(svc.store, _entries(MAX_PUSH))))
    assert status == 200 and len(svc.store) == MAX_PUSH and decoded == [1]


async def test_a_push_is_merged_in_chunks_and_the_event_loop_runs_between_them(
        agent: tuple[Agent, StateService], monkeypatch: pytest.MonkeyPatch) -> None:
    """Structure, not timing: a probe task counts its turns; every chunk of the merge must see the probe
    run since the chunk before (without chunks the whole push is merged in one turn of the loop)."""
    a, svc = agent
    turns = [0]
    seen: list[tuple[int, int]] = []  # (probe turns when the chunk began, entries merged by it)
    core = svc.core
    real = core.merge_anti_entropy_push

    def chunk(merge: anti_entropy.PushMerge, now: float, wall: float) -> list[object]:
        before = len(svc.store)
        out = real(merge, now, wall)
        seen.append((turns[0], len(svc.store) - before))
        return out  # type: ignore[return-value]

    monkeypatch.setattr(core, "merge_anti_entropy_push", chunk)
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            turns[0] += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(probe())
    try:
        status, _ = await _post(a, encode_ae(_request(svc.store, _entries(MAX_PUSH))))
    finally:
        stop.set()
        await task
    assert status == 200 and len(svc.store) == MAX_PUSH
    assert len(seen) == -(-MAX_PUSH // MERGE_CHUNK), seen
    assert all(0 < merged <= MERGE_CHUNK for _, merged in seen), seen
    assert all(later > earlier for (earlier, _), (later, _) in itertools.pairwise(seen)), seen
    assert svc.stats.ae_repaired["pushed_in"] == MAX_PUSH


async def test_an_over_budget_request_is_a_429_before_its_body_is_read(
        agent: tuple[Agent, StateService], monkeypatch: pytest.MonkeyPatch) -> None:
    """The request announces 1 MiB and sends 10 bytes of it, then waits: the 429 must come without the rest
    (before, the guard waited for the whole body: 30 s, then a 408)."""
    a, svc = agent
    monkeypatch.setattr(SendBudget, "answer_room", lambda self, now: 0)
    head = await answer_head(a.port, f"POST {AE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                                     f"Content-Length: {1 << 20}\r\n\r\n".encode() + FRAME + b"\x98" + b"\x00" * 8,
                             timeout=20.0)  # generous: the answer needs no more of the body
    assert head.startswith(b"HTTP/1.1 429"), head[:200]
    assert b"Retry-After: " in head
    assert a.node.stats["budget_deferred_antientropy_answer"] >= 1
    # The 503 for too many requests at once is answered before the body too.
    monkeypatch.undo()
    svc._ae_serving = state_service.AE_MAX_CONCURRENT
    request = f"POST {AE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n\r\n".encode() + FRAME
    try:
        head = await answer_head(a.port, request, timeout=20.0)
    finally:
        svc._ae_serving = 0
    assert head.startswith(b"HTTP/1.1 503"), head[:200]


async def test_a_large_honest_push_between_two_agents_converges_within_the_limit() -> None:
    async with with_state({**AGENT, "name": "p0"}) as (a0, s0), \
            with_state({**AGENT, "name": "p1", "seeds": [f"127.0.0.1:{a0.port}"]}) as (a1, s1):
        n = 2 * MAX_PUSH + 50
        for i in range(n):
            s0.store.local_put(f"k{i:05d}", b"v", s0.now_ms())
        assert await s0.sync_with(("127.0.0.1", a1.port))
        assert s1.store.root_hex() == s0.store.root_hex() and len(s1.store) == n
        assert s0.stats.ae_repaired["pushed"] == n and s1.stats.ae_repaired["pushed_in"] == n
        assert a1.stats.dropped["antientropy_push_count"] == 0 and s0.stats.ae["failures"] == 0
        assert AE_LIMITS.max_push == MAX_PUSH
