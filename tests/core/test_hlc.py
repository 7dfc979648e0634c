"""Hybrid logical clock: monotonic, causal, close to physical time, totally ordered."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core import hlc
from gossip_agent.core.hlc import ClockDriftError, Hlc


def test_tick_follows_physical_time_when_it_advances() -> None:
    assert hlc.tick(Hlc(100, 5, "a"), 200) == Hlc(200, 0, "a")


def test_tick_counts_logically_when_physical_time_stalls_or_goes_back() -> None:
    t = hlc.tick(Hlc(100, 5, "a"), 50)
    assert t == Hlc(100, 6, "a")
    assert hlc.tick(t, 100) == Hlc(100, 7, "a")


def test_update_is_after_both_clocks() -> None:
    local, remote = Hlc(100, 3, "a"), Hlc(150, 7, "b")
    merged = hlc.update(local, remote, 120)
    assert merged > local and (merged.wall_ms, merged.logical) > (remote.wall_ms, remote.logical)
    assert merged == Hlc(150, 8, "a")
    assert hlc.update(Hlc(150, 2, "a"), Hlc(150, 9, "b"), 100) == Hlc(150, 10, "a")
    assert hlc.update(Hlc(150, 2, "a"), Hlc(140, 9, "b"), 100) == Hlc(150, 3, "a")
    assert hlc.update(Hlc(100, 2, "a"), Hlc(140, 9, "b"), 200) == Hlc(200, 0, "a")


def test_update_rejects_a_remote_clock_too_far_ahead() -> None:
    with pytest.raises(ClockDriftError):
        hlc.update(Hlc(0, 0, "a"), Hlc(10_000, 0, "b"), 1_000, max_drift_ms=5_000)
    assert hlc.update(Hlc(0, 0, "a"), Hlc(5_000, 0, "b"), 1_000, max_drift_ms=5_000).wall_ms == 5_000


def test_node_id_breaks_ties_for_a_total_order() -> None:
    assert Hlc(5, 1, "a") < Hlc(5, 1, "b") < Hlc(5, 2, "a") < Hlc(6, 0, "a")


def test_observe_only_moves_forward() -> None:
    assert hlc.observe(Hlc(10, 1, "a"), Hlc(5, 9, "b")) == Hlc(10, 1, "a")
    assert hlc.observe(Hlc(10, 1, "a"), Hlc(10, 2, "b")) == Hlc(10, 2, "a")


def test_packed_keeps_order_and_saturates_logical() -> None:
    assert Hlc(1, 2).packed() < Hlc(1, 3).packed() < Hlc(2, 0).packed()
    assert Hlc(1, 1 << 20).packed() == (1 << 16) | 0xFFFF


def test_plain_round_trip_and_rejects_garbage() -> None:
    ts = Hlc(1_732_460_000_123, 4, "node-1")
    assert hlc.from_plain(hlc.to_plain(ts)) == ts
    for bad in (None, [1, 2], [1, 2, 3], [-1, 0, "a"], [True, 0, "a"], "x", [1.5, 0, "a"]):
        with pytest.raises(ValueError):
            hlc.from_plain(bad)


events = st.lists(st.tuples(st.booleans(), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 3)),
                  max_size=60)


@settings(max_examples=200)
@given(events)
def test_every_event_is_strictly_later_and_never_behind_physical_time(script: list[tuple[bool, int, int, int]]) -> None:
    clock = Hlc(0, 0, "me")
    for is_receive, now, remote_wall, remote_logical in script:
        previous = clock
        if is_receive:
            remote = Hlc(remote_wall, remote_logical, "peer")
            clock = hlc.update(clock, remote, now)
            assert (clock.wall_ms, clock.logical) > (remote.wall_ms, remote.logical)
        else:
            clock = hlc.tick(clock, now)
        assert clock > previous
        assert clock.wall_ms >= now
        assert clock.node == "me"
