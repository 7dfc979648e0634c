"""The hello queue (core/hello_queue.py): whom to greet, first come first served, at a bounded pace, with a
bounded number waiting; names that need no hello any more leave without a token."""

from __future__ import annotations

import math

import pytest

from gossip_agent.core.hello_queue import HELLO_BURST, HELLO_RATE, HelloQueue


def test_never_more_than_the_burst_plus_the_rate_in_any_interval_and_everyone_greeted_in_order() -> None:
    q = HelloQueue(1000, 0.0)
    names = [f"m{i}" for i in range(999)]  # a newcomer that learnt 999 members in one push-pull
    for name in names:
        assert q.add(name)
    sent: list[tuple[float, str]] = []
    now = 0.0
    while len(q):
        now = max(now, q.next_deadline())
        sent += [(now, name) for name in q.due(now, lambda _: False)]
        now += 0.0007  # a driver that also wakes for other things
    assert [name for _, name in sent] == names
    times = [t for t, _ in sent]
    for window in (0.0, 0.1, 1.0, 5.0):
        most = max(sum(1 for t in times if start <= t <= start + window) for start in times)
        assert most <= HELLO_BURST + HELLO_RATE * window + 1e-9, (window, most)
    assert times[-1] == pytest.approx((999 - HELLO_BURST) / HELLO_RATE, abs=0.01)  # ~20 s, not one burst


def test_due_at_next_deadline_always_hands_out_one_and_an_empty_queue_sleeps() -> None:
    q = HelloQueue(10, 5.0, rate=4.0, burst=1.0)
    assert q.next_deadline() == math.inf
    q.add("a")
    q.add("b")
    assert q.next_deadline() <= 5.0  # a full bucket: at once
    assert q.due(5.0, lambda _: False) == ["a"]
    at = q.next_deadline()
    assert at == pytest.approx(5.25)
    assert q.due(at - 0.01, lambda _: False) == []
    assert q.due(at, lambda _: False) == ["b"]
    assert q.next_deadline() == math.inf


def test_pending_is_bounded_and_refusals_told() -> None:
    q = HelloQueue(3, 0.0)
    assert all(q.add(n) for n in ("a", "b", "c"))
    assert q.add("a")  # already waiting: keeps its place, no refusal
    assert not q.add("d") and not q.add("e")
    assert len(q) == 3
    q.discard("b")
    assert q.add("d") and "d" in q and "b" not in q


def test_skipped_names_leave_without_a_token() -> None:
    q = HelloQueue(100, 0.0, rate=1.0, burst=2.0)
    for i in range(50):
        q.add(f"m{i}")
    # Everyone but m48 and m49 showed its level meanwhile: they are skipped for free, the two are greeted now.
    assert q.due(0.0, lambda name: name not in ("m48", "m49")) == ["m48", "m49"]
    assert len(q) == 0


def test_a_bad_clock_earns_nothing() -> None:
    q = HelloQueue(10, 0.0, rate=1.0, burst=1.0)
    for n in ("a", "b", "c"):
        q.add(n)
    assert q.due(0.0, lambda _: False) == ["a"]
    assert q.due(math.nan, lambda _: False) == []
    assert q.due(-100.0, lambda _: False) == []
    assert q.due(0.5, lambda _: False) == []
    assert q.due(1.0, lambda _: False) == ["b"]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        HelloQueue(-1, 0.0)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, rate=0.0)
    with pytest.raises(ValueError):
        HelloQueue(1, 0.0, rate=math.inf)
