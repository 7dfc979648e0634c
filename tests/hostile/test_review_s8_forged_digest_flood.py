"""Review (session 8): one forged digest row leaves an older agent without our writes' flood fallback.

On the broadcast tree, a writer also floods its write to live members not known to read tree messages (an older
agent learns it that way), and since this session leaves out members "whose own convergence digest we hold"
(core/tree_dissemination.py `_flood_to_others`, core/held_floods.py). A digest row about a member is taken from any
known sender, from any host (core/digest_riders.py `_on_root_digest`: only who *holds* it needs the member's host),
and then pushed on to every member like an honest row. So one datagram naming an older agent's digest (spoofed in
plaintext mode, or sent by any member) makes every writer that hears the row skip that agent: it got every later
write only by anti-entropy, until it left: one packet did it, from a host that is not the named sender's. Now only
first-hand evidence leaves a member out of the fallback (its own digest or tree message, from its own host:
core/readers.py), so a row about a member, forged or relayed, changes nothing."""

from __future__ import annotations

from gossip_agent.core.digests import ROOT_PREFIX_BYTES
from gossip_agent.core.messages import Digest, Packet
from gossip_agent.core.node import Node
from tests.hostile.core_support import lan_node

ROOT = b"\x01" * ROOT_PREFIX_BYTES
OLDER = "p7"  # an agent of the previous release: it never sends a digest or a tree message


def _node() -> Node:
    node = lan_node(peers=6)  # p2..p7
    for i in range(2, 7):  # the newer members show themselves: their own digest, from their own host
        node.handle_packet(Packet(f"p{i}", (Digest(f"p{i}", 1, ROOT, 1, 1),)), (f"10.0.0.{i}", 7946), 0.5)
    return node


def _floods_after_a_write(node: Node) -> int:
    node.tick(0.9)
    node.broadcast_state(b"w", 1.0)
    node.tick(1.0 + node.config.gossip.interval)
    return node.stats["tree_flood_fallback"]


def test_without_a_forgery_the_older_agent_gets_the_fallback() -> None:
    node = _node()
    assert OLDER not in node.tree.eager  # (else the tree itself reaches it: the scenario would prove nothing)
    assert _floods_after_a_write(node) == 1


def test_a_forged_digest_row_does_not_remove_an_older_agent_from_the_fallback() -> None:
    node = _node()
    spoof = Packet("p2", (Digest(OLDER, 1, ROOT, 1, 1),))
    node.handle_packet(spoof, ("10.9.9.9", 7946), 0.6)  # "from" p2, not from p2's host
    assert _floods_after_a_write(node) == 1


def test_a_row_about_an_older_agent_from_a_real_member_does_not_remove_it_either() -> None:
    """A member (honest or not) passing on a row about another is not that member showing itself."""
    node = _node()
    node.handle_packet(Packet("p2", (Digest(OLDER, 1, ROOT, 1, 1),)), ("10.0.0.2", 7946), 0.6)  # p2's own host
    assert OLDER in node.root_digests
    assert _floods_after_a_write(node) == 1


def test_the_members_own_digest_from_its_own_host_does_remove_it() -> None:
    """First-hand evidence still counts: an agent that sends its own digest reads the tree."""
    node = _node()
    node.handle_packet(Packet(OLDER, (Digest(OLDER, 1, ROOT, 1, 1),)), ("10.0.0.7", 7946), 0.6)
    assert _floods_after_a_write(node) == 0
