"""A peer that answers every anti-entropy request "retry later, after 0 s" (io/state_service.py `_ae_round`).

A 429/503 is waited out and the same request sent again, the waits bounded by AE_BUDGET_WAIT. A Retry-After
of 0 waited nothing, so the bound never came: without a byte budget (the default) the round re-sent its
request at once, forever. Sessions run one at a time, so a single hostile or broken peer (a proxy answering
429 with `Retry-After: 0`) ended anti-entropy with every member for the agent's lifetime, and was hammered
with requests. Each retry now waits at least a budget step, so the round gives up (the session is deferred)
after a few requests. No real waiting here: the sleeps are counted, not slept.
"""

from __future__ import annotations

import math

import pytest

from gossip_agent.io import state_service
from gossip_agent.io.peer_client import PeerBusy
from gossip_agent.io.state_service import AE_BUDGET_WAIT
from tests.hostile.agent_support import busy_ae_round


@pytest.mark.parametrize("retry_after", [0.0, 0.01])
def test_a_peer_answering_retry_after_zero_forever_defers_the_session(retry_after: float,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake, calls, _ = busy_ae_round(monkeypatch, lambda: PeerBusy(429, retry_after))
    assert len(calls) <= math.ceil(AE_BUDGET_WAIT / state_service.AE_BUDGET_STEP) + 1, len(calls)
    assert fake.agent.node.stats["budget_deferred_antientropy"] == len(calls)
