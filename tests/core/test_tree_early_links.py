"""A link request that arrives before its sender's Alive still makes the link (core/node.py `_early_links`).

A newcomer picks tree neighbours from the members its seed told it of and sends each an empty GRAFT; a member
that has not yet heard the newcomer's Alive dropped that request (`tree_unknown_member`), and the link existed
only at the newcomer's end: nobody pushed or announced to it, and in a small cluster it missed every write
until anti-entropy (tests/core/test_node.py's 8-member cluster: 2 seeds of 30). The request is now remembered
with the host it came from, and the link made when the member's Alive names that host.
"""

from __future__ import annotations

from gossip_agent.core.messages import Alive, Graft, Packet
from tests.hostile.core_support import SPOOFER, lan_node


def test_a_link_request_before_the_alive_makes_the_link_once_the_alive_comes() -> None:
    node = lan_node(tree_readers=True, peers=3)
    node.handle_packet(Packet("new", (Graft(()),)), ("10.0.0.50", 7946), 0.1)
    assert "new" not in node.tree.neighbours() and node.stats["tree_unknown_member"] == 1
    node.handle_packet(Packet("p2", (Alive("new", 1, ("10.0.0.50", 7946)),)), ("10.0.0.2", 7946), 0.2)
    assert "new" in node.tree.eager
    assert node.stats["tree_early_links"] == 1


def test_a_request_from_another_host_than_the_alive_names_makes_no_link() -> None:
    node = lan_node(tree_readers=True, peers=3)
    node.handle_packet(Packet("new", (Graft(()),)), SPOOFER, 0.1)
    node.handle_packet(Packet("p2", (Alive("new", 1, ("10.0.0.50", 7946)),)), ("10.0.0.2", 7946), 0.2)
    assert "new" not in node.tree.neighbours()


def test_remembered_requests_are_bounded() -> None:
    node = lan_node(tree_readers=True, peers=3)
    for i in range(1000):
        node.handle_packet(Packet(f"x{i}", (Graft(()),)), SPOOFER, 0.1)
    assert len(node._early_links) <= 64
