"""A forged duplicate push cannot cut a broadcast-tree link (core/tree_dissemination.py `_tree_receive`,
core/plumtree.py).

A payload that reaches us twice over the tree counts against the link it came over the second time: an eager
link is pruned after PRUNE_AFTER duplicates in a row (at the first, if it never delivered a payload first).
Payload ids are no secret, so without encryption anyone could send packets of payloads we already hold naming
an eager neighbour as their sender: we pruned that neighbour's link, and with a few forgeries per neighbour
the tree around us was gone (until grafts rebuilt it at the cost of a graft timeout per write). A push that does
not come from the named member's table host now changes no link: a duplicate is dropped and counted
(`tree_duplicates_unverified`), a new payload is delivered as any is but makes nobody a neighbour.
"""

from __future__ import annotations

from gossip_agent.core.messages import Packet, StateRumor
from gossip_agent.core.plumtree import PRUNE_AFTER, message_id
from tests.hostile.core_support import SPOOFER, lan_node


def test_forged_duplicates_from_an_eager_neighbour_prune_nothing() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.01)
    eager = sorted(node.tree.eager)
    assert len(eager) >= 2
    honest, victim = eager[0], eager[1]
    honest_addr = node.table.get(honest).addr  # type: ignore[union-attr]
    for k in range(3 * PRUNE_AFTER):
        payload = b"w%d" % k
        node.handle_packet(Packet(honest, (StateRumor(payload),)), honest_addr, 0.1 + k / 100)
        node.handle_packet(Packet(victim, (StateRumor(payload),)), SPOOFER, 0.1 + k / 100 + 0.001)
    node.tick(0.5)
    assert victim in node.tree.eager
    assert node.stats["tree_duplicates_unverified"] == 3 * PRUNE_AFTER


def test_the_same_duplicates_from_the_neighbours_host_do_prune() -> None:
    """The check passes honest traffic: the member's own duplicates still prune its link."""
    node = lan_node(tree_readers=True)
    node.tick(0.01)
    honest, victim = sorted(node.tree.eager)[:2]
    addrs = {n: node.table.get(n).addr for n in (honest, victim)}  # type: ignore[union-attr]
    for k in range(3 * PRUNE_AFTER):
        payload = b"w%d" % k
        node.handle_packet(Packet(honest, (StateRumor(payload),)), addrs[honest], 0.1 + k / 100)
        node.handle_packet(Packet(victim, (StateRumor(payload),)), addrs[victim], 0.1 + k / 100 + 0.001)
    assert victim not in node.tree.eager


def test_a_forged_new_payload_is_delivered_but_makes_no_link() -> None:
    node = lan_node(tree_readers=True)
    node.tick(0.01)
    outsider = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.neighbours())
    node.handle_packet(Packet(outsider, (StateRumor(b"fresh"),)), SPOOFER, 0.1)
    assert node.tree.seen(message_id(b"fresh"))
    assert outsider not in node.tree.neighbours()


def test_a_forged_new_payload_from_an_eager_neighbour_does_not_shield_its_link() -> None:
    """A link that never delivered a payload first is pruned at its first duplicate, a proven one only after
    PRUNE_AFTER: a forged first delivery "from" a redundant eager link must not make it proven."""
    node = lan_node(tree_readers=True)
    node.tick(0.01)
    victim = sorted(node.tree.eager)[1]
    node.handle_packet(Packet(victim, (StateRumor(b"first"),)), SPOOFER, 0.1)
    assert victim not in node.tree._proven

