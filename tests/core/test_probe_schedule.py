"""Aligned probing's ring arithmetic: every round is a derangement, every cycle visits everyone once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gossip_agent.core import probe_schedule
from gossip_agent.core.membership import Member, MemberTable
from gossip_agent.core.messages import MemberState


@given(cycle=st.integers(min_value=0, max_value=10**12), others=st.integers(min_value=1, max_value=300))
def test_shifts_of_a_cycle_are_a_permutation_of_one_to_others(cycle: int, others: int) -> None:
    shifts = [probe_schedule.shift(cycle * others + k, others) for k in range(others)]
    assert sorted(shifts) == list(range(1, others + 1))


@given(round_=st.integers(min_value=0, max_value=10**12), n=st.integers(min_value=2, max_value=200))
def test_each_member_is_probed_by_exactly_one_other_per_round(round_: int, n: int) -> None:
    s = probe_schedule.shift(round_, n - 1)
    targets = [(i + s) % n for i in range(n)]
    assert sorted(targets) == list(range(n))
    assert all(t != i for i, t in enumerate(targets))


def test_cycles_draw_different_orders() -> None:
    orders = {tuple(probe_schedule.shift(c * 49 + k, 49) for k in range(49)) for c in range(20)}
    assert len(orders) == 20


def test_ring_key_is_stable_across_processes() -> None:
    # blake2b, not Python's per-process salted hash(): every member must compute the same ring.
    assert probe_schedule.ring_key("n1") == int.from_bytes(
        __import__("hashlib").blake2b(b"n1", digest_size=8).digest(), "big")
    assert probe_schedule.ring_key("n1") != probe_schedule.ring_key("n2")


def test_a_tick_a_rounding_error_early_counts_for_its_round() -> None:
    phase, interval = 0.3, 1.0
    start = probe_schedule.round_start(1_700_000_000, phase, interval)
    assert probe_schedule.round_of(start - 1e-9, phase, interval) == 1_700_000_000
    assert probe_schedule.round_of(start + 0.999, phase, interval) == 1_700_000_000
    assert probe_schedule.round_of(start + 1.0, phase, interval) == 1_700_000_001


def test_member_table_ring_holds_live_members_in_key_order() -> None:
    table = MemberTable()
    for i in range(6):
        table.add(Member(f"m{i}", ("h", i), 1, MemberState.ALIVE))
    ring = table.ring()
    assert [k for k, _ in ring] == sorted(probe_schedule.ring_key(f"m{i}") for i in range(6))
    m2 = table.get("m2")
    assert m2 is not None
    table.set_state(m2, MemberState.SUSPECT, 1.0)
    assert "m2" in {name for _, name in table.ring()}  # suspects are still probed
    table.set_state(m2, MemberState.DEAD, 2.0)
    assert "m2" not in {name for _, name in table.ring()}
    table.remove("m3")
    assert {name for _, name in table.ring()} == {"m0", "m1", "m4", "m5"}
    assert table.ring_key("m3") is None
