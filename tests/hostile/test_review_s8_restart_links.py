"""Review (session 8): a link request that comes before a *restarted* member's Alive still makes the link.

This session remembers an empty GRAFT (a link request) from a member whose Alive has not reached us yet, and
makes the link when that Alive names the host the request came from (core/node.py `_early_links`): without
it, the link existed only at the newcomer's end, and nobody pushed or announced writes to it. The same race
happens when a member restarts under its name (a StatefulSet pod): with a new address (its request is not
from the host our table holds: dropped as `tree_unverified`), or at its address while we still hold it dead
(`tree_unknown_member`). Its Alive then removes its old links (`tree.remove`: "it picks new ones"), but the
ones it picked were already dropped: it got our writes only by anti-entropy or by chance.
"""

from __future__ import annotations

from gossip_agent.core.messages import Alive, Dead, Graft, Packet
from gossip_agent.core.node import Node
from tests.hostile.core_support import SPOOFER, lan_node


def _outsider(node: Node) -> str:
    """A live member that is no tree neighbour of ours (its link request is what would make one)."""
    node.tick(0.05)
    return next(f"p{i}" for i in range(2, 12) if f"p{i}" not in node.tree.neighbours())


def test_a_member_restarted_at_a_new_address_gets_the_link_it_asked_for_before_its_alive() -> None:
    node = lan_node(tree_readers=True, peers=10)
    name = _outsider(node)
    new = ("10.0.0.60", 7946)
    node.handle_packet(Packet(name, (Graft(()),)), new, 0.1)  # before its new Alive reached us
    node.handle_packet(Packet("p2", (Alive(name, 2, new),)), ("10.0.0.2", 7946), 0.2)
    assert name in node.tree.eager


def test_a_member_back_from_the_dead_at_its_address_gets_the_link_it_asked_for_before_its_alive() -> None:
    node = lan_node(tree_readers=True, peers=10)
    name = _outsider(node)
    addr = node.table.get(name).addr  # type: ignore[union-attr]
    node.handle_packet(Packet("p2", (Dead(name, 1, "p2"),)), ("10.0.0.2", 7946), 0.1)
    assert not node.table.is_live(name)
    node.handle_packet(Packet(name, (Graft(()),)), addr, 0.2)
    node.handle_packet(Packet("p2", (Alive(name, 2, addr),)), ("10.0.0.2", 7946), 0.3)
    assert name in node.tree.eager


def test_a_spoofed_request_for_a_member_makes_no_link_when_it_moves_elsewhere() -> None:
    node = lan_node(tree_readers=True, peers=10)
    name = _outsider(node)
    node.handle_packet(Packet(name, (Graft(()),)), SPOOFER, 0.1)
    node.handle_packet(Packet("p2", (Alive(name, 2, ("10.0.0.60", 7946)),)), ("10.0.0.2", 7946), 0.2)
    assert name not in node.tree.neighbours()
