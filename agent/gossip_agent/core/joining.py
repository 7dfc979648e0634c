"""When a member joins through its seeds again: the retry and rejoin policy, one copy for every driver.

A join attempt (`Node.join`) pushes our view to each seed address and pulls theirs. Until some other member is
alive in our table the attempt has not worked, and we try again:

- after a failed attempt (every seed's sync failed, or no seed resolved to anyone), with capped exponential
  backoff and jitter (times 0.5..1.5), so a pod that started before its peers (DNS names not there yet) keeps
  trying without hammering the resolver;
- a member that was joined and lost every peer (e.g. a long partition that reaped both sides, with reconnects
  off or exhausted) starts again REJOIN_CHECK after noticing it, and its backoff stays within REJOIN_CHECK:
  it was part of a cluster that is likely still there, and should find it soon after the path heals.

The schedule only decides; the driver resolves the seed names (DNS is I/O) when asked (`JoinSeeds`) and calls
`Node.join(addresses, now)` with the result, which records the attempt here.
"""

from __future__ import annotations

import math

from gossip_agent.core.messages import Address
from gossip_agent.core.rng import Rng

_NEVER = math.inf
# Backoff between failed join attempts: from JOIN_BACKOFF_MIN, doubling, at most JOIN_BACKOFF_MAX (seconds).
JOIN_BACKOFF_MIN = 0.5
JOIN_BACKOFF_MAX = 30.0
# A member that was joined and lost every peer tries the seeds this long after noticing, and then at least
# this often (seconds).
REJOIN_CHECK = 5.0
# A join sync still unanswered this long after its stream timeout counts as failed (the driver reports
# failures with `Node.sync_failed`; this only guards against a report that never comes).
_PENDING_GRACE = 1.0


class JoinSchedule:
    """The join state of one member: attempts, syncs in flight, and when to ask for the next attempt."""

    __slots__ = (
        "_asked",
        "_backoff",
        "_pending",
        "_retry_at",
        "_rng",
        "_stream_timeout",
        "active",
        "attempts",
        "was_joined",
    )

    def __init__(self, rng: Rng, stream_timeout: float) -> None:
        self.active = False        # an attempt was made: this member has seeds
        self.was_joined = False    # some other member was alive at some point
        self.attempts = 0
        self._rng = rng
        self._stream_timeout = stream_timeout
        self._backoff = JOIN_BACKOFF_MIN
        self._pending: dict[Address, float] = {}  # seed address -> when its sync counts as failed
        self._retry_at = _NEVER
        self._asked = False        # the driver was asked for an attempt and has not made it yet

    def attempted(self, targets: list[Address], now: float) -> None:
        """An attempt syncs with `targets` now (none: nothing resolved; retry after the backoff)."""
        self.active = True
        self.attempts += 1
        self._asked = False
        self._pending = {t: now + self._stream_timeout + _PENDING_GRACE for t in targets}
        self._retry_at = _NEVER if targets else now + self._next_backoff()

    def sync_failed(self, to: Address, now: float, joined: bool) -> None:
        if self._pending.pop(to, None) is not None and not self._pending and not joined:
            self._retry_at = now + self._next_backoff()

    def due(self, now: float, joined: bool, leaving: bool) -> bool | None:
        """Whether to ask the driver for an attempt now: None for no, else whether it is a rejoin (we were
        joined before). Call on every tick."""
        if not self.active or leaving:
            return None
        if joined:
            if not self.was_joined or self._retry_at != _NEVER or self._pending:
                self.was_joined = True
                self._backoff = JOIN_BACKOFF_MIN
                self._pending.clear()
                self._retry_at = _NEVER
            return None
        if self._pending:
            expired = [a for a, t in self._pending.items() if t <= now]
            for a in expired:
                del self._pending[a]
            if self._pending:
                return None
            self._retry_at = now + self._next_backoff()
        if self._asked:
            return None
        if self._retry_at == _NEVER:
            # We were joined and have just lost every peer (an attempt always leaves a retry or syncs pending).
            self._retry_at = now + REJOIN_CHECK
        if now < self._retry_at:
            return None
        self._asked = True
        self._retry_at = _NEVER
        return self.was_joined

    def deadline(self, joined: bool) -> float:
        """When `due` has something to do; 0.0 (already due, on any driver's clock) when we have just lost
        every peer and `due` has not scheduled the rejoin yet."""
        if not self.active or joined or self._asked:
            return _NEVER
        if self._pending:
            return min(self._pending.values())
        return 0.0 if self._retry_at == _NEVER else self._retry_at

    def _next_backoff(self) -> float:
        delay = self._backoff * (0.5 + self._rng.random())
        cap = REJOIN_CHECK if self.was_joined else JOIN_BACKOFF_MAX
        self._backoff = min(self._backoff * 2, cap)
        return delay
