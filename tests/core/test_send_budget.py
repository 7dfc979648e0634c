"""The outgoing byte budget's token bucket (core/send_budget.py): refill, burst, never negative, extremes."""

from __future__ import annotations

import math

import pytest

from gossip_agent.core.send_budget import MIN_BURST_BYTES, SendBudget, effective_burst


def test_starts_full_and_refills_at_rate_up_to_burst() -> None:
    b = SendBudget(1000, 3000, now=0.0)
    assert b.tokens == 3000
    b.charge(3000)
    assert b.tokens == 0
    b.refill(0.5)
    assert b.tokens == pytest.approx(500)
    b.refill(100.0)
    assert b.tokens == 3000  # never above the burst, however long the quiet spell


def test_allow_is_bounded_by_tokens_and_wanted() -> None:
    b = SendBudget(1000, 2000, now=0.0)
    assert b.allow(500) == 500
    assert b.allow(5000) == 2000
    assert b.allow(0) == 0
    assert b.allow(-7) == 0


def test_charge_never_drives_tokens_negative() -> None:
    b = SendBudget(100, 1000, now=0.0)
    b.charge(10**12)  # mandatory bytes are never refused, but leave no debt behind
    assert b.tokens == 0
    assert b.allow(100) == 0
    b.refill(1.0)
    assert b.tokens == pytest.approx(100)
    b.charge(-5)
    assert b.tokens == pytest.approx(100)


def test_clock_going_backwards_or_non_finite_earns_nothing() -> None:
    b = SendBudget(1000, 5000, now=10.0)
    b.charge(5000)
    b.refill(5.0)
    assert b.tokens == 0
    b.refill(math.nan)
    b.refill(math.inf)
    assert b.tokens == 0
    b.refill(10.5)  # the earlier (backwards) reading did not move the reference time back
    assert b.tokens == pytest.approx(500)


def test_zero_rate_is_unlimited_and_free() -> None:
    b = SendBudget(0, 0, now=0.0)
    assert b.unlimited
    assert b.tokens == math.inf
    b.charge(10**15)
    assert b.allow(10**9) == 10**9


def test_huge_values_stay_finite_and_bounded() -> None:
    b = SendBudget(1e9, 10**9, now=0.0)
    b.charge(10**9)
    b.refill(1e12)
    assert b.tokens == 10**9
    assert b.allow(2**62) == 10**9


def test_bad_parameters_are_refused() -> None:
    for rate, burst in ((-1, 10), (math.nan, 10), (math.inf, 10), (10, -1)):
        with pytest.raises(ValueError):
            SendBudget(rate, burst, now=0.0)


def test_effective_burst_defaults_to_one_second_and_never_below_a_packet() -> None:
    assert effective_burst(0, 5000, 1400) == 0
    assert effective_burst(10_000, 0, 1400) == 10_000
    assert effective_burst(100, 0, 1400) == 1400
    assert effective_burst(100, 50, 500) == MIN_BURST_BYTES
    assert effective_burst(10_000, 50_000, 1400) == 50_000


def test_normal_payloads_leave_the_critical_reserve() -> None:
    from gossip_agent.core.send_budget import CRITICAL_RESERVE
    b = SendBudget(1000, 2000, 0.0)
    reserve = int(2000 * CRITICAL_RESERVE)
    assert b.allow_normal(5000) == 2000 - reserve and b.allow(5000) == 2000
    b.charge(2000 - reserve)
    assert b.allow_normal(10) == 0 and b.allow(reserve) == reserve
    assert b.allow_normal(-1) == 0
    assert SendBudget(0, 0, 0.0).allow_normal(123) == 123
