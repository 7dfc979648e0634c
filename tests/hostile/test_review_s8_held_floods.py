"""Review (session 8): writes the tree's flood fallback dropped past its bound are counted where operators see
them (core/held_floods.py says "oldest dropped first and counted"; the count stayed inside HeldFloods, and no
metric or node stat showed that older agents would get those writes only by anti-entropy)."""

from __future__ import annotations

from tests.core.test_held_floods import tree_node


def test_writes_dropped_from_the_held_floods_show_in_the_node_stats() -> None:
    node = tree_node(peers=6)  # nobody known to read tree messages yet: every write is held for the fallback
    node._held_floods.max_items = 2
    node.tick(0.01)
    for i in range(5):
        node.broadcast_state(b"w%d" % i, 1.0)
    assert node._held_floods.dropped == 3
    assert node.stats["tree_held_floods_dropped"] == 3
