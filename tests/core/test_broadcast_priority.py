"""The rumor queue's critical level (core/broadcast.py): above everything in packets, evicted last, and the
per-class counts the budget metrics read."""

from __future__ import annotations

from gossip_agent.core.broadcast import BroadcastQueue
from gossip_agent.core.messages import Alive, StateRumor, Suspect


def test_critical_goes_first_even_after_many_transmits() -> None:
    q = BroadcastQueue(retransmit_mult=10)
    q.enqueue(StateRumor(b"c", critical=True), 100, critical=True)
    for _ in range(3):  # sent three times already: a normal rumor at 0 transmits still comes after it
        q.take(100, n_members=50)
    q.enqueue(StateRumor(b"n"), 100)
    q.enqueue(Alive("new", 1, ("h", 1)), 100, low=True)
    assert q.take(100, n_members=50) == [StateRumor(b"c", critical=True)]
    assert q.take(200, n_members=50) == [StateRumor(b"c", critical=True), StateRumor(b"n")]
    assert q.pending("critical") == 1 and q.pending("normal") == 2


def test_eviction_drops_announcements_then_normal_never_critical_first() -> None:
    q = BroadcastQueue(retransmit_mult=4, max_items=3)
    q.enqueue(Suspect("x", 1, "y"), 30, key="m:x", critical=True)
    q.enqueue(StateRumor(b"1"), 30)
    q.enqueue(Alive("new", 1, ("h", 1)), 30, key="m:new", low=True)
    q.enqueue(StateRumor(b"2"), 30)   # evicts the announcement
    q.enqueue(StateRumor(b"3"), 30)   # evicts the oldest normal rumor
    assert q.peek_all() == [Suspect("x", 1, "y"), StateRumor(b"3"), StateRumor(b"2")]
    assert q.dropped_by_class == {"critical": 0, "normal": 2}
    assert q.dropped == 2


def test_sent_bytes_by_class() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.enqueue(StateRumor(b"c", critical=True), 40, critical=True)
    q.enqueue(StateRumor(b"n"), 25)
    q.take(1000, n_members=9, to="a")
    q.take(1000, n_members=9, to="b")
    assert q.sent_bytes == {"critical": 80, "normal": 50}
