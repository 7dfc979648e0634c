"""1,000 members: join through a few seeds, then rumor spread with and without immediate forwarding
(issue 2: a, g). The join is the expensive part (~N² rumor deliveries); it is built once per module."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from gossip_agent.core.messages import MemberState
from gossip_agent.sim import PayloadLog, Simulation

N = 1000


@dataclass
class Joined:
    sim: Simulation
    converged_at: float | None


@pytest.fixture(scope="module")
def joined() -> Joined:
    logs: list[PayloadLog] = []

    def delegate(i: int) -> PayloadLog:
        logs.append(PayloadLog())
        return logs[-1]

    sim = Simulation(N, seed=7, delegate_factory=delegate)
    sim.start_all(seeds=3, spread=5.0)
    return Joined(sim, sim.run_until_condition(sim.converged, timeout=120.0, check_every=0.5))


def test_thousand_nodes_join_through_three_seeds_and_converge(joined: Joined) -> None:
    big = joined.sim
    assert joined.converged_at is not None
    print(f"\n{N} nodes converged at t={joined.converged_at:.2f}s (virtual; starts spread over 5 s)")
    assert big.converged()
    assert big.views("n500") == {MemberState.ALIVE: N - 1}
    assert big.false_positives == []


def spread(sim: Simulation, payload: bytes) -> tuple[float, float]:
    """Broadcast `payload` from one member: virtual seconds until half of the members, and until every
    member, had it (the origin counts as having it at once)."""
    origin = sim.live()[len(payload) * 37 % N]
    log = sim.delegates[origin]
    assert isinstance(log, PayloadLog)
    log.on_state_rumor(payload, sim.now)
    t0 = sim.now
    sim.broadcast(origin, payload)
    logs = [d for d in sim.delegates if isinstance(d, PayloadLog)]
    done = sim.run_until_condition(lambda: all(payload in d.first_seen for d in logs), timeout=60.0,
                                   check_every=0.005)
    assert done is not None, "rumor did not reach every member"
    times = sorted(d.first_seen[payload] - t0 for d in logs)
    return times[len(times) // 2], times[-1]


def test_rumor_reaches_all_members_much_faster_with_immediate_forwarding(joined: Joined) -> None:
    assert joined.converged_at is not None
    big = joined.sim
    big.run_for(20.0)  # let the join's rumors drain from the queues
    fwd_half, fwd_all = spread(big, b"with-forwarding")
    big.reconfigure(dataclasses.replace(big.config, gossip=dataclasses.replace(big.config.gossip,
                                                                                 immediate_forward=False)))
    big.run_for(5.0)
    tick_half, tick_all = spread(big, b"gossip-ticks-only")
    print(f"\nrumor to {N} members, half / all: immediate forwarding {fwd_half * 1000:.0f} / "
          f"{fwd_all * 1000:.0f} ms; gossip ticks only {tick_half * 1000:.0f} / {tick_all * 1000:.0f} ms")
    # Forwarding is a one-shot push epidemic: most members have it within a few link latencies, the last
    # few percent wait for a gossip tick. Without it every hop waits for a tick.
    assert fwd_half * 5 < tick_half
    assert fwd_all < tick_all


def test_thousand_member_cluster_started_converged_detects_a_crash_everywhere() -> None:
    """Steady state at 1,000 members without paying for a join (Simulation.start_joined)."""
    sim = Simulation(N, seed=9)
    sim.start_joined()
    assert sim.converged()
    sim.run_for(5.0)
    victim = sim.live()[123]
    sim.crash(victim)
    detected = sim.run_until_condition(lambda: sim.detection_time(victim) is not None, timeout=40.0,
                                       check_every=0.25)
    assert detected is not None
    cfg = sim.config.membership
    # Noticed within two probe intervals (aligned probing) plus the probe's own interval, dead after the
    # Lifeguard minimum 4·log10(1000)·1 s = 12 s, and spread within a second.
    bound = 3 * cfg.probe_interval + cfg.suspicion_mult * 3 * cfg.probe_interval + 1.0
    elapsed = sim.detection_time(victim)
    assert elapsed is not None and elapsed <= bound, (elapsed, bound)
    assert sim.false_positives == []
    assert sim.views(victim)[MemberState.DEAD] == N - 1
