"""Cross-zone estimates under zone-aware probing: far samples weigh more, and a rare peer's late ack is filtered.

Zone-aware probing (core/probe_order.py) takes about one RTT sample in five across zones. Without a weight the
many near samples hold each zone together while the few far ones move the zones apart slowly, so cross-zone
estimates come out short for a minute (the agents' bench measured 28.6 ms against 21-51 ms). These tests run
the pure cores only (core/vivaldi.py, core/topology_state.FarSampleWeight) in a few thousand samples: fast
and deterministic (seeded RNG, no clock).
"""

from __future__ import annotations

import dataclasses
import math
import random
import statistics

import pytest

from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.messages import Alive, NetCoordinate, Packet
from gossip_agent.core.node import Node
from gossip_agent.core.topology_state import MAX_FAR_WEIGHT, ZONE_META_KEY, FarSampleWeight
from gossip_agent.core.vivaldi import Coordinate, VivaldiClient, VivaldiConfig, estimate_rtt, repeated_step
from tests.core.test_node import cfg

CFG = VivaldiConfig()
#: 3 zones, 1 ms inside, 20 / 35 / 50 ms between (the simulator's and the namespace bench's topology).
INTER = {(0, 1): 0.020, (0, 2): 0.035, (1, 2): 0.050}
INTRA = 0.001


def rtt_between(za: int, zb: int) -> float:
    return INTRA if za == zb else INTER[(min(za, zb), max(za, zb))]


def zone_aware_run(n: int, seconds: int, *, weighted: bool, seed: int = 1) -> float:
    """N members in 3 zones, each probing one peer per second as zone-aware probing does (every third round
    over all members, the others inside the zone), each sample timed with up to 10% jitter and paired
    with the peer's coordinate of that moment; returns the median relative error of the cross-zone
    estimates at the end."""
    rng = random.Random(seed)
    zone = [i % 3 for i in range(n)]
    clients = [VivaldiClient(CFG) for _ in range(n)]
    weights = [FarSampleWeight() for _ in range(n)]
    for second in range(seconds):
        far_round = second % 3 == 2
        for i in rng.sample(range(n), n):
            peers = [j for j in range(n) if j != i and (far_round or zone[j] == zone[i])]
            j = rng.choice(peers)
            near = zone[i] == zone[j]
            rtt = rtt_between(zone[i], zone[j]) * (1.0 + 0.1 * rng.random())
            weight = weights[i].observe(near) if weighted else 1.0
            clients[i].update(str(j), clients[j].coordinate, rtt, rng, weight)
    errors = [abs(estimate_rtt(clients[i].coordinate, clients[j].coordinate) - 1.05 * rtt_between(zone[i], zone[j]))
              / (1.05 * rtt_between(zone[i], zone[j]))
              for i in range(n) for j in range(i + 1, n) if zone[i] != zone[j]]
    return statistics.median(errors)


def test_far_samples_weighted_bring_cross_zone_estimates_close_in_half_a_minute() -> None:
    """The regression test of the fix, median over five seeds after 30 s of zone-aware probing at N = 30:
    unweighted, the cross-zone estimates are still 15-21% off (short: they approach from below); weighted,
    4-8% (uniform probing: about 2%)."""
    unweighted = statistics.median(zone_aware_run(30, 30, weighted=False, seed=s) for s in range(1, 6))
    weighted = statistics.median(zone_aware_run(30, 30, weighted=True, seed=s) for s in range(1, 6))
    assert weighted <= 0.10, (weighted, unweighted)
    assert unweighted >= 0.14, unweighted  # the scenario does show the problem (else the test proves nothing)


def test_far_weight_balances_the_kinds_and_stays_bounded() -> None:
    w = FarSampleWeight()
    assert w.observe(near=True) == 1.0  # near samples are never reweighted
    assert w.observe(near=False) == 1.0  # 1 near + 1 pseudo against 1 far + 1 pseudo: balanced
    for _ in range(40):  # four near samples for each far one: a far one weighs about four
        weights = [w.observe(near=True) for _ in range(4)] + [w.observe(near=False)]
    assert weights[:4] == [1.0] * 4
    assert 3.0 <= weights[4] <= MAX_FAR_WEIGHT
    for _ in range(200):
        assert w.observe(near=True) == 1.0
    assert w.observe(near=False) == MAX_FAR_WEIGHT  # capped however rare far samples are
    for _ in range(200):  # mostly far (uniform probing): never damped below 1
        assert w.observe(near=False) >= 1.0
    assert w.observe(near=False) == 1.0


