"""Critical writes on the broadcast tree (core/critical.py): the writer pushes one to every member of a cluster
of up to CRITICAL_DIRECT others (one hop), relays add random extras only in larger clusters, and the copies
that arrive twice on purpose neither prune tree links nor make their senders neighbours."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.critical import CRITICAL_DIRECT, direct_reach, relay_extras
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Alive, Graft, IHave, Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import PRUNE_AFTER, Plumtree, message_id


class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True


def tree_node(peers: int) -> Node:
    """Node "a" knowing alive p2..p(peers+1), all known to read tree messages."""
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, broadcast="tree"))
    node = Node(cfg, ("h", 1), random.Random(3), 0.0, _Accept())
    for i in range(2, 2 + peers):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
        node.handle_packet(Packet(f"p{i}", (Prune(),)), ("h", i), 0.0)  # shows it reads tree messages
    node.tick(0.01)  # picks the eager neighbours
    return node


def pushed_to(effects: list[Effect]) -> set[int]:
    return {e.to[1] for e in effects if isinstance(e, Send)
            and any(isinstance(m, StateRumor) for m in e.packet.messages)}


def test_reach_is_everyone_up_to_critical_direct_then_relays_add_fanout() -> None:
    assert direct_reach(9) == 9 and direct_reach(CRITICAL_DIRECT) == CRITICAL_DIRECT
    assert direct_reach(CRITICAL_DIRECT + 100) == CRITICAL_DIRECT
    assert relay_extras(CRITICAL_DIRECT, 3) == 0 and relay_extras(CRITICAL_DIRECT + 1, 3) == 3


def announced_to(effects: list[Effect]) -> set[int]:
    """Ports of the members an announcement (long or short ids) went to."""
    return {e.to[1] for e in effects if isinstance(e, Send) and any(
        isinstance(m, IHave) or (isinstance(m, ShortIds) and m.kind == ShortKind.IHAVE) for m in e.packet.messages)}


def test_a_relay_in_a_small_cluster_announces_a_critical_write_and_pushes_it_to_nobody() -> None:
    """The writer reached everyone: a relay's tree pushes were a duplicate at every receiver (about one copy
    more per member and critical write, arriving with the direct copies), and extras would be more. So every
    neighbour, eager ones too, gets the id only: one whose direct copy was lost grafts it."""
    node = tree_node(12)
    eager = {int(n[1:]) for n in node.tree.eager if n != "p2"}
    assert eager
    out = node.handle_packet(Packet("p2", (StateRumor(b"x" * 50, critical=True),)), ("h", 2), 1.0)
    assert pushed_to(out) == set()
    later = node.tick(2.0) + node.tick(4.0)  # past the lazy flush and the second ends' hold
    neighbours = {int(n[1:]) for n in node.tree.neighbours() if n != "p2"}
    assert eager <= announced_to(later) == neighbours
    # A normal write is still pushed along the tree.
    out = node.handle_packet(Packet("p2", (StateRumor(b"n" * 50),)), ("h", 2), 5.0)
    assert pushed_to(out) == eager


def test_a_critical_write_that_came_by_graft_is_pushed_along_the_tree() -> None:
    """Our direct copy was lost (perhaps many were): the copy our graft drew goes on along the tree."""
    node = tree_node(12)
    ident = message_id(b"g" * 50)
    node.handle_packet(Packet("p3", (IHave((ident,)),)), ("h", 3), 1.0)
    grafts = node.tick(2.0)
    assert any(isinstance(m, Graft | ShortIds) for e in grafts if isinstance(e, Send) for m in e.packet.messages)
    out = node.handle_packet(Packet("p3", (StateRumor(b"g" * 50, critical=True),)), ("h", 3), 2.1)
    assert node.stats["tree_delivered_graft"] == 1
    assert pushed_to(out) == {int(n[1:]) for n in node.tree.eager if n != "p3"} != set()


def test_in_a_large_cluster_the_writer_reaches_critical_direct_and_relays_add_fanout() -> None:
    node = tree_node(CRITICAL_DIRECT + 6)
    eager = {int(n[1:]) for n in node.tree.eager}
    direct = pushed_to(node.broadcast_state(b"c", 1.0, critical=True))
    assert eager <= direct and CRITICAL_DIRECT <= len(direct) <= CRITICAL_DIRECT + len(eager) < CRITICAL_DIRECT + 6
    relayed = pushed_to(node.handle_packet(Packet("p2", (StateRumor(b"y" * 50, critical=True),)), ("h", 2), 1.1))
    tree = {int(n[1:]) for n in node.tree.eager if n != "p2"}
    assert tree < relayed and len(relayed - tree) <= node.config.gossip.fanout


def test_critical_duplicates_prune_no_tree_link_and_the_writer_does_not_become_a_neighbour() -> None:
    """Without the critical exemption: the writer's direct copy made it a lazy neighbour (announced to from
    then on), and the tree's copies after it pruned links (3,015 prunes in 10 s at N=10 under 100 writes/s)."""
    t = Plumtree("a", eager_target=2, lazy_interval=0.4, graft_timeout=0.1)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    for i in range(2 * PRUNE_AFTER):
        assert t.receive(i, "writer", 1.0, critical=True)  # the writer's direct copy comes first
        assert not t.receive(i, "b", 1.01, critical=True)  # then the tree's, over both links
        assert not t.receive(i, "c", 1.02, critical=True)
    assert "writer" not in t.neighbours()
    assert t.eager == {"b", "c"} and t.tick(2.0).prunes == set()
    # A normal write's duplicates still prune as before.
    for i in range(100, 100 + PRUNE_AFTER):
        assert t.receive(i, "b", 3.0)
        assert not t.receive(i, "c", 3.01)
    assert t.tick(4.0).prunes == {"c"}


def test_a_critical_write_s_id_rides_on_the_next_push_to_each_eager_neighbour() -> None:
    """Under a stream of writes the next push to an eager neighbour follows within milliseconds: the id it
    carries lets a neighbour whose direct copy was lost graft it then, not at the lazy flush (with 5 % loss in
    the simulator, N=50, every 10th of 100 writes/s critical: critical t100 median 273 -> 106 ms)."""
    node = tree_node(12)
    eager = sorted(n for n in node.tree.eager if n != "p2")
    assert eager
    critical = StateRumor(b"c" * 50, critical=True)
    node.handle_packet(Packet("p2", (critical,)), ("h", 2), 1.0)
    out = node.handle_packet(Packet("p2", (StateRumor(b"n" * 50),)), ("h", 2), 1.01)
    sid = message_id(critical.payload) >> 32
    for name in eager:
        port = int(name[1:])
        packets = [e.packet for e in out if isinstance(e, Send) and e.to[1] == port]
        assert len(packets) == 1, name  # the push, with the announcement on it: no packet of its own
        ids = [i for m in packets[0].messages if isinstance(m, ShortIds) and m.kind == ShortKind.IHAVE
               for i in m.ids] + [i >> 32 for m in packets[0].messages if isinstance(m, IHave) for i in m.ids]
        assert sid in ids and any(isinstance(m, StateRumor) for m in packets[0].messages)
