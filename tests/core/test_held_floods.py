"""The broadcast tree's flood fallback (our own writes queued for members not known to read tree messages)
waits one gossip interval for the tree to deliver, and leaves out members that showed first-hand (their own
digest or tree message, from their own host) that they read the tree (core/held_floods.py; in the simulator
at N=50 it raced the tree, broke it and set the latency tail)."""

from __future__ import annotations

import math
import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.digests import ROOT_PREFIX_BYTES
from gossip_agent.core.held_floods import HeldFloods
from gossip_agent.core.messages import Alive, Digest, Packet, StateRumor
from gossip_agent.core.node import Node


class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True

    def on_root_digest(self, digest: Digest, now: float) -> None:
        pass


def tree_node(peers: int) -> Node:
    """Node "a" knowing alive p2..p(peers+1), none known yet to read tree messages."""
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, broadcast="tree"))
    node = Node(cfg, ("h", 1), random.Random(3), 0.0, _Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
    return node


def test_held_items_come_out_in_order_when_due_and_the_hold_is_bounded() -> None:
    held: HeldFloods[str] = HeldFloods(max_items=2)
    assert held.next_deadline() == math.inf and held.due(5.0) == []
    assert held.hold("a", 1.0) == 0
    assert held.hold("b", 1.2) == 0
    assert held.hold("c", 1.4) == 1  # over the bound: "a" is dropped, and the call says so
    assert held.dropped == 1 and held.next_deadline() == 1.2
    assert held.due(1.3) == ["b"] and held.due(1.4) == ["c"] and len(held) == 0


def test_the_fallback_waits_one_gossip_interval() -> None:
    node = tree_node(peers=6)  # nobody known to read tree messages yet
    node.tick(0.01)
    node.broadcast_state(b"w", 1.0)
    assert StateRumor(b"w") not in node.queue.peek_all()  # the tree pushes went; the flood waits
    interval = node.config.gossip.interval
    assert node.next_deadline() <= 1.0 + interval
    node.tick(1.0 + interval)
    assert node.stats["tree_flood_fallback"] == 1


def test_members_that_showed_they_read_the_tree_get_no_fallback() -> None:
    """A member that sent us its own digest from its own host is a release that reads the tree (the same
    feature level); rows about other members that it passed on prove nothing about them (a forged or relayed
    row is not that member speaking), so those still get the fallback."""
    node = tree_node(peers=6)
    node.tick(0.01)
    root = b"\x01" * ROOT_PREFIX_BYTES
    digests = tuple(Digest(f"p{i}", 1, root, 1, 1) for i in range(3, 8))
    node.handle_packet(Packet("p2", digests), ("h", 2), 0.5)  # p2 shows itself, and relays the others' digests
    assert all(f"p{i}" in node.root_digests for i in range(3, 8))
    node.broadcast_state(b"w", 1.0)
    node.tick(1.0 + node.config.gossip.interval)
    assert node.stats["tree_flood_fallback"] == 1  # p3..p7 have not shown themselves
    for i in range(3, 8):  # now each sends its own digest, from its own host
        node.handle_packet(Packet(f"p{i}", (Digest(f"p{i}", 2, root, 2, 2),)), ("h", i), 1.5)
    node.broadcast_state(b"w2", 2.0)
    node.tick(2.0 + node.config.gossip.interval)
    assert node.stats["tree_flood_fallback"] == 1
    assert StateRumor(b"w2") not in node.queue.peek_all()
