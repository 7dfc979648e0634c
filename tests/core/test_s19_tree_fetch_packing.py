"""A fetch (core/plumtree.py EAGER_STALL_LAZY: a GRAFT with a PRUNE after it, so the announcer answers and its link
stays lazy) leaves in one packet even when the announcements due to the same peer fill the packet before it.

Split after the GRAFT, a lost second packet left the announcer's link eager at its end only: it pushed us every
payload, each a duplicate, until our prune of that off-tree link. The Node's tree tick is called as the Node calls
it at its gossip tick (`flush`), so the announcements and the fetch leave together; times are explicit.
"""

from __future__ import annotations

from gossip_agent.core import codec, graft_timing
from gossip_agent.core.digests import DIGEST_ALLOWANCE
from gossip_agent.core.effects import Effect, Send
from gossip_agent.core.messages import Message, Packet, Prune, ShortIds, ShortKind, StateRumor
from gossip_agent.core.node import Node
from gossip_agent.core.plumtree import MAX_IDS_PER_MESSAGE, message_id, short_id
from tests.core.test_node_tree import tree_node

MISSING = message_id(b"missing")


def filling(budget: int) -> int:
    """How many announcements (short ids, as to a member that reads them) and a fetch's one-id short GRAFT fill a
    packet of control messages (`budget`) so that the PRUNE after the GRAFT no longer fits."""
    graft = codec.message_size(ShortIds(ShortKind.GRAFT, (0,)))
    prune = codec.message_size(Prune())
    for n in range(1, 4 * MAX_IDS_PER_MESSAGE):
        ihaves = sum(codec.message_size(ShortIds(ShortKind.IHAVE, tuple(range(i, min(n, i + MAX_IDS_PER_MESSAGE)))))
                     for i in range(0, n, MAX_IDS_PER_MESSAGE))
        if budget - prune < ihaves + graft <= budget:
            return n
    raise AssertionError("no announcement count puts the boundary between GRAFT and PRUNE")


def fetch_with_announcements(announced: int) -> tuple[Node, str, list[tuple[Message, ...]]]:
    """Node "a" under graft pressure with a working eager link; lazy "p2" announced MISSING (by short id) at 1.0,
    then `announced` payloads came over the eager link (each to be announced to "p2"). At the graft timeout "a"
    fetches MISSING from "p2": the packets to "p2" of that tick."""
    node = tree_node(readers=6)
    node.tick(0.01)
    tree = node.tree
    for _ in range(graft_timing.WINDOW):  # graft pressure; the learnt wait stays the base graft timeout
        tree.timing.late_eager(tree.graft_timeout, 1.0)
    addr = {m.name: m.addr for m in node.members()}
    eager = sorted(tree.eager)[0]
    lazy = next(name for name in sorted(addr) if name not in tree.eager and name != "a")
    node.handle_packet(Packet(lazy, (ShortIds(ShortKind.IHAVE, (short_id(MISSING),)),)), addr[lazy], 1.0)
    for k in range(announced):  # (payloads nobody announced: the eager link has got past MISSING, no hold)
        node.handle_packet(Packet(eager, (StateRumor(b"w%d" % k),)), addr[eager], 1.0 + tree.graft_timeout)
    out: list[Effect] = []
    node._tick_tree(1.0 + tree.graft_timeout + 0.01, out, flush=True)
    assert node.stats["tree_grafts_fetch"] == 1 and lazy not in tree.eager  # a fetch, not a link
    return node, lazy, [e.packet.messages for e in out if isinstance(e, Send) and e.to == addr[lazy]]


def test_a_fetch_s_graft_and_prune_share_a_packet_when_the_announcements_leave_room_for_the_graft_only() -> None:
    node = tree_node(readers=6)
    n = filling(node._budget(DIGEST_ALLOWANCE))
    _, _, packets = fetch_with_announcements(n)
    fetch = (ShortIds(ShortKind.GRAFT, (short_id(MISSING),)), Prune())
    assert [p for p in packets if fetch[0] in p] == [p for p in packets if Prune() in p], \
        f"GRAFT and PRUNE of one fetch in different packets: {[[type(m).__name__ for m in p] for p in packets]}"
    assert packets[-1][-2:] == fetch
    assert sum(len(m.ids) for p in packets for m in p if isinstance(m, ShortIds) and m.kind == ShortKind.IHAVE) == n


def test_a_fetch_that_fits_behind_the_announcements_still_rides_with_them() -> None:
    node = tree_node(readers=6)
    n = filling(node._budget(DIGEST_ALLOWANCE)) - 1  # 4 bytes fewer: the PRUNE fits too
    _, _, packets = fetch_with_announcements(n)
    assert len(packets) == 1 and packets[0][-2:] == (ShortIds(ShortKind.GRAFT, (short_id(MISSING),)), Prune())
