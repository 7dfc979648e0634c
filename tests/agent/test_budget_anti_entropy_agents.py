"""Two real agents on loopback under `gossip.maxBytesPerSecond`: the state one holds and the other lacks
crosses by Merkle anti-entropy (HTTP) within the budget, answers the budget has no room for are "retry later"
(429) that the initiator waits out or defers (never a failure), and the replicas still converge.

No timing luck: the bound is checked against the time that really passed (a slow machine only loosens it),
with margins (x1.5 the rate, two bursts, a packet allowance); convergence has a generous deadline."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from gossip_agent.core.config import from_mapping
from gossip_agent.core.send_budget import DEFERRED_KEY
from gossip_agent.io import state_service
from gossip_agent.io.peer_client import DEFAULT_RETRY_AFTER, MAX_RETRY_AFTER, parse_retry_after
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_service import StateService

RATE = 30_000            # bytes/s per agent; the burst is one second of it
KEYS, VALUE = 200, 512   # about 120 kB to move: four seconds of budget, a fraction of one without
FAST = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
        "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"},
        "gossip": {"interval": "50ms", "maxBytesPerSecond": RATE}}


def _out(agent: Agent, svc: StateService, peer: StateService) -> int:
    """Bytes `agent` sent: its UDP datagrams, its sessions' requests, its answers to the peer's sessions (as
    the peer received them)."""
    udp = sum(v for (direction, _), v in agent.stats.bytes.items() if direction == "out")
    return udp + svc.stats.ae_bytes["sent"] + peer.stats.ae_bytes["received"]


async def test_anti_entropy_stays_within_the_byte_budget_and_still_converges() -> None:
    loop = asyncio.get_running_loop()
    s0 = StateService(from_mapping({**FAST, "name": "b0"}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    now_ms = s0.now_ms()
    for i in range(KEYS):  # held before the peer joins (as if recovered from a data dir): never gossiped
        s0.store.local_put(f"k{i:04d}", bytes([i % 251]) * VALUE, now_ms)
    s1 = StateService(from_mapping({**FAST, "name": "b1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    a1 = Agent(s1.config, extensions=[s1])
    t0 = loop.time()
    base0, base1 = _out(a0, s0, s1), _out(a1, s1, s0)
    await a1.start()
    worst = 0.0
    try:
        deadline = t0 + 60.0  # generous: a loaded machine only makes this slower
        while loop.time() < deadline and s1.store.stats().keys < KEYS:
            await asyncio.sleep(0.05)
            elapsed = loop.time() - t0
            for agent, svc, peer, base in ((a0, s0, s1, base0), (a1, s1, s0, base1)):
                sent = _out(agent, svc, peer) - base
                bound = 1.5 * RATE * elapsed + 2 * RATE + 8_000
                worst = max(worst, sent / bound)
                assert sent <= bound, f"{svc.config.name} sent {sent} B in {elapsed:.2f} s (bound {bound:.0f})"
        assert s1.store.stats().keys == KEYS, "the replicas did not converge"
        # The budget held anti-entropy back (the old agents moved it all at once), as deferrals, not failures.
        deferred = sum(a.node.stats.get(DEFERRED_KEY + cls, 0) for a in (a0, a1)
                       for cls in ("antientropy", "antientropy_answer"))
        assert deferred > 0
        moved = sum(s.stats.ae_bytes[d] for s in (s0, s1) for d in ("sent", "served"))
        assert moved > KEYS * VALUE  # the values crossed by anti-entropy, not by gossip
    finally:
        await a1.stop()
        await a0.stop()


async def test_an_answer_the_budget_has_no_room_for_is_a_429_the_initiator_defers_not_a_failure(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_service, "AE_BUDGET_WAIT", 0.0)  # defer at once instead of waiting it out
    s0 = StateService(from_mapping({**FAST, "name": "r0"}))
    a0 = Agent(s0.config, extensions=[s0])
    unlimited = {**FAST, "gossip": {**FAST["gossip"], "maxBytesPerSecond": 0}}
    s1 = StateService(from_mapping({**unlimited, "name": "r1"}))
    a1 = Agent(s1.config, extensions=[s1])
    await a0.start()
    await a1.start()
    try:
        s1.store.local_put("k", b"v", s1.now_ms())
        a0.node.send_budget.charge_answer(10**9)  # a0's budget is spent (in debt for a second)
        assert not await s1.sync_with(("127.0.0.1", a0.port))
        assert s1.stats.ae["deferred"] == 1 and s1.stats.ae["failures"] == 0
        assert a1.node.stats[DEFERRED_KEY + "antientropy"] == 1
        assert a0.node.stats[DEFERRED_KEY + "antientropy_answer"] == 1
        assert s0.store.get("k") is None  # nothing of a refused request is merged
        async with aiohttp.ClientSession() as http:
            body = b"\x01" + b"\x90"  # any body: the budget is checked before the request is decoded
            # Spent again just before: the debt is capped at one burst (about a second of refill), and a busy
            # machine can take that long between the session above and this request.
            a0.node.send_budget.charge_answer(10**9)
            async with http.post(f"http://127.0.0.1:{a0.port}{state_service.AE_PATH}", data=body) as r:
                assert r.status == 429
                assert 1 <= int(r.headers["Retry-After"]) <= 60
            async with http.get(f"http://127.0.0.1:{a0.port}/metrics") as r:
                text = await r.text()
        assert 'gossip_budget_deferred_total{class="antientropy_answer"} 2.0' in text
        # Once the budget refills the same session goes through.
        a0.node.send_budget.refill(a0.now() + 10.0)
        assert await s1.sync_with(("127.0.0.1", a0.port))
        assert s0.store.get("k") is not None
    finally:
        await a1.stop()
        await a0.stop()


def test_a_peers_retry_after_is_bounded_input() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after("999999") == MAX_RETRY_AFTER  # a peer cannot park our sessions for days
    for bad in (None, "", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "9" * 5000, "٣"):
        assert parse_retry_after(bad) == DEFAULT_RETRY_AFTER
