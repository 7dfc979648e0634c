"""A budget's "retry later" in milliseconds (io/state_service.py, io/peer_client.py).

Retry-After is whole seconds, and a byte budget refills within a fraction of one (30 kB/s: the room for an
answer comes back in ~0.3 s), so an asking agent waited a whole second per 429, its session idle. Agents now
also send `X-Gossip-Retry-After-Ms` and wait only that long, above a floor (`AE_PRECISE_RETRY_MIN`) so that a
peer answering "0 ms" forever still ends the round after a bounded number of requests. The header is input
like any other: bounded, and ignored (Retry-After counts) unless it is plain digits.
"""

from __future__ import annotations

import math

import pytest

from gossip_agent.core.ae_codec import encode_ae
from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.send_budget import SendBudget
from gossip_agent.io import state_service
from gossip_agent.io.peer_client import MAX_RETRY_AFTER, PeerBusy, parse_retry_after_ms
from gossip_agent.io.state_service import AE_BUDGET_WAIT, AE_PRECISE_RETRY_MIN
from tests.hostile.agent_support import answer_head, busy_ae_round, with_state


def test_the_millisecond_header_is_bounded_input() -> None:
    assert parse_retry_after_ms("250") == 0.25
    assert parse_retry_after_ms(" 0 ") == 0.0
    assert parse_retry_after_ms("999999999") == MAX_RETRY_AFTER
    for bad in (None, "", "-1", "1.5", "0x10", "9" * 5000, "٣"):
        assert parse_retry_after_ms(bad) is None


@pytest.mark.parametrize(("retry_after", "pause"), [(0.0, AE_PRECISE_RETRY_MIN), (0.4, 0.4), (3.0, 3.0)])
def test_a_precise_wait_is_taken_as_it_is_above_a_floor(retry_after: float, pause: float,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _, calls, slept = busy_ae_round(monkeypatch, lambda: PeerBusy(429, retry_after, precise=True))
    assert set(slept) == {pause}, slept
    assert len(calls) <= math.ceil(AE_BUDGET_WAIT / pause) + 1, len(calls)


async def test_our_429_says_how_many_milliseconds_and_the_asker_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"enabled": False}}
    async with with_state({**fast, "name": "m0"}) as (a0, _), \
            with_state({**fast, "name": "m1"}) as (_, s1):
        monkeypatch.setattr(SendBudget, "answer_room", lambda self, now: 0)
        monkeypatch.setattr(SendBudget, "retry_after", lambda self, now: 0.3)
        with pytest.raises(PeerBusy) as busy:
            await s1._exchange(("127.0.0.1", a0.port), state_service.AE_PATH, b"\x90", max_bytes=1024)
        assert busy.value.precise and busy.value.retry_after == 0.3 and busy.value.status == 429


async def test_under_a_budget_a_retry_later_costs_no_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request sent with `Expect: 100-continue` (peers under a budget do) gets the 429 instead of the
    "100 Continue", so its body never goes: the asker gives the body's bytes back to its budget. Before, every
    429 was paid with a whole body, sent again at each retry."""
    budget = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"enabled": False},
              "gossip": {"maxBytesPerSecond": 30_000}}
    async with with_state({**budget, "name": "e0"}) as (a0, s0), \
            with_state({**budget, "name": "e1"}) as (a1, s1):
        monkeypatch.setattr(SendBudget, "answer_room", lambda self, now: 0)
        monkeypatch.setattr(state_service, "AE_BUDGET_WAIT", 0.0)  # defer at once instead of waiting it out
        head = await answer_head(a0.port, f"POST {state_service.AE_PATH} HTTP/1.1\r\nHost: x\r\n"
                                          f"Expect: 100-continue\r\nContent-Length: {1 << 20}\r\n\r\n".encode(),
                                 timeout=20.0)  # and no body at all
        assert head.startswith(b"HTTP/1.1 429"), head[:200]
        entries = tuple(s1.store.local_put(f"k{i}", b"v" * 100, s1.now_ms()) for i in range(50))
        body = encode_ae(AeRequest((s1.store.merkle.bits, s1.store.merkle.depth), push=entries))
        assert len(body) >= state_service.AE_EXPECT_MIN_BODY
        sent, tokens = s1.stats.ae_bytes["sent"], a1.node.send_budget.tokens
        with pytest.raises(PeerBusy):
            await s1._ae_round(("127.0.0.1", a0.port), body)
        assert s1.stats.ae_bytes["sent"] == sent  # the request's body never went
        # Its bytes are back in our budget (only the request's headers stay charged).
        assert a1.node.send_budget.tokens >= tokens - state_service.STREAM_OVERHEAD - 1
        assert s0.store.get("k0") is None
