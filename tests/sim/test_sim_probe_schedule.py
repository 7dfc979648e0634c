"""Aligned probing at cluster scale: each member probed once per interval, so crashes are noticed sooner.

The shuffled round-robin (memberlist's) leaves the wait for a crashed member's first probe roughly
exponential; aligned rounds bound it by two intervals. Both run here on the same seeds for comparison."""

from __future__ import annotations

import math
from collections import Counter

from gossip_agent.core.effects import EventKind, Send
from gossip_agent.core.messages import Ping
from gossip_agent.sim import Simulation

from .conftest import converged_cluster


def record_probes(sim: Simulation) -> list[tuple[float, str, str]]:
    """(time, prober, target) of every direct probe the simulation sends from now on."""
    probes: list[tuple[float, str, str]] = []

    def tap(now: float, i: int, e: Send) -> None:
        first = e.packet.messages[0] if e.packet.messages else None
        if isinstance(first, Ping) and first.source == e.packet.sender:
            probes.append((now, e.packet.sender, first.target))

    sim.on_send.append(tap)
    return probes


def probes_per_round(schedule: str, seed: int) -> Counter[tuple[str, int]]:
    sim = converged_cluster(30, seed=seed, membership={"probe_schedule": schedule})
    sim.run_for(40.0)  # past the join's follow-up syncs: a stable view everywhere
    start = math.ceil(sim.now)
    probes = record_probes(sim)
    sim.run_for(20.0)
    counts: Counter[tuple[str, int]] = Counter()
    for t, _, target in probes:
        r = math.floor(t)
        if start <= r < start + 19:
            counts[(target, r)] += 1
    for name in sim.names:
        for r in range(start, start + 19):
            counts.setdefault((name, r), 0)
    return counts


def test_aligned_rounds_probe_every_member_exactly_once_per_interval() -> None:
    counts = probes_per_round("aligned", seed=3)
    assert set(counts.values()) == {1}


def test_shuffled_order_leaves_members_unprobed_for_whole_intervals() -> None:
    counts = probes_per_round("shuffled", seed=3)
    assert 0 in counts.values() and max(counts.values()) >= 2


def first_suspicion_delays(schedule: str, crashes: int = 12) -> list[float]:
    """Seconds from each crash to the first member suspecting it, one crash at a time."""
    sim = converged_cluster(40, seed=11, membership={"probe_schedule": schedule, "tcp_fallback_probe": False})
    delays = []
    for k in range(crashes):
        sim.run_for(3.0 + 0.37 * k)  # crash at varied phases of the round
        victim = sim.live()[k * 3 % len(sim.live())]
        sim.crash(victim)
        t0 = sim.now
        sim.run_for(12.0)
        seen = sim.seen.get((EventKind.SUSPECT, victim), {})
        delays.append(min(t for t in seen.values() if t >= t0) - t0)
        assert sim.detection_time(victim) is not None
    return delays


def test_aligned_probing_notices_every_crash_within_two_intervals_plus_the_probe_window() -> None:
    aligned = first_suspicion_delays("aligned")
    # Probed within < 2 intervals, suspected when that probe's interval ends: < 3 s.
    assert max(aligned) < 3.0, aligned
    # On average not later than the shuffled order (here within half a second over the 12 crashes): the sure
    # claim is the bound above. The shuffled waits are heavy-tailed, and their sum over 12 crashes follows the
    # seeded stream: 27.1 s against aligned's 18.8 s, then 19.1 s against 19.1 s once each node drew one more
    # number at start (its probe-number key, core/probe_seq.py).
    shuffled = first_suspicion_delays("shuffled")
    assert sum(aligned) < sum(shuffled) + 0.5, (aligned, shuffled)


def test_skewed_clocks_degrade_to_shuffled_like_collisions_never_to_missed_failures() -> None:
    """Wall clocks seconds apart put members in different rounds: probes collide, nothing else breaks."""
    sim = converged_cluster(30, seed=5, clock_skew=5.0)
    sim.run_for(40.0)
    start = math.ceil(sim.now)
    probes = record_probes(sim)
    sim.run_for(29.0)
    per_target = Counter(target for t, _, target in probes if start <= t < start + 29)
    assert set(per_target) == set(sim.names)  # everyone still probed, ~once per interval on average
    assert max(per_target.values()) < 2 * 29
    victim = sim.live()[7]
    sim.crash(victim)
    assert sim.run_until_condition(lambda: sim.detection_time(victim) is not None, timeout=20.0) is not None
    assert sim.false_positives == []
