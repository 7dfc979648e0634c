"""The one token bucket (core/token_bucket.py) that the send budget, the API's critical limit and the critical
relay share: refill, take, spend to a floor, give back, and one bucket per key with a bound on keys. Hostile
inputs included: many keys, negative/NaN/infinite amounts and times, a clock that goes backwards."""

from __future__ import annotations

import math

import pytest

from gossip_agent.core.token_bucket import KeyedTokenBuckets, Rate, TokenBucket

NAN, INF = math.nan, math.inf


def test_a_bucket_starts_full_refills_at_its_rate_and_stops_at_its_burst() -> None:
    b = TokenBucket(Rate(10.0, 5.0), now=100.0)
    assert [b.take(1.0, 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert b.take(2.0, 100.2) and not b.take(1.0, 100.2)  # 0.2 s earned 2
    b.refill(1000.0)
    assert b.tokens == 5.0  # never above the burst, however long it waited


def test_take_is_all_or_nothing() -> None:
    b = TokenBucket(Rate(1.0, 3.0), now=0.0)
    assert not b.take(3.5, 0.0) and b.tokens == 3.0
    assert b.take(3.0, 0.0) and b.tokens == 0.0


def test_a_clock_going_backwards_earns_nothing_and_the_same_second_is_not_earned_twice() -> None:
    b = TokenBucket(Rate(1.0, 10.0), now=50.0)
    assert b.take(10.0, 50.0)
    assert not b.take(1.0, 40.0)  # backwards: nothing earned
    assert b.take(1.0, 51.0) and not b.take(1.0, 51.0)  # one second after 50, not 11 after 40
    assert not b.take(1.0, 45.0) and not b.take(1.0, 51.0)


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_non_finite_times_earn_nothing_and_do_not_poison_the_clock(bad: float) -> None:
    b = TokenBucket(Rate(1.0, 2.0), now=0.0)
    assert b.take(2.0, 0.0)
    b.refill(bad)
    assert b.tokens == 0.0
    assert b.take(1.0, 1.0) and b.tokens == 0.0  # the clock still counts from 0


def test_a_bucket_made_at_a_non_finite_time_is_full_and_counts_from_the_next_good_time() -> None:
    b = TokenBucket(Rate(1.0, 2.0), now=NAN)
    assert b.take(2.0, NAN) and not b.take(1.0, 5.0)  # earns nothing for the unknown past...
    assert b.take(1.0, 6.0)  # ...and from 5 on, at its rate


def test_a_huge_time_jump_or_rate_fills_to_the_burst_and_no_further() -> None:
    b = TokenBucket(Rate(1e300, 4.0), now=-1e308)
    assert b.take(4.0, -1e308)
    b.refill(1e308)  # elapsed overflows to inf
    assert b.tokens == 4.0
    z = TokenBucket(Rate(0.0, 2.0), now=0.0)  # rate 0: the burst once, never refilled
    assert z.take(2.0, 0.0)
    z.refill(1e308)
    assert z.tokens == 0.0 and not math.isnan(z.tokens)


@pytest.mark.parametrize("bad", [-1.0, NAN, INF, -INF])
def test_bad_amounts_take_give_and_spend_nothing(bad: float) -> None:
    b = TokenBucket(Rate(1.0, 5.0), now=0.0)
    assert b.take(2.0, 0.0)
    assert not b.take(bad, 0.0)
    b.give(bad)
    b.spend(bad)
    assert b.tokens == 3.0


def test_spend_stops_at_its_floor_and_never_deepens_nor_forgives_a_debt() -> None:
    b = TokenBucket(Rate(1.0, 5.0), now=0.0)
    b.spend(8.0, floor=0.0)
    assert b.tokens == 0.0
    b.spend(3.0, floor=-5.0)
    assert b.tokens == -3.0
    b.spend(100.0, floor=-5.0)
    assert b.tokens == -5.0
    b.spend(1.0, floor=0.0)  # a charge that stops at zero leaves the debt as it is
    assert b.tokens == -5.0
    assert not b.take(1.0, 5.0) and b.take(1.0, 6.0)  # the debt is repaid first


def test_give_never_lifts_a_bucket_above_its_burst() -> None:
    b = TokenBucket(Rate(1.0, 2.0), now=0.0)
    assert b.take(1.0, 0.0)
    b.give(1e300)
    assert b.tokens == 2.0


@pytest.mark.parametrize("rate, burst", [(NAN, 1.0), (INF, 1.0), (-1.0, 1.0), (1.0, NAN), (1.0, -1.0), (1.0, INF)])
def test_a_rate_must_be_finite_and_not_negative(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        Rate(rate, burst)


def test_keys_have_their_own_buckets_and_the_least_recently_used_is_forgotten() -> None:
    rate = Rate(1.0, 1.0)
    keyed: KeyedTokenBuckets[str] = KeyedTokenBuckets(max_keys=2)
    assert keyed.take("a", 1.0, rate, 0.0) and keyed.take("b", 1.0, rate, 0.0)
    assert not keyed.take("a", 1.0, rate, 0.0)  # "a" empty, and now the most recently used
    assert keyed.take("c", 1.0, rate, 0.0)  # over the bound: "b" (least recently used) is forgotten
    assert len(keyed) == 2 and "b" not in keyed and "a" in keyed
    assert not keyed.take("a", 1.0, rate, 0.0)  # "a" was kept, still empty


def test_many_keys_keep_memory_bounded() -> None:
    rate = Rate(1.0, 1.0)
    keyed: KeyedTokenBuckets[int] = KeyedTokenBuckets(max_keys=64)
    assert all(keyed.take(i, 1.0, rate, 0.0) for i in range(100_000))  # each new key starts full...
    assert len(keyed) == 64  # ...and only the bound's worth is remembered


def test_a_keys_rate_follows_the_rate_it_is_asked_with() -> None:
    keyed: KeyedTokenBuckets[str] = KeyedTokenBuckets(max_keys=4)
    assert keyed.take("a", 1.0, Rate(1.0, 1.0), 0.0)
    assert not keyed.take("a", 1.0, Rate(1.0, 1.0), 0.5)
    assert keyed.take("a", 1.0, Rate(10.0, 1.0), 0.6)  # 0.1 s at the new rate of 10 earned the half missing


def test_give_to_a_forgotten_key_is_nothing() -> None:
    keyed: KeyedTokenBuckets[str] = KeyedTokenBuckets(max_keys=1)
    assert keyed.take("a", 1.0, Rate(1.0, 1.0), 0.0)
    assert keyed.take("b", 1.0, Rate(1.0, 1.0), 0.0)
    keyed.give("a", 1.0)
    assert "a" not in keyed and len(keyed) == 1


def test_max_keys_must_be_positive() -> None:
    with pytest.raises(ValueError):
        KeyedTokenBuckets(max_keys=0)


def test_the_critical_buckets_do_not_earn_twice_from_a_clock_that_steps_back_and_forth() -> None:
    """Both critical buckets set their time to `now` even when it went backwards, so a clock stepping back
    and forth earned the same second again: one more critical write each step."""
    from gossip_agent.core.critical_relay import CriticalRelay
    from gossip_agent.io.critical_limit import CriticalLimit

    relay = CriticalRelay()  # 1/s: 2 a second per member, a burst of 1
    assert relay.admit("p2", 1, 10.0)
    assert [relay.admit("p2", 1, t) for t in (9.5, 10.0, 9.5, 10.0)] == [False] * 4
    clock = [10.0]
    limit = CriticalLimit(2, lambda: clock[0])  # one client: 1/s, a burst of 1
    assert limit.allow("a")
    results = []
    for t in (9.0, 10.0, 9.0, 10.0):
        clock[0] = t
        results.append(limit.allow("a"))
    assert results == [False] * 4
