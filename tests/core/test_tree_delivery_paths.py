"""The Node counts how each payload new to it came on the broadcast tree (`tree_delivered_*` stats, which
bench_load reports to explain the latency tail): over an eager link, as the answer to its own graft, as a
critical write's direct copy, or otherwise (a pull answer, a flood)."""

from __future__ import annotations

from gossip_agent.core.messages import IHave, Packet, StateRumor
from gossip_agent.core.plumtree import message_id
from tests.core.test_critical_reach import tree_node


def test_deliveries_are_counted_by_path() -> None:
    node = tree_node(8)
    eager = sorted(node.tree.eager)
    other = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager)
    addr = {f"p{i}": ("h", i) for i in range(2, 10)}
    node.handle_packet(Packet(eager[0], (StateRumor(b"e"),)), addr[eager[0]], 1.0)
    node.handle_packet(Packet(eager[0], (StateRumor(b"e"),)), addr[eager[0]], 1.0)  # a duplicate: not counted
    node.handle_packet(Packet(other, (StateRumor(b"c", critical=True),)), addr[other], 1.1)
    node.handle_packet(Packet(other, (StateRumor(b"o"),)), addr[other], 1.2)
    # An announcement of a payload we lack, from a lazy neighbour; no eager push comes: we graft, it answers.
    lazy = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager and f"p{i}" != other)
    node.handle_packet(Packet(lazy, (IHave((message_id(b"g"),)),)), addr[lazy], 2.0)
    node.tick(2.0 + node.tree.graft_timeout)
    assert node.tree.grafted(message_id(b"g"))
    node.handle_packet(Packet(lazy, (StateRumor(b"g"),)), addr[lazy], 2.2)
    counts = {k.removeprefix("tree_delivered_"): v for k, v in node.stats.items() if k.startswith("tree_delivered_")}
    assert counts == {"eager": 1, "critical_direct": 1, "other": 1, "graft": 1}


def test_a_late_eager_push_after_a_graft_is_the_trees_not_the_grafts_answer() -> None:
    """We grafted a lazy announcer, then the eager neighbour's push came first: that copy is the tree's push,
    late (the graft's answer, if any, is a duplicate)."""
    node = tree_node(8)
    eager = sorted(node.tree.eager)[0]
    lazy = next(f"p{i}" for i in range(2, 10) if f"p{i}" not in node.tree.eager)
    node.handle_packet(Packet(lazy, (IHave((message_id(b"g"),)),)), ("h", int(lazy[1:])), 2.0)
    node.tick(2.0 + node.tree.graft_timeout)
    assert node.tree.grafted(message_id(b"g"), lazy) and not node.tree.grafted(message_id(b"g"), eager)
    node.handle_packet(Packet(eager, (StateRumor(b"g"),)), ("h", int(eager[1:])), 2.2)
    counts = {k.removeprefix("tree_delivered_"): v for k, v in node.stats.items() if k.startswith("tree_delivered_")}
    assert counts == {"eager": 1}
