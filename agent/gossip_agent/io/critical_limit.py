"""How many writes per second may jump the queues as critical (`?priority=critical`, `gossipctl put --critical`).

WHY. A critical write's rumor goes ahead of every other rumor, to twice the fanout, and may spend the quarter of
the send budget kept for critical rumors (core/send_budget.py). Any client with write access may ask for it, so
one client writing everything as critical (a bug, or on purpose) made every write critical: the reserve and
the queue's head were taken, and the membership changes and rare urgent writes the class exists for waited
behind its flood. Users expect "critical" to stay fast for the writes that need it, and a write to succeed
whatever its priority. So:

- at most `state.criticalWritesPerSecond` writes a second are critical at this agent (a token bucket, burst of
  one second's worth), and one client (a bearer token, else a client address) takes at most half of that;
- a write over the limit is written all the same, as a normal one: never refused, never lost. The answer says
  so (`X-Gossip-Priority: normal`; a write taken as critical answers `critical`) and the downgrade is counted
  (`gossip_critical_downgraded_total`);
- 0 switches the limit off (every write asking for it is critical).

Who may write at all is the API's tokens' business (the write scope, io/auth.py); this only bounds what one
writer's priority costs the others. Clients beyond MAX_CLIENTS are forgotten oldest first (memory stays
bounded; a forgotten client starts again with a full bucket of its share, still inside the agent's bound).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

CRITICAL_DOWNGRADED = "critical_downgraded"
"""The HTTP stats key (io/http_limits.py HttpCollector: `gossip_critical_downgraded_total`)."""
MAX_CLIENTS = 1024
"""Clients whose buckets are remembered; the least recently seen is forgotten past this."""
CLIENT_SHARE = 0.5
"""The share of the agent's critical rate one client may take."""


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at

    def take(self, rate: float, burst: float, now: float) -> bool:
        self.tokens = min(burst, self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def give_back(self) -> None:
        self.tokens += 1.0


class CriticalLimit:
    """`allow(client)`: whether this critical write stays critical (else it is written as a normal one)."""

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self.per_second = per_second
        self._clock = clock
        self._agent: _Bucket | None = None  # made at the first critical write (the clock may not run before)
        self._clients: OrderedDict[str, _Bucket] = OrderedDict()
        self.downgraded = 0

    @staticmethod
    def _burst(rate: float) -> float:
        return max(1.0, rate)  # one second's worth, at least one write

    def allow(self, client: str) -> bool:
        rate = self.per_second
        if rate <= 0:
            return True
        now = self._clock()
        share = rate * CLIENT_SHARE
        bucket = self._clients.get(client)
        if bucket is None:
            bucket = self._clients[client] = _Bucket(self._burst(share), now)
            if len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client)
        if not bucket.take(share, self._burst(share), now):
            self.downgraded += 1
            return False
        if self._agent is None:
            self._agent = _Bucket(self._burst(rate), now)
        if not self._agent.take(rate, self._burst(rate), now):
            bucket.give_back()  # the agent's bound refused it: the client's share is not spent
            self.downgraded += 1
            return False
        return True

    def refund(self, client: str) -> None:
        """A write `allow` kept critical was not made after all (refused, or a delete of no key): its place
        goes back to the client and the agent (else such requests spend the critical rate and write nothing)."""
        if self.per_second <= 0:
            return
        bucket = self._clients.get(client)
        if bucket is not None:
            bucket.give_back()
        if self._agent is not None:
            self._agent.give_back()
