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

from collections.abc import Callable

from gossip_agent.core.token_bucket import KeyedTokenBuckets, Rate, TokenBucket

CRITICAL_DOWNGRADED = "critical_downgraded"
"""The HTTP stats key (io/http_limits.py HttpCollector: `gossip_critical_downgraded_total`)."""
MAX_CLIENTS = 1024
"""Clients whose buckets are remembered; the least recently seen is forgotten past this."""
CLIENT_SHARE = 0.5
"""The share of the agent's critical rate one client may take."""


def _rate(per_second: float) -> Rate:
    return Rate(per_second, max(1.0, per_second))  # a burst of one second's worth, at least one write


class CriticalLimit:
    """`allow(client)`: whether this critical write stays critical (else it is written as a normal one). The
    buckets are core/token_bucket.py's: one for the agent, one per client (at most MAX_CLIENTS, LRU)."""

    def __init__(self, per_second: float, clock: Callable[[], float]) -> None:
        self.per_second = per_second
        self._clock = clock
        self._agent: TokenBucket | None = None  # made at the first critical write (the clock may not run before)
        self._clients: KeyedTokenBuckets[str] = KeyedTokenBuckets(MAX_CLIENTS)
        self.downgraded = 0
        self._rates: tuple[float, Rate, Rate] | None = None  # (per_second they were built for, agent, client)

    def _agent_and_client_rates(self) -> tuple[Rate, Rate]:
        """The agent's and one client's rates, built again only when `per_second` changed (not per write)."""
        rates = self._rates
        if rates is None or rates[0] != self.per_second:
            rates = self._rates = (self.per_second, _rate(self.per_second), _rate(self.per_second * CLIENT_SHARE))
        return rates[1], rates[2]

    def allow(self, client: str) -> bool:
        if self.per_second <= 0:
            return True
        now = self._clock()
        agent_rate, client_rate = self._agent_and_client_rates()
        if not self._clients.take(client, 1.0, client_rate, now):
            self.downgraded += 1
            return False
        if self._agent is None:
            self._agent = TokenBucket(agent_rate, now)
        self._agent.rate = agent_rate
        if not self._agent.take(1.0, now):
            self._clients.give(client, 1.0)  # the agent's bound refused it: the client's share is not spent
            self.downgraded += 1
            return False
        return True

    def refund(self, client: str) -> None:
        """A write `allow` kept critical was not made after all (refused, or a delete of no key): its place
        goes back to the client and the agent (else such requests spend the critical rate and write nothing)."""
        if self.per_second <= 0:
            return
        self._clients.give(client, 1.0)
        if self._agent is not None:
            self._agent.give(1.0)
