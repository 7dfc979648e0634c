"""Whom pull mode asks next: every member in turn, in an order shuffled afresh each cycle.

WHY. A pull request goes to one peer at a time. Picked at random, a member asked a given holder only after a
geometric number of requests (at N = 8, one in seven on average, but one in ten waited 15 requests or more),
so the last members to ask a holder set the write -> all tail; and a rumor waits in a holder's queue until
every other member has asked it (a coupon collector: about 2.6 rounds of the whole cluster at N = 8), which
kept queues busy for many seconds after a burst. In turn, each member asks every other within one cycle of
N - 1 requests: a holder is found within one cycle, and a queue is done with once a cycle has passed.
Shuffled afresh each cycle (as SWIM's probe order), so members do not move in lock-step. Pure: the Rng
comes in; O(1) amortised per pick (one shuffle of the names per cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gossip_agent.core.rng import Rng


class PullOrder:
    """The rest of the current cycle of names to ask, last one next."""

    __slots__ = ("_cycle",)

    def __init__(self) -> None:
        self._cycle: list[str] = []

    def next(self, names: Sequence[str], rng: Rng, eligible: Callable[[str], bool]) -> str | None:
        """The next name of the cycle that is `eligible` now (members who left or were reaped since the cycle
        began are skipped); a new cycle over `names` once this one is done. None: nobody is eligible."""
        for fresh in (False, True):
            if fresh:
                self._cycle = list(names)
                rng.shuffle(self._cycle)
            cycle = self._cycle
            while cycle:
                name = cycle.pop()
                if eligible(name):
                    return name
        return None

    def __len__(self) -> int:
        return len(self._cycle)
