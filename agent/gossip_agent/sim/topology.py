"""Standalone topology simulations: Vivaldi convergence and epidemic mixing over topology-aware choice.

Not the membership simulator (`sim/cluster.py`): these drivers exercise only the pure cores
`core/vivaldi.py` and `core/topology.py`, so 200 nodes x 60 virtual seconds run in well under a second.

- `three_zones` / `random_geometric` build a synthetic ground truth: an RTT matrix (seconds) and zone labels.
- `simulate_coordinates` samples RTTs the way SWIM probes would: every virtual second each node probes one
  uniformly random peer at a random phase within the second, measures the base RTT plus jitter (and now and
  then a delayed ack), and updates its coordinate with the peer's coordinate as it was at that moment (the
  one the ack would carry). It records the median relative error of the estimates over all pairs.
- `spread_rounds` runs a push epidemic in rounds: every informed node sends to k peers chosen by
  `choose_peers`, and counts rounds until every node (and every zone) is informed and how many sends crossed
  zones.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gossip_agent.core.topology import Candidate, TopologyPolicy, choose_peers
from gossip_agent.core.vivaldi import Coordinate, VivaldiClient, VivaldiConfig, estimate_rtt

#: Default inter-zone RTTs (seconds) of the 3-zone topology: a-b 20 ms, a-c 35 ms, b-c 50 ms.
DEFAULT_INTER_ZONE = {(0, 1): 0.020, (0, 2): 0.035, (1, 2): 0.050}


@dataclass(frozen=True, slots=True)
class Topology:
    """Ground truth: `rtt[i][j]` is the base RTT in seconds between nodes i and j; `zones[i]` a zone label."""

    rtt: list[list[float]]
    zones: list[str]

    @property
    def size(self) -> int:
        return len(self.zones)


def three_zones(n: int, rng: random.Random, *, intra: float = 0.001,
                inter: dict[tuple[int, int], float] | None = None, zones: int = 3) -> Topology:
    """`n` nodes round-robin over `zones` zones; `intra` s inside a zone, `inter[(za, zb)]` s between zones.

    Each pair's RTT varies by +-10% around its class value (links are not identical), symmetric.
    """
    inter = inter if inter is not None else DEFAULT_INTER_ZONE
    zone_of = [i % zones for i in range(n)]
    rtt = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            za, zb = sorted((zone_of[i], zone_of[j]))
            base = intra if za == zb else inter[(za, zb)]
            rtt[i][j] = rtt[j][i] = base * rng.uniform(0.9, 1.1)
    return Topology(rtt, [f"zone-{chr(ord('a') + z)}" for z in zone_of])


def random_geometric(n: int, rng: random.Random, *, side: float = 0.100,
                     access: tuple[float, float] = (0.0002, 0.002), zones: int = 3) -> Topology:
    """`n` nodes uniform in a `side` x `side` s square; RTT = distance + both access delays.

    Zones are vertical stripes of the square (so a zone is geographically coherent, as in a cloud region).
    """
    points = [(rng.uniform(0, side), rng.uniform(0, side)) for _ in range(n)]
    delay = [rng.uniform(*access) for _ in range(n)]
    rtt = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            rtt[i][j] = rtt[j][i] = math.dist(points[i], points[j]) + delay[i] + delay[j]
    labels = [f"zone-{chr(ord('a') + min(int(x / side * zones), zones - 1))}" for x, _ in points]
    return Topology(rtt, labels)


@dataclass(frozen=True, slots=True)
class Jitter:
    """How a probe's measured RTT deviates from the base: base x (1 + U(0, relative)) + U(0, absolute),
    and with probability `spike_probability` an extra U(0, spike_factor) x base (a late ack).

    Queueing only ever adds delay, so the noise is one-sided: the measured median sits ~5% above the base
    RTT, and the error figures (against the base) include that bias. `HEAVY_JITTER` is a harsher profile
    for sensitivity rows in the bench.
    """

    relative: float = 0.10
    absolute: float = 0.0001
    spike_probability: float = 0.01
    spike_factor: float = 2.0

    def sample(self, base: float, rng: random.Random) -> float:
        rtt = base * (1.0 + rng.uniform(0.0, self.relative)) + rng.uniform(0.0, self.absolute)
        if rng.random() < self.spike_probability:
            rtt += base * rng.uniform(0.0, self.spike_factor)
        return rtt


HEAVY_JITTER = Jitter(relative=0.10, absolute=0.0001, spike_probability=0.02, spike_factor=4.0)


def relative_errors(topology: Topology, coords: Sequence[Coordinate],
                    pairs: Sequence[tuple[int, int]] | None = None) -> list[float]:
    """|estimate - base| / base for every pair i < j (or the given pairs)."""
    n = topology.size
    chosen = pairs if pairs is not None else [(i, j) for i in range(n) for j in range(i + 1, n)]
    return [abs(estimate_rtt(coords[i], coords[j]) - topology.rtt[i][j]) / topology.rtt[i][j]
            for i, j in chosen]


def median_relative_error(topology: Topology, coords: Sequence[Coordinate]) -> float:
    return statistics.median(relative_errors(topology, coords))


@dataclass(slots=True)
class CoordinateRun:
    """Result of `simulate_coordinates`: (virtual second, median relative error) checkpoints and the clients.

    `sample_curve` is what an agent can observe about itself: per checkpoint window, the median of
    |estimate - measured| / measured over the probes of that window, the estimate taken just before the
    sample was applied (the future "RTT estimate vs measured" metric).
    """

    curve: list[tuple[float, float]] = field(default_factory=list)
    sample_curve: list[tuple[float, float]] = field(default_factory=list)
    clients: list[VivaldiClient] = field(default_factory=list)

    def coordinates(self) -> list[Coordinate]:
        return [c.coordinate for c in self.clients]


def simulate_coordinates(topology: Topology, seconds: int, *, seed: int = 1, jitter: Jitter | None = None,
                         config: VivaldiConfig | None = None, checkpoint_every: int = 5,
                         on_checkpoint: Callable[[float, list[Coordinate]], None] | None = None) -> CoordinateRun:
    """Each node probes one random peer per virtual second; returns the error curve and the final clients."""
    rng = random.Random(seed)
    jitter = jitter or Jitter()
    n = topology.size
    clients = [VivaldiClient(config) for _ in range(n)]
    names = [f"node-{i}" for i in range(n)]
    run = CoordinateRun(clients=clients)
    window: list[float] = []
    for second in range(1, seconds + 1):
        # Probes of one second, in the order of their random phase within it.
        probes = sorted((rng.random(), i) for i in range(n))
        for _, i in probes:
            j = rng.randrange(n - 1)
            j = j + 1 if j >= i else j
            measured = jitter.sample(topology.rtt[i][j], rng)
            window.append(abs(estimate_rtt(clients[i].coordinate, clients[j].coordinate) - measured) / measured)
            clients[i].update(names[j], clients[j].coordinate, measured, rng)
        if second % checkpoint_every == 0 or second == seconds:
            coords = run.coordinates()
            run.curve.append((float(second), median_relative_error(topology, coords)))
            run.sample_curve.append((float(second), statistics.median(window)))
            window = []
            if on_checkpoint is not None:
                on_checkpoint(float(second), coords)
    return run


@dataclass(frozen=True, slots=True)
class SpreadResult:
    """One push epidemic: rounds until all nodes / all zones knew, and the sends by class."""

    rounds_to_all: int | None
    rounds_to_all_zones: int | None
    sends: int
    cross_zone_sends: int

    @property
    def cross_zone_share(self) -> float:
        return self.cross_zone_sends / self.sends if self.sends else 0.0


def spread_rounds(zones: Sequence[str], *, fanout: int, policy: TopologyPolicy | None, seed: int,
                  origin: int = 0, max_rounds: int = 200) -> SpreadResult:
    """Push epidemic from `origin`: each round, every informed node sends to `fanout` chosen peers.

    `policy=None` is the baseline: uniform random choice. Sends stop when everyone knows (all rounds count
    every informed node's sends, as a rumor would be retransmitted; this compares choices, not protocols).
    """
    rng = random.Random(seed)
    n = len(zones)
    everyone = [Candidate(f"node-{i}", zones[i]) for i in range(n)]
    index = {c.name: i for i, c in enumerate(everyone)}
    others = [everyone[:i] + everyone[i + 1:] for i in range(n)]
    all_zones = set(zones)
    informed = {origin}
    rounds_to_zones: int | None = 0 if len(all_zones) == 1 else None
    sends = cross = 0
    for round_no in range(1, max_rounds + 1):
        newly: set[int] = set()
        for i in sorted(informed):
            if policy is None:
                picks = rng.sample(others[i], min(fanout, n - 1))
            else:
                picks = choose_peers(others[i], fanout, local_zone=zones[i], policy=policy, rng=rng)
            for p in picks:
                sends += 1
                cross += p.zone != zones[i]
                newly.add(index[p.name])
        informed |= newly
        if rounds_to_zones is None and {zones[i] for i in informed} == all_zones:
            rounds_to_zones = round_no
        if len(informed) == n:
            return SpreadResult(round_no, rounds_to_zones, sends, cross)
    return SpreadResult(None, rounds_to_zones, sends, cross)


def choice_cross_zone_share(zones: Sequence[str], *, k: int, policy: TopologyPolicy | None, seed: int,
                            draws: int) -> float:
    """Share of chosen peers in another zone over `draws` choices of k by random members."""
    rng = random.Random(seed)
    n = len(zones)
    everyone = [Candidate(f"node-{i}", zones[i]) for i in range(n)]
    picked = cross = 0
    for _ in range(draws):
        i = rng.randrange(n)
        others = everyone[:i] + everyone[i + 1:]
        if policy is None:
            picks = rng.sample(others, k)
        else:
            picks = choose_peers(others, k, local_zone=zones[i], policy=policy, rng=rng)
        picked += len(picks)
        cross += sum(p.zone != zones[i] for p in picks)
    return cross / picked if picked else 0.0
