"""Lifeguard dynamic suspicion timeouts.

A suspected member is declared dead only after a timeout. The timeout starts long (`max`) and shrinks
towards `min` as other members independently confirm the suspicion: one accuser might be the sick one,
k accusers rarely are. The formula is kept apart from timer plumbing so it can be tested on its own.
"""

from __future__ import annotations

import math


def suspicion_min_timeout(suspicion_mult: int, n_members: int, probe_interval: float) -> float:
    """min = mult · max(1, log10 N) · probe interval (memberlist's suspicionTimeout)."""
    scale = max(1.0, math.log10(max(1, n_members)))
    return suspicion_mult * scale * probe_interval


def suspicion_timeout(min_timeout: float, max_timeout: float, confirmations: int, expected: int) -> float:
    """Timeout after `confirmations` of `expected` independent confirmations; falls log-wise from max to min."""
    if expected < 1:
        return min_timeout
    frac = math.log(confirmations + 1) / math.log(expected + 1)
    return max(min_timeout, max_timeout - (max_timeout - min_timeout) * frac)


class Suspicion:
    """One suspected member: who accused it, and when it is to be declared dead."""

    __slots__ = ("_confirmers", "expected", "incarnation", "max_timeout", "min_timeout", "started")

    def __init__(self, *, incarnation: int, accuser: str, started: float, min_timeout: float,
                 max_timeout: float, expected: int) -> None:
        self.incarnation = incarnation
        self.started = started
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.expected = expected
        # The first accuser starts the timer; only further, distinct members count as confirmations.
        self._confirmers: set[str] = {accuser}

    @property
    def confirmations(self) -> int:
        return len(self._confirmers) - 1

    def confirm(self, accuser: str) -> bool:
        """Record an independent confirmation; True if it was new (it shortens the timeout)."""
        if accuser in self._confirmers or self.confirmations >= self.expected:
            return False
        self._confirmers.add(accuser)
        return True

    def deadline(self) -> float:
        return self.started + suspicion_timeout(self.min_timeout, self.max_timeout, self.confirmations,
                                                self.expected)
