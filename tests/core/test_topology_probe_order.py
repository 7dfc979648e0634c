"""Aligned probing by zone (core/probe_order.py): with topology awareness every member is still probed exactly
once per round (detection time unchanged), mostly by a member of its own zone; the far rounds probe along the
whole ring; random mode probes along the whole ring as before."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest

from gossip_agent.core import probe_order
from gossip_agent.core.config import TopologyConfig
from gossip_agent.core.messages import MemberSnapshot, MemberState
from gossip_agent.core.node import Node
from gossip_agent.core.topology_state import ZONE_META_KEY
from tests.core.test_node import cfg


def _zoned_cluster(zones: list[str | None], mode: str = "aware") -> list[Node]:
    """Nodes that all know each other (quietly bootstrapped) with these zones in their metadata; aligned
    probing (the default schedule)."""
    nodes = []
    for i, zone in enumerate(zones):
        base = cfg(f"n{i}")
        meta = {} if zone is None else {ZONE_META_KEY: zone}
        config = dataclasses.replace(base, meta=meta, topology=TopologyConfig(mode=mode))  # type: ignore[arg-type]
        nodes.append(Node(config, (f"10.0.0.{i}", 7946), random.Random(i), 0.0))
    rows = [MemberSnapshot(f"n{i}", (f"10.0.0.{i}", 7946), 0, MemberState.ALIVE,
                           {} if z is None else {ZONE_META_KEY: z}) for i, z in enumerate(zones)]
    for node in nodes:
        node.bootstrap(rows, 0.0)
    return nodes


def _rounds(nodes: list[Node], zones: list[str | None], rounds: int) -> tuple[int, int]:
    interval = nodes[0].config.membership.probe_interval
    same = cross = 0
    for r in range(rounds):
        probed: Counter[str] = Counter()
        for i, node in enumerate(nodes):
            target = node._aligned_target(r * interval + node._probe_phase + 1e-6)
            assert target is not None
            probed[target.name] += 1
            if zones[i] is not None and zones[i] == zones[int(target.name[1:])]:
                same += 1
            else:
                cross += 1
        assert sorted(probed.values()) == [1] * len(nodes), f"round {r}: {probed}"
    return same, cross


@pytest.mark.parametrize("zones", [
    ["a"] * 10 + ["b"] * 10 + ["c"] * 10,
    ["a"] * 7 + ["b"] * 2 + ["c"] + [None] * 3,   # a lone zone and members without a zone
    ["a"] * 6 + ["b"],                            # the lone member joins a group: still probed
])
def test_zone_rings_probe_every_member_once_a_round_mostly_inside_its_zone(zones: list[str | None]) -> None:
    nodes = _zoned_cluster(zones)
    same, cross = _rounds(nodes, zones, 200)
    if all(z is not None and zones.count(z) >= 2 for z in zones):
        far = max(probe_order.FAR_PROBE_SHARE, nodes[0].topology.policy.cross_zone_fraction)
        assert cross / (same + cross) < far * 2 / 3 + 0.06  # the plain ring: 2/3 cross-zone with three zones


def test_random_mode_probes_along_the_whole_ring() -> None:
    zones: list[str | None] = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    same, cross = _rounds(_zoned_cluster(zones, mode="random"), zones, 100)
    assert cross / (same + cross) > 0.5


def test_far_rounds_are_agreed_and_take_their_share() -> None:
    far = [probe_order.far_round(r, 0.2) for r in range(5000)]
    assert 0.17 < sum(far) / len(far) < 0.23
    assert far == [probe_order.far_round(r, 0.2) for r in range(5000)]  # a function of the round alone
    assert not any(probe_order.far_round(r, 0.0) for r in range(100))
