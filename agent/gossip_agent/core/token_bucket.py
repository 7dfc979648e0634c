"""One token bucket, and one per key: the agent's single way to ration something over time.

WHY. Three parts of the agent ration what they let through: the send budget (bytes a second on the wire,
core/send_budget.py), the HTTP API's critical writes (per agent and per client, io/critical_limit.py) and the
critical rumors a member relays as critical (per sending member, core/critical_relay.py). Each used to refill
and take tokens its own way, and they disagreed on the edge cases an attacker or a bad clock reaches: one
refilled again after the clock went backwards and forwards over the same second, one let a refund grow a
bucket past its burst. Here that arithmetic is written once:

- tokens refill at `rate` a second up to `burst`; a fresh bucket (a new key too) starts full;
- a clock that goes backwards, or a non-finite `now`, earns nothing, and the bucket's time never moves back,
  so the same second is never earned twice;
- an amount that is negative, NaN or infinite takes nothing, gives nothing and spends nothing (`take` says
  no): a bad number never fills a bucket nor empties it;
- `spend` may take the bucket down to a caller's `floor` (zero, or a bounded debt below zero); `give` never
  lifts it above `burst`.

`KeyedTokenBuckets` holds one bucket per key (a client, a member), at most `max_keys` of them: past that the
least recently used key is forgotten (LRU; a forgotten key starts again with a full bucket, so callers keep
a bound that does not depend on keys, like an agent-wide bucket, where forgetting must not help an attacker).

Pure: no clock (every call takes `now`), no I/O; a rate of 0 simply never refills (callers that mean
"unlimited" by 0 say so before asking).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


def _amount_ok(amount: float) -> bool:
    return math.isfinite(amount) and amount >= 0


@dataclass(frozen=True, slots=True)
class Rate:
    """How fast a bucket refills (`per_second`) and how much it holds at most (`burst`): finite, >= 0."""

    per_second: float
    burst: float

    def __post_init__(self) -> None:
        for name, value in (("per_second", self.per_second), ("burst", self.burst)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


class TokenBucket:
    """A bucket of `tokens` (at most `rate.burst`; below zero only as a debt `spend` allowed), refilled by
    `refill(now)`. `rate` may be replaced between calls (a setting that changed): it applies from then on."""

    __slots__ = ("_at", "rate", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.tokens = float(rate.burst)  # start full
        self._at: float | None = now if math.isfinite(now) else None  # None: counts from the first good time

    def refill(self, now: float) -> None:
        """Add what the rate earned since the last refill, up to the burst. Backwards or non-finite: nothing."""
        if not math.isfinite(now):
            return
        if self._at is None:
            self._at = now
            return
        elapsed = now - self._at  # (may overflow to inf: then the bucket fills, as after any long wait)
        if elapsed > 0:
            if self.tokens < self.rate.burst and self.rate.per_second > 0:
                self.tokens = min(float(self.rate.burst), self.tokens + elapsed * self.rate.per_second)
            self._at = now

    def take(self, amount: float, now: float) -> bool:
        """Refill, then take `amount` if the bucket holds it all; False (nothing taken) otherwise."""
        self.refill(now)
        if not _amount_ok(amount) or self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def spend(self, amount: float, floor: float = 0.0) -> None:
        """Take `amount` whether or not it is there, down to `floor` at most (a level already below `floor`
        stays where it is: a debt is never deepened past its bound, nor forgiven)."""
        if not _amount_ok(amount) or amount == 0:
            return
        self.tokens = max(min(self.tokens, floor), self.tokens - amount)

    def give(self, amount: float) -> None:
        """Put `amount` back (a take that was not used after all), up to the burst."""
        if _amount_ok(amount):
            self.tokens = min(float(self.rate.burst), self.tokens + amount)


class KeyedTokenBuckets(Generic[K]):
    """One TokenBucket per key, at most `max_keys` (the least recently used is forgotten past that)."""

    __slots__ = ("_buckets", "max_keys")

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, key: object) -> bool:
        return key in self._buckets

    def take(self, key: K, amount: float, rate: Rate, now: float) -> bool:
        """`key`'s bucket (a new one full, at `rate`) refilled at `rate`, then `amount` taken if it is there.
        The key becomes the most recently used either way (asking is using)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(rate, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.rate = rate
        return bucket.take(amount, now)

    def give(self, key: K, amount: float) -> None:
        """Put `amount` back in `key`'s bucket (nothing if the key was forgotten meanwhile)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.give(amount)
