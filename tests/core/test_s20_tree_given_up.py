"""An id given up (no announcer left to graft) is forgotten once its first copy comes, whichever way it comes
(core/plumtree.py `receive`, `Plumtree._given_up`).

A given-up id is remembered (MAX_MISSING of them, oldest forgotten first) so that its eager copy, if it still
comes, shows how far that link has got and how late its copies come (EAGER_STALL_LAZY, core/graft_timing.py).
Only a normal first copy over an eager link reads the entry; a first copy that came another way (a critical
write's, which says nothing about the link, or one over an off-tree link) left it in place, and no later copy
is ever a first copy again: the entry only took room. Critical writes given up so pushed out the ids whose
eager copies were still to come, and those copies then counted as fresh: no sample of how late they came, and
the link taken for further ahead than it was. Pure core, explicit times."""

from __future__ import annotations

import pytest

from gossip_agent.core.plumtree import MAX_MISSING, MAX_MISSING_PER_PEER, Plumtree
from tests.core.test_s19_plumtree_critical import GRAFT, tree


def give_up(t: Plumtree, ids: list[int], at: float) -> float:
    """"d" announces `ids` at `at`, "a" grafts them from "d", which never answers: given up to anti-entropy."""
    t.on_ihave(tuple(ids), "d", at)
    assert t.tick(at + GRAFT).grafts == {"d": ids}
    t.tick(at + 3 * GRAFT)
    assert not any(t.grafted(ident) for ident in ids)  # (no longer waited for)
    return at + 4 * GRAFT


@pytest.mark.parametrize("how", ["critical", "off-tree"])
def test_given_up_ids_whose_first_copy_came_otherwise_take_no_room(how: str) -> None:
    t = tree()
    at = give_up(t, [500], 1.0)  # its eager copy over "b" is still to come
    batch = MAX_MISSING_PER_PEER // 2
    for first in range(10_000, 10_000 + MAX_MISSING, batch):  # as many given up since, each of them then received
        ids = list(range(first, first + batch))
        at = give_up(t, ids, at)
        for ident in ids:
            if how == "critical":
                assert t.receive(ident, "b", at, critical=True)  # the writer's direct copy, or a tree push
            else:
                assert t.receive(ident, "e", at)  # a pull answer, say: "e" becomes a lazy neighbour
    assert not t.timing.pressure(at)
    samples = t.timing.samples
    assert t.receive(500, "b", at + 0.1)
    assert t.timing.samples == samples + 1, "the late eager copy of an id given up is a sample of how late"
