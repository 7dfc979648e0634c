"""Broadcast-tree control messages from a hostile peer (core/tree_dissemination.py `_on_tree_message`,
core/plumtree.py).

- A GRAFT makes us push the payloads it names to the grafting member (up to MAX_GRAFT_ANSWER a packet). Ids are
  no secret: any member hears them in IHAVEs. Without encryption a packet naming another member as its sender
  pushed up to 16 cached payloads at that member, ~100x the graft's bytes, as often as it was sent; and the
  same graft replayed drew the same payloads again. Tree messages now count only from the member's table host,
  and each payload answers one member's graft once.
- A spoofed IHAVE filled the missing-id table (bounded, but then real repairs are left to anti-entropy); a
  spoofed PRUNE cut a tree link. Both are dropped and counted now.
"""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Graft, IHave, Packet, Prune, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import message_id
from tests.hostile.core_support import SPOOFER, lan_node


def _tree_node() -> tuple[Node, str, list[int]]:
    node = lan_node(tree_readers=True)
    node.tick(0.01)
    victim = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager)
    payloads = [b"v" * 1000 + b"%d" % k for k in range(20)]
    for p in payloads:
        node.broadcast_state(p, 0.1)
    return node, victim, [message_id(p) for p in payloads]


def _payload_bytes_to(effects: list[Effect], name: str, node: Node) -> int:
    addr = node.table.get(name).addr  # type: ignore[union-attr]
    return sum(len(codec.encode_packet(e.packet)) for e in effects if isinstance(e, Send) and e.to == addr
               and any(isinstance(m, StateRumor) for m in e.packet.messages))


def test_a_spoofed_graft_pushes_nothing_at_the_member_it_names() -> None:
    node, victim, ids = _tree_node()
    graft = Packet(victim, (Graft(tuple(ids[:16])),))
    out = node.handle_packet(graft, SPOOFER, 0.2)
    assert _payload_bytes_to(out, victim, node) == 0
    assert node.stats["tree_unverified"] == 1 and node.stats["tree_graft_answers"] == 0
    own = node.table.get(victim).addr  # type: ignore[union-attr]
    out = node.handle_packet(graft, own, 0.21)  # the member itself: answered
    sent = _payload_bytes_to(out, victim, node)
    print(f"graft {len(codec.encode_packet(graft))} B -> {sent} B of payloads")
    assert sent > 16 * 1000


def test_a_repeated_graft_is_answered_once() -> None:
    node, victim, ids = _tree_node()
    own = node.table.get(victim).addr  # type: ignore[union-attr]
    graft = Packet(victim, (Graft(tuple(ids[:16])),))
    assert _payload_bytes_to(node.handle_packet(graft, own, 0.2), victim, node) > 16 * 1000
    for k in range(5):
        assert _payload_bytes_to(node.handle_packet(graft, own, 0.3 + k / 100), victim, node) == 0
    assert node.stats["tree_graft_repeats"] == 5 * 16
    # Other ids still are answered, and to other members the same ids too.
    assert _payload_bytes_to(node.handle_packet(Packet(victim, (Graft(tuple(ids[16:])),)), own, 0.4),
                             victim, node) > 4 * 1000
    other = next(f"p{i}" for i in range(2, 10) if f"p{i}" != victim)
    addr = node.table.get(other).addr  # type: ignore[union-attr]
    assert _payload_bytes_to(node.handle_packet(Packet(other, (Graft(tuple(ids[:4])),)), addr, 0.5),
                             other, node) > 4 * 1000


def test_spoofed_ihaves_and_prunes_change_nothing() -> None:
    node, victim, _ = _tree_node()
    eager = set(node.tree.eager)
    missing = node.tree.stats()["missing"]
    junk = tuple(range(1, 129))
    for k in range(20):
        node.handle_packet(Packet(victim, (IHave(junk[:]),)), SPOOFER, 0.2 + k / 1000)
    assert node.tree.stats()["missing"] == missing
    target = next(iter(eager))
    node.handle_packet(Packet(target, (Prune(),)), SPOOFER, 0.3)
    assert node.tree.eager == eager
