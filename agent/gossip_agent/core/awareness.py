"""Lifeguard local health awareness.

A member that misses acks, or sees nacks fail to arrive, is more likely the slow one itself (CPU starved,
a full socket buffer) than its peers. Its health score rises, and it stretches its own probe interval and
timeout by (1 + score), so a sick member stops accusing healthy ones. Successful probes lower the score.
"""

from __future__ import annotations


class Awareness:
    """A bounded integer health score: 0 is healthy, `max_multiplier - 1` the worst."""

    __slots__ = ("_max", "score")

    def __init__(self, max_multiplier: int) -> None:
        self._max = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Move the score by `delta`, clamped to [0, max_multiplier - 1]; returns the new score."""
        self.score = min(max(self.score + delta, 0), self._max - 1)
        return self.score

    def scale(self, duration: float) -> float:
        """A timeout or interval stretched by the current health score."""
        return duration * (self.score + 1)
