"""Critical writes from peers are relayed as critical up to a per-member bound (core/critical_relay.py): honest
traffic at `state.criticalWritesPerSecond` never loses its class, a flood's excess is relayed as normal
(delivered all the same) and counted, one member's flood leaves another's writes critical."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core.critical_relay import MAX_SOURCES, RELAY_FACTOR, CriticalRelay
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Packet, StateRumor
from gossip_agent.core.node import Node
from tests.hostile.core_support import SPOOFER, lan_node

RATE = 50  # state.criticalWritesPerSecond's default


def _peer(i: int) -> tuple[str, tuple[str, int]]:
    return f"p{i}", (f"10.0.0.{i}", 7946)


class Relayed:
    """What a node sent on: payloads by class."""

    def __init__(self) -> None:
        self.critical: set[bytes] = set()
        self.normal: set[bytes] = set()

    def add(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Send):
                for m in e.packet.messages:
                    if isinstance(m, StateRumor):
                        (self.critical if m.critical else self.normal).add(m.payload)


def _receive(node: Node, peer: int, payload: bytes, now: float, seen: Relayed, *, src: tuple[str, int] | None = None,
             ) -> None:
    name, addr = _peer(peer)
    seen.add(node.handle_packet(Packet(name, (StateRumor(payload, critical=True),)), src or addr, now))
    seen.add(node.tick(now))


def _api_shaped(start: float, seconds: float, rng: random.Random) -> list[float]:
    """When one agent's API lets critical writes out at most: a burst of one second's worth, then RATE a
    second, each arriving up to 20 ms late (network jitter)."""
    sent = [start] * RATE + [start + (i + 1) / RATE for i in range(int(seconds * RATE))]
    return sorted(t + rng.uniform(0.0, 0.02) for t in sent)


def test_one_writer_at_the_configured_rate_is_never_downgraded() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.05)
    seen = Relayed()
    times = _api_shaped(1.0, 4.0, random.Random(1))
    for i, now in enumerate(times):
        _receive(node, 2, b"w%d" % i, now, seen)
    assert node.stats["critical_downgraded_relay"] == 0
    assert len(seen.critical) == len(times) and not seen.normal


def test_a_relay_passing_two_writers_at_the_configured_rate_is_never_downgraded() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.05)
    seen = Relayed()
    # Two writers' steady full rate, all first reaching us through one member (a tree relay).
    times = sorted([1.0 + i / RATE for i in range(4 * RATE)] + [1.005 + i / RATE for i in range(4 * RATE)])
    for i, now in enumerate(times):
        _receive(node, 2, b"w%d" % i, now, seen)
    assert node.stats["critical_downgraded_relay"] == 0
    assert len(seen.critical) == len(times)


def test_a_flood_s_excess_is_relayed_as_normal_and_counted_and_spares_other_members() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.05)
    seen = Relayed()
    for i in range(300):
        now = 1.0 + i * 0.001
        _receive(node, 2, b"flood%d" % i, now, seen)
        if i % 10 == 0:  # an honest member's writes meanwhile, well within its share
            _receive(node, 3, b"honest%d" % i, now, seen)
    seen.add(node.tick(2.0))
    flood = {b"flood%d" % i for i in range(300)}
    honest = {b"honest%d" % i for i in range(0, 300, 10)}
    assert honest <= seen.critical
    assert len(flood & seen.critical) <= RATE + RELAY_FACTOR * RATE * 0.3 + 1
    assert flood <= seen.critical | seen.normal  # every one still relayed: nothing lost
    assert node.stats["critical_downgraded_relay"] == len(flood - seen.critical)


def test_the_flood_path_downgrades_too() -> None:
    node = lan_node(broadcast="flood", tree_readers=True)
    node.tick(0.05)
    seen = Relayed()
    for i in range(200):
        seen.add(node.handle_packet(Packet("p2", (StateRumor(b"w%d" % i, critical=True),)), _peer(2)[1], 1.0))
    for t in range(1, 40):
        seen.add(node.tick(1.0 + t * 0.1))
    assert len(seen.critical) == RATE and len(seen.normal | seen.critical) == 200
    assert node.stats["critical_downgraded_relay"] == 200 - RATE


def test_forged_sender_names_share_one_bucket() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.05)
    seen = Relayed()
    for i in range(200):  # a different made-up (or real) name each packet, none from its table host
        name = f"p{2 + i % 8}" if i % 2 else f"nobody{i}"
        seen.add(node.handle_packet(Packet(name, (StateRumor(b"w%d" % i, critical=True),)), SPOOFER, 1.0))
    assert node.stats["critical_downgraded_relay"] == 200 - RATE


def test_zero_switches_the_bound_off() -> None:
    node = lan_node(broadcast="flood")
    cfg = node.config
    node.config = replace(cfg, state=replace(cfg.state, critical_writes_per_second=0))
    for i in range(200):
        node.handle_packet(Packet("p2", (StateRumor(b"w%d" % i, critical=True),)), _peer(2)[1], 1.0)
    assert node.stats["critical_downgraded_relay"] == 0


def test_the_table_of_members_is_bounded() -> None:
    relay = CriticalRelay()
    for i in range(3 * MAX_SOURCES):
        assert relay.admit(f"m{i}", RATE, 1.0)
    assert len(relay) == MAX_SOURCES