def test_repeated_step_is_that_many_samples_and_never_overshoots() -> None:
    assert repeated_step(0.2, 1.0) == 0.2
    assert repeated_step(0.2, 0.0) == 0.0
    assert repeated_step(0.2, 2.0) == pytest.approx(0.2 + 0.8 * 0.2)
    assert repeated_step(0.2, 1e6) == pytest.approx(1.0)
    assert repeated_step(1.5, 3.0) == 1.0  # a step beyond the gap (odd tuning) is capped at the gap


def test_a_weighted_sample_moves_further_but_not_past_the_measurement() -> None:
    peer = Coordinate((0.010,) + (0.0,) * (CFG.dimensions - 1), CFG.height_min, 0.5)
    moved = {}
    for weight in (0.0, 1.0, 4.0, 1e9):
        c = VivaldiClient(VivaldiConfig(adjustment_window=0))
        c.update("p", peer, 0.040, random.Random(1), weight)
        moved[weight] = estimate_rtt(c.coordinate, peer)
    start = estimate_rtt(Coordinate.origin(CFG), peer)
    assert moved[0.0] == pytest.approx(start)
    assert start < moved[1.0] < moved[4.0] <= 0.040 + 1e-9
    assert moved[1e9] == pytest.approx(0.040)


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_a_bad_weight_is_a_programming_error(weight: float) -> None:
    with pytest.raises(ValueError, match="weight"):
        VivaldiClient(CFG).update("p", Coordinate.origin(CFG), 0.01, random.Random(1), weight)


def test_two_samples_of_a_rarely_probed_peer_use_the_shorter() -> None:
    """A far peer is probed about once a minute under zone-aware probing, so its filter often holds two
    samples: a late ack (an agent's stall) must not be taken as the round trip. Delays only add, so of two the
    shorter is used (before, the upper middle: the late one)."""
    steady, spiky = VivaldiClient(CFG), VivaldiClient(CFG)
    peer = Coordinate((0.010,) + (0.0,) * (CFG.dimensions - 1), CFG.height_min, 0.1)
    steady.update("p", peer, 0.020, random.Random(1))
    spiky.update("p", peer, 0.020, random.Random(1))
    steady.update("p", peer, 0.020, random.Random(1))
    spiky.update("p", peer, 2.0, random.Random(1))  # filtered: the lower of (0.020, 2.0)
    assert spiky.coordinate.vec == steady.coordinate.vec


def _zoned_node(mode: str) -> Node:
    """Node "a" in zone z1 (`mode` aware or random) knowing p2 in z1 and p3 in z2, with their coordinates."""
    base = cfg("a")
    node = Node(dataclasses.replace(base, topology=TopologyConfig(mode=mode, zone="z1")),  # type: ignore[arg-type]
                ("h", 1), random.Random(3), 0.0)
    for i, zone in ((2, "z1"), (3, "z2")):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i), {ZONE_META_KEY: zone}),)), ("h", i), 0.0)
        node.handle_packet(Packet(f"p{i}", (NetCoordinate((0.001 * i,) * 8, 0.0001, 1.0, 0.0),)), ("h", i), 0.0)
    return node


def test_the_node_weighs_a_far_sample_only_in_aware_mode() -> None:
    """Node.observe_rtt tells the topology whether the peer is near (its zone): after near samples a far
    one moves an aware node's coordinate further than the same sample moves a node choosing uniformly."""
    moved = {}
    for mode in ("aware", "random"):
        node = _zoned_node(mode)
        for i in range(8):
            node.observe_rtt("p2", 0.001, 1.0 + i)
        before = node.topology.coordinate
        node.observe_rtt("p3", 0.040, 10.0)
        moved[mode] = math.dist(before.vec, node.topology.coordinate.vec)
        weights = node.topology.far_weight
        assert (weights.near > 0 and weights.far > 0) if mode == "aware" else (weights.near == weights.far == 0)
    assert moved["aware"] > 1.5 * moved["random"], moved


def test_an_ack_later_than_the_probe_timeout_is_no_rtt_sample() -> None:
    """The probe timeout is above the network's p99 round trip by definition: a later ack timed a stall (an
    agent's event loop, a starved router), which would fling the coordinate by seconds. Refused and counted,
    as memberlist times only acks within the timeout."""
    node = _zoned_node("aware")
    timeout = node.config.membership.probe_timeout
    assert node.observe_rtt("p2", 0.001, 1.0) is not None
    before = node.topology.coordinate
    assert node.observe_rtt("p2", timeout * 1.5, 2.0) is None
    assert node.topology.coordinate == before
    assert node.topology.rejections() == {"rtt_too_large": 1}
    assert node.observe_rtt("p3", timeout * 0.9, 3.0) is not None  # within the timeout: a sample
