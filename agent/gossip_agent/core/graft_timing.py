"""How long the broadcast tree waits for an announced payload before it grafts it: learnt, bounded, pure.

Why: a fixed graft timeout (half a gossip interval) is right for a quiet cluster, where the eager copy of a
payload arrives before any lazy announcement of it and a payload announced but missing means a lost eager link.
Under load it is wrong: when agents are CPU-bound, eager copies arrive seconds late, the announcements of
members that got the payload sooner overtake them, the timer fires and we graft a payload that was merely late.
The graft's answer and the late eager copy then arrive twice, the duplicates prune tree links, the tree churns
and more payloads are grafted: at N=50 and 100 writes/s of 1 KiB, ~5,700 graft deliveries and ~14,500 prunes
in one 10-second run, each one work for an agent that was already behind.

So each member learns how late its eager copies actually come: every time an eager copy arrives after an
announcement of the same payload (with or without a graft meanwhile) the delay since that first announcement
is a sample. Under pressure (grafts and late eager copies together more than `PRESSURE` of the new payloads,
decayed averages: the overload that feeds itself) the wait is a high quantile (`QUANTILE`) of the recent
samples (at most `WINDOW`, none older than `MAX_AGE` seconds), never below the configured timeout nor above
`cap` (a lost link is still repaired within a few gossip intervals under load; anti-entropy remains the safety
net): waiting costs a late payload some latency, a needless graft costs work at two overloaded members and the
duplicates that follow.

Without pressure the wait is the configured timeout, samples or not. Why: in a quiet cluster with packet loss
some eager copies are late too, because a member up the tree lost its copy and grafted it; those delays
(a graft timeout and a lazy interval or so) taught every member below it to wait as long, level after level.
In the simulator (N=150, 5 % loss) that took write->all p99 from 0.9 to 3.2 s. There a graft is the repair it
is meant to be, and cheap.

The module reads no clock (times come in) and keeps O(WINDOW) floats.
"""

from __future__ import annotations

import math
from collections import deque

WINDOW = 64
"""Recent samples kept: enough for a stable 90th percentile, few enough to follow a change within seconds."""
MAX_AGE = 10.0
"""Samples older than this (seconds) are forgotten: after an overload ends the wait falls back to the base."""
QUANTILE = 0.9
"""The share of late eager copies we would rather wait for than graft."""
MIN_SAMPLES = 4
"""Fewer fresh samples than this: the base timeout (one late copy is no pattern)."""
PRESSURE = 0.2
"""Graft pressure: grafts and late eager copies per new payload (decayed averages) above which the learnt wait
applies. A quiet cluster with 5 % loss grafts ~3 % of its payloads (simulator, N=150); overloaded agents at
N=50 and 100 writes/s grafted ~40 %."""
PRESSURE_FLOOR = 50.0
"""The least payload count the pressure is taken over: at 10 writes/s a member sees ~20 payloads within
PRESSURE_TAU, and two or three grafts after a lost packet are no overload."""
PRESSURE_TAU = 2.0
"""Time constant (seconds) of the decayed averages behind the graft pressure."""


class GraftTiming:
    """One member's graft wait. `base`: the configured graft timeout (the least wait, and the wait without
    pressure); `cap`: the most."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(base, cap)
        self._samples: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (observed at, delay)
        self._learnt: float | None = None  # the quantile of the samples, None: to be computed again
        self._grafts = 0.0  # decayed counts since `_at`
        self._payloads = 0.0
        self._at = -math.inf
        self.samples = 0  # late eager copies observed in all (the Node counts them)

    def late_eager(self, delay: float, now: float) -> None:
        """An eager copy arrived `delay` seconds after the first announcement of its payload."""
        if not math.isfinite(delay) or delay < 0.0:
            return
        self._samples.append((now, delay))
        self._learnt = None
        self.samples += 1
        self.grafted(now)  # pressure: a late copy is one a graft would have raced (or did)

    def grafted(self, now: float) -> None:
        """A graft of ours (we asked an announcer for a payload) whose payload then came: counts toward the graft
        pressure (one for an id that never comes is no sign of load: Plumtree counts it when its payload arrives)."""
        self._decay(now)
        self._grafts += 1.0

    def payload(self, now: float) -> None:
        """A payload new to us arrived (by any path): the graft pressure's denominator."""
        self._decay(now)
        self._payloads += 1.0

    def pressure(self, now: float) -> bool:
        """Whether grafts and late eager copies came for more than PRESSURE of the recent payloads."""
        self._decay(now)
        return self._grafts > PRESSURE * max(self._payloads, PRESSURE_FLOOR)

    def timeout(self, now: float) -> float:
        """How long to wait now after an announcement before grafting its payload."""
        learnt = self._quantile(now)
        if learnt <= self.base or not self.pressure(now):
            return self.base
        return min(learnt, self.cap)

    def extra(self, now: float) -> float:
        """The learnt wait beyond the base timeout (0.0 in a quiet cluster)."""
        return self.timeout(now) - self.base

    def _quantile(self, now: float) -> float:
        samples = self._samples
        while samples and samples[0][0] + MAX_AGE < now:
            samples.popleft()
            self._learnt = None
        if len(samples) < MIN_SAMPLES:
            return 0.0
        if self._learnt is None:
            delays = sorted(d for _, d in samples)
            self._learnt = delays[min(len(delays) - 1, int(QUANTILE * len(delays)))]
        return self._learnt

    def _decay(self, now: float) -> None:
        if now <= self._at:
            return
        if self._at != -math.inf:
            keep = math.exp(-(now - self._at) / PRESSURE_TAU)
            self._grafts *= keep
            self._payloads *= keep
        self._at = now
