"""A peer that answers every anti-entropy request "retry later, after 0 s" (io/state_service.py `_ae_round`).

A 429/503 is waited out and the same request sent again, the waits bounded by AE_BUDGET_WAIT. A Retry-After
of 0 waited nothing, so the bound never came: without a byte budget (the default) the round re-sent its
request at once, forever. Sessions run one at a time, so a single hostile or broken peer (a proxy answering
429 with `Retry-After: 0`) ended anti-entropy with every member for the agent's lifetime, and was hammered
with requests. Each retry now waits at least a budget step, so the round gives up (the session is deferred)
after a few requests. No real waiting here: the sleeps are counted, not slept.
"""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace

import pytest

from gossip_agent.core.send_budget import SendBudget
from gossip_agent.io import state_service
from gossip_agent.io.peer_client import PeerBusy
from gossip_agent.io.state_service import AE_BUDGET_WAIT, StateService


def _fake_service(clock: list[float], calls: list[int], retry_after: float) -> SimpleNamespace:
    async def exchange(addr: object, path: str, body: bytes, *, max_bytes: int, **_: object) -> bytes:
        calls.append(1)
        if len(calls) > 10_000:
            raise AssertionError("the round never ends")
        raise PeerBusy(429, retry_after)

    fake = SimpleNamespace(
        agent=SimpleNamespace(node=SimpleNamespace(send_budget=SendBudget(0, 0, 0.0), stats={}), now=lambda: clock[0]),
        stats=SimpleNamespace(ae_bytes={"sent": 0}), _exchange=exchange)
    fake._budget_wait = lambda n, waited: StateService._budget_wait(fake, n, waited)  # type: ignore[arg-type]
    return fake


@pytest.mark.parametrize("retry_after", [0.0, 0.01])
def test_a_peer_answering_retry_after_zero_forever_defers_the_session(retry_after: float,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    calls: list[int] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        await real_sleep(0)

    monkeypatch.setattr(state_service.asyncio, "sleep", sleep)
    fake = _fake_service(clock, calls, retry_after)

    async def run() -> None:
        with pytest.raises(PeerBusy):
            await StateService._ae_round(fake, ("10.0.0.2", 7946), b"x" * 100)  # type: ignore[arg-type]

    asyncio.run(run())
    assert len(calls) <= math.ceil(AE_BUDGET_WAIT / state_service.AE_BUDGET_STEP) + 1, len(calls)
    assert fake.agent.node.stats["budget_deferred_antientropy"] == len(calls)
