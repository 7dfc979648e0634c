"""Anti-entropy under a small byte budget still runs (core/send_budget.py stream_room / answer_room).

A stream message waits for `min(size, stream_room) + the critical reserve` tokens, and an answer needs
MIN_STREAM_BYTES above the reserve. stream_room was at least MIN_STREAM_BYTES (1 KiB) whatever the burst,
and the reserve is a quarter of it: with a burst below ~1,366 bytes (e.g. maxBytesPerSecond 1000 with an mtu
of 1200, the burst being one second of the rate or one mtu) the bucket could never hold that much. Every
session was deferred after its wait and every peer's request answered 429, forever: the safety net was off,
silently. stream_room now leaves the reserve inside the burst (smaller messages, more rounds).
"""

from __future__ import annotations

import pytest

from gossip_agent.core.send_budget import SendBudget, effective_burst


@pytest.mark.parametrize(("rate", "mtu"), [(1000, 1200), (600, 576), (800, 1000), (100_000, 1400)])
def test_a_full_bucket_lets_a_session_message_and_an_answer_go(rate: int, mtu: int) -> None:
    budget = SendBudget(rate, effective_burst(rate, 0, mtu), 0.0)
    room = budget.stream_room()
    assert 0 < room <= budget.burst
    assert budget.answer_room(100.0) > 0  # a peer's request is answered, not told to retry forever
    assert budget.take_stream(room, 100.0) == 0.0  # our session's message goes
    assert budget.take_stream(10 * room, 200.0) == 0.0  # a larger one waits only for stream_room (debt)
    wait = budget.retry_after(200.0)
    assert wait < 60.0 and budget.answer_room(200.0 + wait + 1e-6) > 0
