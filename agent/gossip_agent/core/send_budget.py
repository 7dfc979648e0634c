"""The outgoing gossip byte budget (`gossip.maxBytesPerSecond`): a token bucket, pure (no clock).

Why a bucket: an operator caps what one agent may put on the wire per second (a metered link, a noisy
neighbour), yet failure detection must never starve. So the Node splits its traffic in two:

- **mandatory** bytes — probes, acks, nacks, ping-reqs and their headers — always go; they are charged
  (`charge`), which can empty the bucket but never drive it below zero (no debt: a burst of probes after a
  quiet spell does not silence gossip for longer than it cost);
- **optional** bytes — rumors piggybacked on those packets and the gossip/forward packets that carry only
  rumors — go only as far as the bucket holds (`allow`), critical rumors first (the queue orders them).

Whatever the budget holds back stays queued (deferred, it goes on the next refill); the queue's own bound
evicts the rest (dropped). Both are counted by the Node.

Tokens refill at `rate` bytes/s up to `burst` bytes. `rate == 0` means unlimited: every call is a no-op and
`allow` returns what was asked, so the default configuration costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

from gossip_agent.core.broadcast import CLASSES, BroadcastQueue

# A burst below this could not hold one full rumor packet: the budget would defer everything forever.
MIN_BURST_BYTES = 576


def effective_burst(rate: int, burst: int, mtu: int) -> int:
    """The bucket size for `gossip.maxBytesPerSecond = rate` and `gossip.maxBurstBytes = burst`: the burst if
    given, else one second of the rate; never below one MTU-sized packet (else a packet could never go)."""
    if rate <= 0:
        return 0
    return max(burst if burst > 0 else rate, mtu, MIN_BURST_BYTES)


# The share of the burst that normal broadcast-tree payloads leave to critical ones (`allow_normal`).
CRITICAL_RESERVE = 0.25


class SendBudget:
    """A token bucket of bytes. Call `refill(now)` at each driver entry point, then `allow`/`charge`."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst) if rate > 0 else 0
        self._tokens = float(self.burst)  # start full: a fresh agent may join and announce itself at once
        self._at = now

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    @property
    def tokens(self) -> float:
        """Bytes that may go now (0 <= tokens <= burst); `math.inf` when unlimited."""
        return math.inf if self.unlimited else self._tokens

    def refill(self, now: float) -> None:
        """Add what `rate` earned since the last refill, up to `burst`. A clock that went backwards (or a
        non-finite `now`) earns nothing: the bucket never grows from a bad reading."""
        if self.unlimited:
            return
        elapsed = now - self._at
        if not math.isfinite(elapsed):
            return
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._at = max(self._at, now)

    def allow(self, wanted: int) -> int:
        """Optional bytes that may go now, at most `wanted` (never negative)."""
        if wanted <= 0:
            return 0
        if self.unlimited:
            return wanted
        return min(wanted, int(self._tokens))

    def allow_normal(self, wanted: int) -> int:
        """Like `allow`, for a normal payload sent apart from the queue (the broadcast tree's pushes, which
        no queue orders): it leaves the last CRITICAL_RESERVE of the burst to critical ones, so a stream of
        normal writes cannot spend what a critical write arriving next needs."""
        if wanted <= 0:
            return 0
        if self.unlimited:
            return wanted
        return max(0, min(wanted, int(self._tokens - self.burst * CRITICAL_RESERVE)))

    def charge(self, sent: int) -> None:
        """`sent` bytes went on the wire: take them from the bucket, which stops at zero (mandatory bytes
        can exceed what is left; they are never refused)."""
        if self.unlimited or sent <= 0:
            return
        self._tokens = max(0.0, self._tokens - sent)


# Node.stats keys, per rumor class ("critical"/"normal"), exported by io/metrics.py as labelled families.
DEFERRED_KEY = "budget_deferred_"
DROPPED_KEY = "rumors_dropped_"
BYTES_KEY = "rumor_bytes_"


def budget_deferred(stats: MutableMapping[str, int], queue: BroadcastQueue) -> None:
    """A packet's piggyback was trimmed by the budget: count one deferral per class still waiting in `queue`."""
    for cls in CLASSES:
        if queue.pending(cls):
            stats[DEFERRED_KEY + cls] = stats.get(DEFERRED_KEY + cls, 0) + 1


def budget_stats(stats: MutableMapping[str, int], queue: BroadcastQueue) -> None:
    """Copy the queue's per-class totals (rumor bytes handed to packets, rumors evicted) into `stats`."""
    for cls in CLASSES:
        stats[BYTES_KEY + cls] = queue.sent_bytes[cls]
        stats[DROPPED_KEY + cls] = queue.dropped_by_class[cls]
