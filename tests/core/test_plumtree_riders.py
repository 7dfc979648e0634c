"""Announcements ride on packets a member sends a lazy neighbour anyway (core/tree_dissemination.py
`_tree_riders`, core/plumtree.py `take_for`): an IHAVE's own packet costs ~40 B of headers at the IP level for
~10 B of id, so ids that can ride on an ack or a gossip packet to the same member are not sent again at the lazy
flush."""

from __future__ import annotations

import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Ack, Alive, IHave, Packet, Ping, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import message_id, short_id
from gossip_agent.core.readers import SHORT_IDS


class _Accept:
    def on_state_rumor(self, payload: bytes, now: float) -> bool:
        return True


def node_with_lazy_peer() -> tuple[Node, str]:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = replace(base, membership=replace(base.membership, tcp_fallback_probe=False),
                  gossip=replace(base.gossip, broadcast="tree"))
    node = Node(cfg, ("h", 1), random.Random(3), 0.0, _Accept())
    for i in range(2, 8):
        node.handle_packet(Packet(f"p{i}", (Alive(f"p{i}", 1, ("h", i)),)), ("h", i), 0.0)
        node.handle_packet(Packet(f"p{i}", (Prune(),)), ("h", i), 0.0)  # shows it reads tree messages
    node.tick(0.01)
    lazy = next(f"p{i}" for i in range(2, 8) if f"p{i}" not in node.tree.eager)
    node.handle_packet(Packet(lazy, (IHave(()),)), ("h", int(lazy[1:])), 0.02)  # a lazy link
    assert lazy in node.tree.lazy
    return node, lazy


def to(effects: list[Effect], port: int) -> list[Send]:
    return [e for e in effects if isinstance(e, Send) and e.to == ("h", port)]


def test_queued_ids_ride_on_an_ack_to_the_lazy_neighbour_and_are_not_announced_again() -> None:
    node, lazy = node_with_lazy_peer()
    port = int(lazy[1:])
    node.broadcast_state(b"w", 1.0)
    out = to(node.handle_packet(Packet(lazy, (Ping(9, "a", lazy, ("h", port)),)), ("h", port), 1.01), port)
    msgs = [m for s in out for m in s.packet.messages]
    assert any(isinstance(m, Ack) for m in msgs)
    assert IHave((message_id(b"w"),)) in msgs
    assert node.stats["tree_ihave_riders"] == 1
    flush = node.tick(1.0 + node.config.gossip.interval)
    assert not any(isinstance(m, IHave) for s in to(flush, port) for m in s.packet.messages)


def test_without_a_rider_the_flush_announces_within_one_lazy_interval() -> None:
    """The repair bound: a lazy neighbour hears of every payload within one lazy interval (two gossip
    intervals: the flush is at every second gossip tick)."""
    node, lazy = node_with_lazy_peer()
    port = int(lazy[1:])
    node.broadcast_state(b"w", 1.0)
    assert node.tree.lazy_interval == 2 * node.config.gossip.interval
    assert node.next_deadline() <= 1.0 + node.tree.lazy_interval
    flush = node.tick(1.0 + node.tree.lazy_interval)
    assert IHave((message_id(b"w"),)) in [m for s in to(flush, port) for m in s.packet.messages]


def test_a_forged_ping_does_not_carry_off_a_neighbours_announcements() -> None:
    """A ping naming the lazy neighbour but another address (forged: its answer goes where the ping says) gets
    its ack without the neighbour's queued ids: they rode there and the neighbour, never told, could not graft
    a payload it missed."""
    node, lazy = node_with_lazy_peer()
    port = int(lazy[1:])
    node.broadcast_state(b"w", 1.0)
    out = node.handle_packet(Packet(lazy, (Ping(9, "a", lazy, ("evil", 9)),)), ("evil", 9), 1.01)
    msgs = [m for e in out if isinstance(e, Send) and e.to == ("evil", 9) for m in e.packet.messages]
    assert any(isinstance(m, Ack) for m in msgs)
    assert not any(isinstance(m, IHave) for m in msgs)
    flush = node.tick(1.0 + node.tree.lazy_interval)
    assert IHave((message_id(b"w"),)) in [m for s in to(flush, port) for m in s.packet.messages]


def test_a_gossip_round_goes_first_to_lazy_neighbours_whose_announcements_are_due() -> None:
    """The round's packets (convergence digests under writes) carry the ids their peers are owed: picked at
    random, a round reached a lazy neighbour with due ids by chance only, and the flush then sent it a packet of
    its own (~40 B of headers for a few ids)."""
    node, lazy = node_with_lazy_peer()
    port = int(lazy[1:])
    for i in range(2, 8):  # digest readers (Prune showed the tree level): the round's packets carry digests
        assert node.readers.reads(f"p{i}", 1)
    assert node.tree.first_end(lazy)
    node.broadcast_state(b"w", 1.0)
    node.publish_root_digest("ab" * 32, 1, 1000, now=1.0)  # a fresh digest: the next tick runs a round
    assert node.tree.announcing() == [lazy]
    out = node.tick(max(1.0, node._next_gossip))
    msgs = [m for s in to(out, port) for m in s.packet.messages]
    assert IHave((message_id(b"w"),)) in msgs
    assert node.tree.announcing() == []


def test_announcements_use_short_ids_only_to_members_that_read_them() -> None:
    """Type 19 (4 B an id) to a member that showed it reads it, the long IHAVE (8 B an id) to any other: an
    older agent drops a whole packet holding a type it does not know."""
    node, lazy = node_with_lazy_peer()
    port = int(lazy[1:])
    node.broadcast_state(b"w", 1.0)
    flush = node.tick(1.0 + node.tree.lazy_interval)
    assert IHave((message_id(b"w"),)) in [m for s in to(flush, port) for m in s.packet.messages]
    node.readers.show(lazy, SHORT_IDS)
    node.broadcast_state(b"v", 2.0)
    flush = node.tick(2.0 + node.tree.lazy_interval)
    msgs = [m for s in to(flush, port) for m in s.packet.messages]
    assert ShortIds(ShortKind.IHAVE, (short_id(message_id(b"v")),)) in msgs
    assert not any(isinstance(m, IHave) for m in msgs)
    # Its short graft is answered with the payload.
    out = node.handle_packet(Packet(lazy, (ShortIds(ShortKind.GRAFT, (short_id(message_id(b"v")),)),)),
                             ("h", port), 2.5)
    assert StateRumor(b"v") in [m for s in to(out, port) for m in s.packet.messages]
