"""A critical write's first copy leaves its link's run of duplicates alone (core/plumtree.py `receive`).

Its writer sends it to every member directly (core/critical.py), and the tree links push it too: that it came
first over a link says nothing about the link, as it neither proves the link nor ends its late streak
(tests/core/test_s19_plumtree_critical.py). A redundant eager link whose normal copies keep coming as duplicates
is pruned after PRUNE_AFTER of them in a row; critical first copies arriving over it in between must not start
the run again, or a steady trickle of critical writes keeps the redundant link for good. A normal first copy in
between does end the run (the link delivers): each test shows both. Pure core, explicit times."""

from __future__ import annotations

import pytest

from gossip_agent.core.plumtree import PRUNE_AFTER, Plumtree
from tests.core.test_s19_plumtree_critical import tree


def proven_b() -> Plumtree:
    """"a" with eager links to "b" and "c", both proven (each delivered a payload first), and a lazy one to "d"."""
    t = tree()
    assert t.receive(2, "b", 0.0)
    return t


@pytest.mark.parametrize("critical", [True, False])
def test_a_critical_first_copy_does_not_reset_the_link_s_duplicate_run(critical: bool) -> None:
    t = proven_b()
    at = 1.0
    for k in range(PRUNE_AFTER):
        assert t.receive(900 + k, "b", at, critical=critical)  # a first copy over "b" between the duplicates
        assert t.receive(100 + k, "c", at + 0.01) and not t.receive(100 + k, "b", at + 0.02)  # "b" duplicates
        assert not t.timing.pressure(at)  # (PRUNE_AFTER applies, not PRUNE_AFTER_PRESSURE)
        at += 0.05
    pruned = "b" in t.tick(at).prunes
    assert pruned == critical, "PRUNE_AFTER duplicates in a row, critical first copies between them or not"
    assert ("b" in t.lazy) == critical

