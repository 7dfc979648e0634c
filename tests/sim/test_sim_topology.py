"""Simulation proof for issue 13's first layer: Vivaldi converges fast, and near/far choice keeps mixing.

Deterministic (seeded) and small: each test runs the pure cores only, in well under 30 s of CPU.
"""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gossip_agent.core.topology import Candidate, TopologyPolicy, choose_peers
from gossip_agent.core.vivaldi import estimate_rtt
from gossip_agent.sim.topology import (
    Topology,
    choice_cross_zone_share,
    median_relative_error,
    random_geometric,
    simulate_coordinates,
    spread_rounds,
    three_zones,
)

N = 200
SECONDS = 60


@pytest.mark.parametrize("seed", [1, 2])
def test_coordinates_converge_on_three_zones(seed: int) -> None:
    topo = three_zones(N, random.Random(seed))
    run = simulate_coordinates(topo, SECONDS, seed=seed)
    curve = dict(run.curve)
    assert curve[SECONDS] <= 0.15, run.curve
    assert curve[5.0] > 2 * curve[SECONDS]  # it is the samples that did it, not a lucky start
    # Estimates separate the zones: for every member, the median estimate to its own zone is below the
    # median estimate to the others. (The 1 ms inside a zone is below the noise that 20-50 ms cross-zone
    # samples carry, so intra-zone estimates are a few ms, not 1 ms: good enough to tell near from far.)
    coords = run.coordinates()
    same: list[float] = []
    other: list[float] = []
    for i in range(N):
        same.append(statistics.median(estimate_rtt(coords[i], coords[j]) for j in range(N)
                                      if j != i and topo.zones[j] == topo.zones[i]))
        other.append(statistics.median(estimate_rtt(coords[i], coords[j]) for j in range(N)
                                       if topo.zones[j] != topo.zones[i]))
    assert all(s < o for s, o in zip(same, other, strict=True))
    assert statistics.median(same) < 0.005 and min(other) > 0.015


@pytest.mark.parametrize("seed", [1, 2])
def test_coordinates_converge_on_a_random_geometric_network(seed: int) -> None:
    topo = random_geometric(N, random.Random(seed))
    run = simulate_coordinates(topo, SECONDS, seed=seed)
    assert dict(run.curve)[SECONDS] <= 0.15, run.curve


def test_coordinates_without_samples_are_useless() -> None:
    """The error measure is not lenient: unconverged coordinates (no samples) are ~100% off."""
    topo = three_zones(N, random.Random(1))
    run = simulate_coordinates(topo, 0, seed=1)
    assert median_relative_error(topo, run.coordinates()) > 0.9


ZONES_300 = [f"zone-{i % 3}" for i in range(300)]


def test_topology_choice_cuts_cross_zone_choices_at_least_4x() -> None:
    policy = TopologyPolicy()  # the default cross_zone_fraction
    uniform = choice_cross_zone_share(ZONES_300, k=3, policy=None, seed=1, draws=4000)
    aware = choice_cross_zone_share(ZONES_300, k=3, policy=policy, seed=1, draws=4000)
    assert uniform == pytest.approx(2 / 3, abs=0.02)
    assert uniform / aware >= 4.0, (uniform, aware)


def test_epidemic_over_topology_choice_reaches_every_zone_and_member_in_log_n_rounds() -> None:
    policy = TopologyPolicy()
    aware = [spread_rounds(ZONES_300, fanout=3, policy=policy, seed=s) for s in range(10)]
    uniform = [spread_rounds(ZONES_300, fanout=3, policy=None, seed=s) for s in range(10)]
    for r in aware:
        assert r.rounds_to_all is not None and r.rounds_to_all_zones is not None
        assert r.rounds_to_all <= 2 * math.log2(300)
        assert r.rounds_to_all_zones <= 5
    mean_aware = statistics.mean(r.rounds_to_all or 0 for r in aware)
    mean_uniform = statistics.mean(r.rounds_to_all or 0 for r in uniform)
    assert mean_aware <= mean_uniform + 2, (mean_aware, mean_uniform)
    # The sends of the epidemic itself cross zones >= 4x less.
    share_aware = sum(r.cross_zone_sends for r in aware) / sum(r.sends for r in aware)
    share_uniform = sum(r.cross_zone_sends for r in uniform) / sum(r.sends for r in uniform)
    assert share_uniform / share_aware >= 4.0


