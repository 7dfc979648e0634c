"""The outgoing gossip byte budget (`gossip.maxBytesPerSecond`): a token bucket, pure (no clock).

Why a bucket: an operator caps what one agent may put on the wire per second (a metered link, a noisy
neighbour), yet failure detection must never starve. So its traffic is split in three:

- **mandatory** bytes — probes, acks, nacks, ping-reqs and their headers — always go; they are charged
  (`charge`), which can empty the bucket but never drive it below zero (no debt: a burst of probes after a
  quiet spell does not silence gossip for longer than it cost);
- **optional** bytes — rumors piggybacked on those packets and the gossip/forward packets that carry only
  rumors — go only as far as the bucket holds (`allow`), critical rumors first (the queue orders them).
  Whatever the budget holds back stays queued (deferred, it goes on the next refill); the queue's own bound
  evicts the rest (dropped). Both are counted by the Node;
- **stream** bytes — Merkle anti-entropy over HTTP, the sessions this agent starts and the answers it serves —
  count against the same bucket, because a user who caps an agent's peer traffic means all of it.
  Anti-entropy is the safety net: it takes only what the bucket holds above the critical reserve, so it
  yields to gossip (which spreads a write at a fraction of its cost) and never holds a critical rumor back.
  Under a sustained load that keeps the queue full it waits; once writes slow down the bucket refills and it
  repairs what gossip deferred or dropped. Each message is kept to `stream_room` bytes (sessions and answers
  are shrunk to fit, more rounds instead of bigger ones). A session's message waits for its bytes
  (`take_stream`: the io waits, bounded, then defers the session); an answer to a peer never waits
  (`answer_room`: the room now, or "retry later"). A message can outgrow its estimate; the excess is charged
  as a bounded debt (at most one burst), repaid before optional bytes go again.

Tokens refill at `rate` bytes/s up to `burst` bytes. `rate == 0` means unlimited: every call is a no-op and
`allow` returns what was asked, so the default configuration costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping

from gossip_agent.core.broadcast import CLASSES, BroadcastQueue
from gossip_agent.core.token_bucket import Rate, TokenBucket

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
# The largest anti-entropy message under a budget, as a share of the burst (several answers and a request fit
# in one refill; a lost round costs little).
STREAM_SHARE = 0.25
# An anti-entropy message is never shrunk below this (a listing of a few keys, one small entry), unless the
# burst above the critical reserve is smaller (`stream_room`).
MIN_STREAM_BYTES = 1024
# What an HTTP exchange costs beside its body (request line or status, headers, framing): charged per message.
STREAM_OVERHEAD = 200
# Without a budget, stream messages are bounded by anti_entropy.Limits alone.
UNLIMITED_STREAM = 1 << 62


class SendBudget:
    """A token bucket of bytes (core/token_bucket.py). Call `refill(now)` at each driver entry point, then
    `allow`/`charge`."""

    __slots__ = ("_bucket", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if not math.isfinite(rate) or rate < 0:
            raise ValueError(f"rate must be a finite number >= 0, got {rate!r}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, got {burst!r}")
        self.rate = float(rate)
        self.burst = int(burst) if rate > 0 else 0
        # Starts full: a fresh agent may join and announce itself at once.
        self._bucket = TokenBucket(Rate(self.rate, float(self.burst)), now)

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    @property
    def tokens(self) -> float:
        """Bytes the bucket holds (-burst <= tokens <= burst: below zero is a stream's debt); `math.inf` when
        unlimited."""
        return math.inf if self.unlimited else self._bucket.tokens

    def refill(self, now: float) -> None:
        """Add what `rate` earned since the last refill, up to `burst`. A clock that went backwards (or a
        non-finite `now`) earns nothing: the bucket never grows from a bad reading."""
        if not self.unlimited:
            self._bucket.refill(now)

    def allow(self, wanted: int) -> int:
        """Optional bytes that may go now, at most `wanted` (never negative)."""
        if wanted <= 0:
            return 0
        if self.unlimited:
            return wanted
        return max(0, min(wanted, int(self._bucket.tokens)))

    def allow_normal(self, wanted: int) -> int:
        """Like `allow`, for a normal payload sent apart from the queue (the broadcast tree's pushes, which
        no queue orders): it leaves the last CRITICAL_RESERVE of the burst to critical ones, so a stream of
        normal writes cannot spend what a critical write arriving next needs."""
        if wanted <= 0:
            return 0
        if self.unlimited:
            return wanted
        return max(0, min(wanted, int(self._bucket.tokens - self._reserve())))

    def charge(self, sent: int) -> None:
        """`sent` bytes went on the wire: take them from the bucket, which stops at zero (mandatory bytes
        can exceed what is left; they are never refused, and add no debt; a stream's debt stays)."""
        if self.unlimited or sent <= 0:
            return
        self._bucket.spend(sent, floor=0.0)

    # -- anti-entropy streams -----------------------------------------------------------------------------
    def _reserve(self) -> float:
        return self.burst * CRITICAL_RESERVE

    def stream_room(self) -> int:
        """The largest anti-entropy message (bytes, HTTP overhead included) a session or an answer should
        build: STREAM_SHARE of the burst, at least MIN_STREAM_BYTES (unless the burst above the critical reserve
        is smaller); UNLIMITED_STREAM without a budget."""
        if self.unlimited:
            return UNLIMITED_STREAM
        # Never more than the burst holds above the reserve: a message waiting for more than the bucket can
        # hold waited forever (a burst under ~1.4 KB: every session deferred, every answer a 429).
        return max(1, min(max(MIN_STREAM_BYTES, int(self.burst * STREAM_SHARE)),
                          int(self.burst - self._reserve())))

    def _min_answer(self) -> int:
        return min(MIN_STREAM_BYTES, self.stream_room())

    def take_stream(self, size: int, now: float) -> float:
        """An anti-entropy message of `size` bytes (body + STREAM_OVERHEAD) wants to go: 0.0 if it may go now
        (it is charged), else the seconds until the bucket could hold it if gossip spent nothing (ask again
        then). It goes only on what the bucket holds above the critical reserve: anti-entropy is the safety
        net, so it yields to gossip (which spreads a write more cheaply) and never takes what critical rumors
        need. A message larger than `stream_room` waits only for `stream_room` tokens; the rest is a debt."""
        if self.unlimited or size <= 0:
            return 0.0
        self.refill(now)
        short = min(size, self.stream_room()) + self._reserve() - self._bucket.tokens
        if short < 1.0:  # (less than a byte short: a float's rounding must not keep it waiting)
            self._charge_stream(size)
            return 0.0
        return short / self.rate

    def answer_room(self, now: float) -> int:
        """Bytes an answer to a peer's anti-entropy request may take now (it never waits: the event loop is
        not held): what the bucket holds above the critical reserve, at most `stream_room`; 0 if that is below
        MIN_STREAM_BYTES (then answer "retry later", after `retry_after`)."""
        if self.unlimited:
            return UNLIMITED_STREAM
        self.refill(now)
        room = min(self.stream_room(), int(self._bucket.tokens - self._reserve()))
        return room if room >= self._min_answer() else 0

    def retry_after(self, now: float) -> float:
        """Seconds until `answer_room` reaches MIN_STREAM_BYTES if nothing else spends (what a refused peer is
        told to wait)."""
        if self.unlimited:
            return 0.0
        self.refill(now)
        return max(0.0, (self._min_answer() + self._reserve() - self._bucket.tokens) / self.rate)

    def charge_answer(self, size: int) -> None:
        """An answer of `size` bytes (body + STREAM_OVERHEAD) went, built within `answer_room`."""
        if self.unlimited or size <= 0:
            return
        self._charge_stream(size)

    def refund_stream(self, size: int) -> None:
        """A stream message charged by `take_stream` did not go after all (the peer said "retry later" before
        the body was sent): give its bytes back, up to `burst`."""
        if self.unlimited or size <= 0:
            return
        self._bucket.give(size)

    def _charge_stream(self, size: int) -> None:
        # Debt, not a floor at zero: a stream message is optional, so what it overshot is owed (bounded, so
        # one oversized entry cannot silence gossip for longer than one burst takes to earn).
        self._bucket.spend(size, floor=-float(self.burst))


# Node.stats keys, per rumor class ("critical"/"normal"), exported by io/metrics.py as labelled families.
DEFERRED_KEY = "budget_deferred_"
DROPPED_KEY = "rumors_dropped_"
BYTES_KEY = "rumor_bytes_"
# Anti-entropy's classes of `gossip_budget_deferred_total`: our session's message waited for the budget
# (`antientropy`; a session deferred after waiting too long counts here too), a peer's request answered
# "retry later" (`antientropy_answer`).
STREAM_CLASSES = ("antientropy", "antientropy_answer")


def stream_deferred(stats: MutableMapping[str, int], cls: str) -> None:
    """Count one anti-entropy deferral of class `cls` (one of STREAM_CLASSES) in the Node's stats."""
    stats[DEFERRED_KEY + cls] = stats.get(DEFERRED_KEY + cls, 0) + 1


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
