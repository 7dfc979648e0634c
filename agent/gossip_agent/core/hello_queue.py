"""Whom to greet next: one hello to each member we learn (or learn again), paced.

WHY. Newer message types go to a member only once it has shown, FIRST-HAND (a packet of its own from its own
host), that it reads them (core/readers.py): an older agent drops a whole packet holding a type it does not
know. The broadcast tree's flood fallback, too, leaves out only members that showed so (core/node.py
`_flood_to_others`): anything weaker could be forged. Evidence used to come only from probes and the offers
beside them, and a member probes each other about once per N probe intervals: for the first minute of a
50-member cluster (every rollout, every bench) EVERY write took the flood fallback, about a third of all
deliveries came by the flood and each payload arrived some three times.

So when a member enters our table live (new, or back after `Readers.reset`: suspicion, death, a new address,
a restart), the Node sends it one hello: a packet holding only our highest offer (core/node.py
`_hello_offer`), which an older agent drops alone. A member that reads it shows us its level by answering
with its own offer (`Node._on_short_ids`), so both ends know within a round trip, without waiting for a probe.

PACING. A newcomer to a cluster of ~240 members (the most that greet, see SCALE) learns them all in one
push-pull: it must not send 240 packets at once. Hellos leave through a token bucket (core/token_bucket.py):
at most HELLO_BURST at once, then HELLO_RATE a second (so at most HELLO_BURST + HELLO_RATE * T in any T
seconds; 240 members take ~4.6 s). Above that size nobody greets, and the queue drains through skips.
Whatever the tree gossips meanwhile still reaches everyone (the flood fallback covers the members not yet
greeted). At its turn a member that needs no hello any more -- it showed its level meanwhile, we already
offered to it (a probe's offer, or our answer to its own hello), it died, left or was reaped -- is skipped
at no cost (the caller's `skip`), so in a cluster where everyone greets everyone most turns are skips.

SCALE. Greetings cost about 3.4 small packets per pair of members once (hello, answer, answer to the
answer): O(N) per member, O(N^2) for the cluster (1.7M packets at N=1,000, ~68 MB, about the flood fallback of
4,000 writes of 1 KiB). What they save is the flood fallback, which costs a writer at most the rumor queue's
retransmit limit of copies per write (mult * ceil(log10(N + 1))) beside the tree's N - 1: 16 % of the byte
floor at N=50, 1.6 % at N=1,000. So a member greets only while that limit is at least FLOOD_SHARE of the
other members (`hellos_pay`: up to ~240 members at the default retransmitMult of 4); above that, levels are
learnt from probes as before, and queued names leave at no cost.

BOUNDED. At most `max_pending` names (the caller's membership.maxMembers; it adds only members of its table
and discards reaped ones); past that a name is refused (`add` says so; the Node counts it as `hellos_refused`):
it still learns of us by the offers beside our probes. Pure: every call takes `now`; no clock, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gossip_agent.core.token_bucket import Rate, TokenBucket

HELLO_RATE = 50.0
"""Hellos a second once the burst is spent: a hello is one small packet (~30 B) to a member that answers with
one; 50/s greets a 50-member cluster in about a second, costs at most ~3 KB/s both ways, and keeps a
newcomer to ~240 members (the most that greet, `hellos_pay`) to ~4.6 s of greetings instead of one burst of
240 packets."""

HELLO_BURST = 10.0
"""Hellos that may leave at once (a quiet agent's bucket is full)."""

FLOOD_SHARE = 0.05
"""Greet while the flood fallback's copies per write are at least this share of the other members (the byte
floor): below it the fallback costs less than the greetings' O(N^2) packets would save (see SCALE)."""

_WHOLE = 1.0 - 1e-9  # a token earned up to float rounding counts as earned (no extra wake-ups for 1e-16)


class HelloQueue:
    """Members waiting for a hello, first come first served, released at most `rate` a second."""

    __slots__ = ("_at", "_bucket", "_pending", "max_pending")

    def __init__(self, max_pending: int, now: float, *, rate: float = HELLO_RATE,
                 burst: float = HELLO_BURST) -> None:
        if max_pending < 0:
            raise ValueError(f"max_pending must be >= 0, got {max_pending!r}")
        if not math.isfinite(rate) or rate <= 0:
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        self.max_pending = max_pending
        self._bucket = TokenBucket(Rate(rate, max(1.0, burst)), now)
        self._at = now if math.isfinite(now) else 0.0  # the bucket's last refill, for `next_deadline`
        self._pending: dict[str, None] = {}  # insertion-ordered: the oldest waits least

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, name: object) -> bool:
        return name in self._pending

    def add(self, name: str) -> bool:
        """Queue `name` for one hello (a name already waiting keeps its place). False if the queue is full."""
        if name in self._pending:
            return True
        if len(self._pending) >= self.max_pending:
            return False
        self._pending[name] = None
        return True

    def discard(self, name: str) -> None:
        """`name` was reaped: no hello."""
        self._pending.pop(name, None)

    def due(self, now: float, skip: Callable[[str], bool]) -> list[str]:
        """The names to greet now, oldest first: each costs a token; names for which `skip` says yes leave the
        queue without one. Names left waiting keep their order."""
        bucket = self._bucket
        bucket.refill(now)
        if math.isfinite(now) and now > self._at:
            self._at = now
        pending = self._pending
        greet: list[str] = []
        while pending:
            name = next(iter(pending))
            if skip(name):
                del pending[name]
                continue
            if bucket.tokens < _WHOLE:
                break
            bucket.spend(1.0)
            del pending[name]
            greet.append(name)
        return greet

    def next_deadline(self) -> float:
        """When `due` would have a name to hand out or to skip (`math.inf`: nobody waits). A time already past
        means at once."""
        if not self._pending:
            return math.inf
        tokens = self._bucket.tokens
        if tokens >= _WHOLE:
            return self._at
        return self._at + (1.0 - tokens) / self._bucket.rate.per_second


def hellos_pay(n_live: int, flood_copies: int) -> bool:
    """Whether greeting pays in a cluster of `n_live` live members (ourselves included) whose flood fallback
    sends at most `flood_copies` copies of a write (the rumor queue's retransmit limit): see SCALE."""
    return flood_copies >= FLOOD_SHARE * (n_live - 1)
