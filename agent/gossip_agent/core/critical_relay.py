"""How many critical writes one member may make us relay as critical: a token bucket per sending member.

WHY. A critical write's rumor jumps every queue, goes to more peers and may spend the send budget's critical
reserve at every member it reaches. The HTTP API rations the class where writes are made
(`state.criticalWritesPerSecond`, io/critical_limit.py), but a member relayed every critical rumor that reached
it as critical, whoever made it: a peer sending its writes as critical rumors straight over UDP (any host that
joins a plaintext cluster, or one faulty member) made every member put each one ahead of everything (300 in
0.3 s, all relayed as critical). So each member bounds what it relays as critical per member it first got such
rumors from:

- a bucket per sending member: RELAY_FACTOR times the agent rate a second, a burst of one second of the agent
  rate. An honest writer's own stream is bounded by its API at the agent rate with that burst, so it always fits
  (with slack for network jitter); a relay on the tree passing on other members' critical writes too gets twice
  that rate before any is downgraded. Only a rumor new here is counted (its first copy, from whoever delivered
  it): duplicates cost nothing and relay nothing anyway;
- a rumor over the bound is still applied and relayed, as a normal state rumor: nothing lost, only its priority
  (counted by the caller, `critical_downgraded_relay`);
- packets not from their named sender's host (a forged sender name) share one bucket, so made-up names get no
  fresh buckets; at most MAX_SOURCES members' buckets are remembered, the least recently used forgotten first
  (a forgotten member starts again with a full bucket);
- 0 switches it off, as it does the API's limit.

Membership changes (suspicions, deaths, refutations) are critical too and not rationed here: they are bounded
by the membership protocol itself. Pure: the caller passes `now` and the rate.
"""

from __future__ import annotations

from gossip_agent.core.token_bucket import KeyedTokenBuckets, Rate

RELAY_FACTOR = 2.0
"""A sending member's critical rate, in agent rates (`state.criticalWritesPerSecond`)."""
MAX_SOURCES = 1024
"""Members whose buckets are remembered; the least recently used is forgotten past this."""


class CriticalRelay:
    """`admit(source, per_second, now)`: whether a new critical rumor first received from `source` (None: a
    sender whose packet did not come from its host) is relayed as critical (else as a normal one). The buckets
    are core/token_bucket.py's, at most MAX_SOURCES (LRU)."""

    def __init__(self) -> None:
        self._buckets: KeyedTokenBuckets[str | None] = KeyedTokenBuckets(MAX_SOURCES)

    def admit(self, source: str | None, per_second: float, now: float) -> bool:
        if per_second <= 0:
            return True
        return self._buckets.take(source, 1.0, Rate(RELAY_FACTOR * per_second, max(1.0, float(per_second))), now)

    def __len__(self) -> int:
        return len(self._buckets)
