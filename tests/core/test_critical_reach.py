"""Critical writes on the broadcast tree (core/critical.py): the writer pushes one to every member of a cluster
of up to CRITICAL_DIRECT others (one hop), relays add random extras only in larger clusters, and the copies
that arrive twice on purpose neither prune tree links nor make their senders neighbours."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.critical import CRITICAL_DIRECT, direct_reach, relay_extras
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Alive, Dead, MemberState, Packet, Prune, StateRumor, Suspect
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import PRUNE_AFTER, Plumtree


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


def test_a_relay_in_a_small_cluster_forwards_a_critical_write_along_the_tree_only() -> None:
    """The writer reached everyone: extras at a relay would be duplicates only (they were ~5 copies per
    member per critical write)."""
    node = tree_node(12)
    out = node.handle_packet(Packet("p2", (StateRumor(b"x" * 50, critical=True),)), ("h", 2), 1.0)
    assert pushed_to(out) == {int(n[1:]) for n in node.tree.eager if n != "p2"}


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


def test_the_writer_reaches_every_alive_member_while_the_table_still_holds_many_dead() -> None:
    """After a scale-down the dead stay in the table until reaped: 10 alive others and 50 dead ones. Sampling
    alone (4k+4 draws) missed 2-7 of the 10 alive members per critical write (hostile review, session 12)."""
    for seed in range(10):
        node = tree_node(60)
        node.rng = random.Random(seed)
        for i in range(12, 62):
            node.handle_packet(Packet("p2", (Dead(f"p{i}", 1, "p2"),)), ("h", 2), 0.0)
        assert node.table.n_alive - 1 == 10
        assert pushed_to(node.broadcast_state(b"c" * 50, 1.0 + seed, critical=True)) == set(range(2, 12))


def test_the_writer_sends_its_direct_copy_to_suspects_too() -> None:
    """A suspect is most often alive (a false suspicion under load, or one about to be refuted); memberlist
    gossips to suspects too. Left out, it waited for the tree's next hop."""
    node = tree_node(8)
    accuser = sorted(node.tree.eager)[0]
    suspects = [f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager][:2]
    for name in suspects:
        node.handle_packet(Packet(accuser, (Suspect(name, 1, accuser),)), ("h", int(accuser[1:])), 0.5)
        assert node.member_state(name) == MemberState.SUSPECT
    assert pushed_to(node.broadcast_state(b"c" * 50, 1.0, critical=True)) == set(range(2, 10))


def test_relays_count_suspects_as_the_writer_does() -> None:
    """CRITICAL_DIRECT alive others and two suspects: the writer reaches CRITICAL_DIRECT of the 66 live ones, so
    a relay (counting them alike) adds its extras; counting alive members only, it took the writer to have
    reached everyone."""
    node = tree_node(CRITICAL_DIRECT + 2)
    accuser = sorted(node.tree.eager)[0]
    for name in [f"p{i}" for i in range(2, CRITICAL_DIRECT + 4) if f"p{i}" not in node.tree.eager][:2]:
        node.handle_packet(Packet(accuser, (Suspect(name, 1, accuser),)), ("h", int(accuser[1:])), 0.5)
    assert node.table.n_alive - 1 == CRITICAL_DIRECT
    relayed = pushed_to(node.handle_packet(Packet(accuser, (StateRumor(b"y" * 50, critical=True),)),
                                           ("h", int(accuser[1:])), 1.1))
    tree = {int(n[1:]) for n in node.tree.eager if n != accuser}
    assert tree < relayed and len(relayed - tree) <= node.config.gossip.fanout