def test_rounds_grow_logarithmically_with_n() -> None:
    policy = TopologyPolicy()
    rounds = {}
    for n in (30, 300):
        zones = [f"zone-{i % 3}" for i in range(n)]
        runs = [spread_rounds(zones, fanout=3, policy=policy, seed=s).rounds_to_all for s in range(6)]
        assert all(r is not None for r in runs)
        rounds[n] = statistics.mean(r or 0 for r in runs)
    # 10x the members: a few more rounds (log), nowhere near 10x.
    assert rounds[300] - rounds[30] <= 2 * math.log2(10), rounds


def test_zone_free_choice_by_estimated_rtt_also_cuts_cross_zone_choices() -> None:
    """Without zone labels, converged coordinates alone find the near members (what `near` means by RTT)."""
    topo = three_zones(N, random.Random(3))
    coords = simulate_coordinates(topo, SECONDS, seed=3).coordinates()
    policy = TopologyPolicy()
    rng = random.Random(3)
    picked = cross = 0
    for i in range(N):
        cands = [Candidate(f"n{j}", None, estimate_rtt(coords[i], coords[j])) for j in range(N) if j != i]
        for c in choose_peers(cands, 3, local_zone=None, policy=policy, rng=rng):
            picked += 1
            cross += topo.zones[int(c.name[1:])] != topo.zones[i]
    assert (2 / 3) / (cross / picked) >= 4.0, cross / picked


def test_bench_script_runs_and_reports_both_tables() -> None:
    """Smoke run of bench/bench_topology.py with tiny sizes (it asserts no figures, only the shape)."""
    script = Path(__file__).resolve().parents[2] / "bench" / "bench_topology.py"
    out = subprocess.run([sys.executable, str(script), "--nodes", "30", "--seconds", "10", "--every", "5",
                          "--mix-nodes", "30", "--seeds", "2", "--fractions", "0.15", "--protocol-nodes", "30",
                          "--protocol-writes", "3", "--protocol-broadcast", "tree,flood", "--by-type", "--json"],
                         capture_output=True, text=True, timeout=240, check=True)
    report = json.loads(out.stdout)
    assert {r["topology"] for r in report["convergence"]} == {"3-zones", "geometric"}
    assert [r["cross_zone_fraction"] for r in report["choice"]] == ["uniform", "0.15"]
    assert [(r["broadcast"], r["mode"]) for r in report["protocol"]] == [
        ("tree", "random"), ("tree", "aware"), ("flood", "random"), ("flood", "aware")]
    by_type = report["protocol_by_type"]
    assert [(r["broadcast"], r["mode"]) for r in by_type] == [(r["broadcast"], r["mode"]) for r in report["protocol"]]
    assert all(r["probe"] > 0 for r in by_type)
    assert all(r["payload"] > 0 and r["tree_pushes"] > 0 for r in by_type if r["broadcast"] == "tree")


def test_at_1000_members_the_cut_holds_and_mixing_stays_within_a_round() -> None:
    zones = [f"zone-{i % 3}" for i in range(1000)]
    policy = TopologyPolicy()
    aware = [spread_rounds(zones, fanout=3, policy=policy, seed=s) for s in range(10)]
    uniform = [spread_rounds(zones, fanout=3, policy=None, seed=s) for s in range(10)]
    assert all(r.rounds_to_all is not None for r in aware)
    share_aware = sum(r.cross_zone_sends for r in aware) / sum(r.sends for r in aware)
    share_uniform = sum(r.cross_zone_sends for r in uniform) / sum(r.sends for r in uniform)
    assert share_uniform / share_aware >= 4.0
    assert statistics.mean(r.rounds_to_all or 0 for r in aware) <= \
        statistics.mean(r.rounds_to_all or 0 for r in uniform) + 1


@pytest.mark.parametrize("build", [three_zones, random_geometric])
def test_convergence_holds_over_more_seeds(build: Callable[[int, random.Random], Topology]) -> None:
    for seed in range(3, 9):
        topo = build(N, random.Random(seed))
        run = simulate_coordinates(topo, SECONDS, seed=seed, checkpoint_every=SECONDS)
        assert run.curve[-1][1] <= 0.15, (seed, run.curve)


def test_estimates_before_each_probe_track_the_measured_rtt() -> None:
    """What an agent will see as its metric: the estimate just before a probe vs the probe's measured RTT."""
    topo = three_zones(N, random.Random(4))
    run = simulate_coordinates(topo, SECONDS, seed=4)
    samples = dict(run.sample_curve)
    assert samples[5.0] > 0.5 and samples[SECONDS] <= 0.25, run.sample_curve
