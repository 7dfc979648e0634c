"""Topology in the membership core: coordinates ride on pings and acks only to members that read them (an
older agent drops a whole packet with a message type it does not know), RTT samples move our coordinate,
zones travel in metadata, and peer choice prefers near members while staying uniform without information."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter

import pytest

from gossip_agent.core.config import AgentConfig, TopologyConfig
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.membership import Member
from gossip_agent.core.messages import Ack, Alive, MemberState, NetCoordinate, Packet, Ping
from gossip_agent.core.node import Node
from gossip_agent.core.topology_state import ZONE_META_KEY
from tests.core.test_node import Cluster, cfg, node_with_peers, probe_with_lower_offers, until_ping


def _kinds(effects: list[Effect]) -> list[list[type]]:
    return [[type(m) for m in e.packet.messages] for e in effects if isinstance(e, Send)]


def test_coordinates_are_offered_apart_until_the_peer_sends_one_then_no_more() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    # p2 never answers (an older agent): our coordinate goes beside its first or second probe.
    kinds = _kinds(probe_with_lower_offers(a, lambda effects: [NetCoordinate] in _kinds(effects)))
    assert [NetCoordinate] in kinds  # a packet of its own, which an older agent drops alone
    assert all(NetCoordinate not in k or k == [NetCoordinate] for k in kinds)
    assert kinds.index([NetCoordinate]) < next(i for i, k in enumerate(kinds) if k[0] is Ping)  # offered first
    a.handle_packet(Packet("p2", (NetCoordinate((0.001,) * 8, 0.0001, 1.0, 0.0),)), ("h", 2), a.next_deadline())
    kinds = _kinds(until_ping(a))
    assert not any(NetCoordinate in k for k in kinds)  # pings carry none: the sample needs the target's


def test_an_ack_carries_our_coordinate_only_to_a_reader() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    ping = Ping(7, "a", "p2", ("h", 2))
    [ack] = [e for e in a.handle_packet(Packet("p2", (ping,)), ("h", 2), 1.0) if isinstance(e, Send)]
    assert [type(m) for m in ack.packet.messages] == [Ack]
    coordinate = NetCoordinate((0.0,) * 8, 0.0001, 1.5, 0.0)
    offer, ack = [e for e in a.handle_packet(Packet("p2", (coordinate, ping)), ("h", 2), 1.0) if isinstance(e, Send)]
    assert [type(m) for m in ack.packet.messages] == [Ack, NetCoordinate]  # the ack stays first (io/probe_rtt)
    assert not ack.packet.messages[1].compact  # p2 showed the older form only (a previous release)...
    [compact] = offer.packet.messages  # ...so ours in the compact form goes once, in a packet of its own
    assert isinstance(compact, NetCoordinate) and compact.compact and offer.to == ("h", 2)


def test_rtt_samples_move_the_coordinate_and_report_the_estimate_error() -> None:
    a = node_with_peers(cfg("a"), 2, seed=3)
    assert a.observe_rtt("p2", 0.02, 1.0) is None  # no coordinate of p2 yet: nothing to learn from
    a.handle_packet(Packet("p2", (NetCoordinate((0.0,) * 8, 0.0001, 1.5, 0.0),)), ("h", 2), 1.0)
    errors = [a.observe_rtt("p2", 0.02, 1.0 + i) for i in range(40)]
    assert errors[0] is not None and errors[0] > 0.5  # the origin estimates ~0 s for 20 ms
    assert errors[-1] is not None and errors[-1] < 0.1
    estimate = a.topology.estimate("a", "p2", "a")
    assert estimate is not None and abs(estimate - 0.02) < 0.002
    assert a.observe_rtt("nobody", 0.02, 50.0) is None and a.observe_rtt("a", 0.02, 50.0) is None


def test_hostile_coordinates_are_counted_refusals_that_keep_the_ping() -> None:
    a = node_with_peers(cfg("a"), 1, seed=3)
    ping = Ping(7, "a", "p2", ("h", 2))
    for bad in (NetCoordinate((math.nan,) * 8, 0.0, 1.0, 0.0), NetCoordinate((1e6,) * 8, 0.0, 1.0, 0.0),
                NetCoordinate((0.0,) * 8, -1.0, 1.0, 0.0), NetCoordinate((0.0,) * 8, 0.0, math.inf, 0.0)):
        sends = [e for e in a.handle_packet(Packet("p2", (ping, bad)), ("h", 2), 1.0) if isinstance(e, Send)]
        assert any(isinstance(s.packet.messages[0], Ack) for s in sends)  # the probe is still answered
    assert a.topology.coordinates() == {}
    assert sum(a.topology.rejections().values()) == 4
    # From a member we do not know: not stored, counted.
    a.handle_packet(Packet("stranger", (NetCoordinate((0.0,) * 8, 0.0001, 1.0, 0.0),)), ("h", 9), 1.0)
    assert "stranger" not in a.topology.coordinates() and a.stats["coordinates_unknown_member"] == 1


def test_a_reaped_member_is_forgotten_and_one_back_from_the_dead_is_offered_again() -> None:
    c = Cluster(4)
    c.join_all()
    c.advance(6.0)
    n0 = c.node("n0")
    assert n0.topology.reads_coordinates("n3") and "n3" in n0.topology.coordinates()
    c.down.add("n3")
    c.advance(c.now + 60.0)
    assert n0.member_state("n3") is None  # reaped
    assert "n3" not in n0.topology.coordinates() and not n0.topology.reads_coordinates("n3")


def test_every_member_learns_every_coordinate_and_estimates_converge_without_extra_packets() -> None:
    c = Cluster(6)
    c.join_all()
    c.advance(10.0)
    for n in c.nodes.values():
        assert len(n.topology.coordinates()) == 5, n.name
    offers_before = sum(n.stats["coordinate_offers"] for n in c.nodes.values())
    c.advance(c.now + 10.0)
    assert sum(n.stats["coordinate_offers"] for n in c.nodes.values()) == offers_before  # steady state: none


def test_the_zone_travels_in_metadata_and_a_new_zone_is_reannounced() -> None:
    config = dataclasses.replace(cfg("a"), topology=TopologyConfig(zone="zone-a"))
    a = Node(config, ("h", 1), random.Random(1), 0.0)
    assert a.meta[ZONE_META_KEY] == "zone-a"
    before = a.incarnation
    a.set_zone("zone-b", 1.0)
    assert a.meta[ZONE_META_KEY] == "zone-b" and a.incarnation == before + 1
    assert a.set_zone("zone-b", 2.0) == [] and a.incarnation == before + 1
    a.set_zone(None, 3.0)
    assert ZONE_META_KEY not in a.meta


def _zoned(name: str, zone: str | None, mode: str = "aware", fraction: float = 0.15) -> AgentConfig:
    return dataclasses.replace(cfg(name), topology=TopologyConfig(zone=zone, mode=mode,  # type: ignore[arg-type]
                                                                  cross_zone_fraction=fraction))


def _node_among_zones(config: AgentConfig, n: int, seed: int) -> Node:
    node = Node(config, ("h", 1), random.Random(seed), 0.0)
    for i in range(n):
        meta = {ZONE_META_KEY: f"z{i % 3}"}
        node.table.add(Member(f"p{i}", ("h", 100 + i), 1, MemberState.ALIVE, meta, 0.0))
        node._probe_order.append(f"p{i}")
    return node


def _cross_share(node: Node, rounds: int, k: int = 3) -> float:
    picks: Counter[bool] = Counter()
    for _ in range(rounds):
        for m in node._random_peers(k, exclude=None, live_only=False):
            picks[m.meta[ZONE_META_KEY] != node.topology.local_zone] += 1
    return picks[True] / sum(picks.values())


def test_aware_choice_keeps_the_cross_zone_share_near_the_fraction() -> None:
    aware = _node_among_zones(_zoned("a", "z0"), 300, seed=5)
    assert abs(_cross_share(aware, 3000) - 0.15) < 0.02
    uniform = _node_among_zones(_zoned("a", "z0", mode="random"), 300, seed=5)
    assert abs(_cross_share(uniform, 3000) - 2 / 3) < 0.03


def test_picks_are_distinct_and_the_far_class_fills_in_when_no_member_is_near() -> None:
    node = _node_among_zones(_zoned("a", "elsewhere"), 30, seed=2)
    for _ in range(200):
        picked = [m.name for m in node._random_peers(3, exclude="p1", live_only=True)]
        assert len(picked) == len(set(picked)) == 3 and "p1" not in picked


def test_without_zone_or_coordinates_the_choice_is_todays_uniform_one_draw_for_draw() -> None:
    aware = _node_among_zones(_zoned("a", None), 50, seed=9)
    plain = _node_among_zones(_zoned("a", None, mode="random"), 50, seed=9)
    for _ in range(100):
        assert [m.name for m in aware._random_peers(3, exclude=None, live_only=True)] == \
               [m.name for m in plain._random_peers(3, exclude=None, live_only=True)]


@pytest.mark.parametrize("zone", ["", " ", "a b", "x" * 64, "-a"])
def test_an_invalid_zone_in_a_peers_metadata_counts_as_unknown(zone: str) -> None:
    node = Node(_zoned("a", "z0"), ("h", 1), random.Random(1), 0.0)
    node.handle_packet(Packet("p", (Alive("p", 1, ("h", 2), {ZONE_META_KEY: zone}),)), ("h", 2), 0.0)
    member = node.member("p")
    assert member is not None and node.topology.zone_of(member.meta) is None
    assert node.topology.peer_class(member.meta) == "unknown"


def test_anti_entropy_partners_are_near_mostly_and_uniform_without_a_zone() -> None:
    aware = _node_among_zones(_zoned("a", "z0"), 300, seed=4)
    names = [f"p{i}" for i in range(300)]
    rng = random.Random(3)
    picks = [aware.choose_partner(names, rng) for _ in range(4000)]
    far = sum(1 for p in picks if p is not None and int(p[1:]) % 3 != 0)
    assert abs(far / len(picks) - 0.15) < 0.02
    # The repair planner's near/far (core/replica.RepairPlanner): same zone near, another far, unknown far.
    assert (aware.is_near("p3"), aware.is_near("p4"), aware.is_near("nobody")) == (True, False, False)
    plain = _node_among_zones(_zoned("a", None), 300, seed=4)
    assert plain.is_near("p3") is None  # no topology known: every peer alike
    r1, r2 = random.Random(5), random.Random(5)
    assert [plain.choose_partner(names, r1) for _ in range(50)] == [names[int(r2.random() * 300)] for _ in range(50)]


def test_the_state_core_asks_the_partner_choice_for_its_anti_entropy_partner() -> None:
    from gossip_agent.core.state_node import AntiEntropyWith
    from tests.core.test_state_node import addr, core, member, run

    c = core("a", ae=True)
    for name in ("b", "c", "d"):
        c.on_member_event(member(name), 0.0)
    c.put("k", b"v", None, 0.0, 1.7e12)
    asked: list[list[str]] = []

    def choose(names: list[str], rng: object) -> str:
        asked.append(sorted(names))
        return "c"

    c.choose_partner = choose  # type: ignore[assignment]
    effects = run(c, 60.0)
    assert asked and asked[0] == ["b", "c", "d"]
    assert {e for e in effects if isinstance(e, AntiEntropyWith)} == {AntiEntropyWith("c", addr("c"))}


def test_a_zone_given_as_plain_metadata_is_our_zone_if_valid() -> None:
    a = Node(dataclasses.replace(cfg("a"), meta={ZONE_META_KEY: "zone-m"}), ("h", 1), random.Random(1), 0.0)
    assert a.topology.local_zone == "zone-m"
    b = Node(dataclasses.replace(cfg("b"), meta={ZONE_META_KEY: "not valid!"}), ("h", 1), random.Random(1), 0.0)
    assert b.topology.local_zone is None


def _full_meta(config: AgentConfig) -> dict[str, str]:
    """Metadata a few bytes short of gossip.maxMetaBytes: room for no zone."""
    return {"blob": "x" * (config.gossip.max_meta_bytes - len("blob") - 2 - 4)}


def test_a_zone_that_does_not_fit_the_metadata_is_kept_locally_and_counted_not_an_exception() -> None:
    # The zone file is filled after scheduling; with metadata near gossip.maxMetaBytes, set_zone used to raise
    # from update_meta (after set_local_zone had already changed): the runtime's zone-file task died for good,
    # and our zone was half-set. At start-up the same zone made Node() raise: the agent did not start.
    base = cfg("a")
    full = dataclasses.replace(base, meta=_full_meta(base))
    a = Node(full, ("h", 1), random.Random(1), 0.0)
    assert a.set_zone("zone-a", 1.0) == []  # not announced: nothing to send
    assert a.topology.local_zone == "zone-a" and ZONE_META_KEY not in a.meta
    assert a.stats["zone_not_announced"] == 1
    assert a.set_zone(None, 2.0) == [] and a.topology.local_zone is None

    zoned = dataclasses.replace(full, topology=TopologyConfig(zone="zone-b"))
    b = Node(zoned, ("h", 1), random.Random(1), 0.0)  # starts
    assert b.topology.local_zone == "zone-b" and ZONE_META_KEY not in b.meta
    assert b.stats["zone_not_announced"] == 1
