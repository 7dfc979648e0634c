"""A critical write's first copy says nothing about the tree link it came over (core/plumtree.py `receive`): its
writer sends it to every member at once (core/critical.py), past whatever the link still queues. So it neither
proves the link (a link that never delivered a payload first is pruned at its first duplicate), nor ends its
late streak (LATE_STREAK_PRUNE), nor is a sample of how late eager copies come (core/graft_timing.py). A normal
first copy does all three: each test shows both. Pure core, explicit times."""

from __future__ import annotations

import pytest

from gossip_agent.core.plumtree import LATE_STREAK_PRUNE, Plumtree

LAZY, GRAFT = 0.4, 0.1


def tree() -> Plumtree:
    """"a" with eager links to "b" and "c" ("c" proven: it delivered a payload first) and a lazy one to "d"."""
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    t.on_ihave((), "d", 0.0)
    assert t.receive(1, "c", 0.0)
    return t


@pytest.mark.parametrize("critical", [True, False])
def test_a_critical_first_copy_does_not_prove_its_link(critical: bool) -> None:
    t = tree()
    assert t.receive(900, "b", 1.0, critical=critical)  # "b"'s first first copy
    assert t.receive(2, "c", 1.1) and not t.receive(2, "b", 1.1)  # then a duplicate over "b"
    pruned = "b" in t.tick(1.2).prunes
    assert pruned == critical, "a link proven by a critical copy waits PRUNE_AFTER duplicates to be pruned"


def late_after_repair(t: Plumtree, ident: int, at: float) -> bool:
    """"d" announces `ident`, "a" grafts it, "d" answers, then "b"'s eager copy comes: late after a repair (one
    more in "b"'s late streak). Whether that copy was taken as late (a sample of how late "b"'s copies come)."""
    samples = t.timing.samples
    t.on_ihave((ident,), "d", at)
    assert t.tick(at + GRAFT).grafts == {"d": [ident]}
    assert t.receive(ident, "d", at + GRAFT + 0.05)  # the answer: a repair
    assert not t.receive(ident, "b", at + GRAFT + 0.1)
    t.tick(at + GRAFT + 0.2)  # (the graft's link made lazy again)
    return t.timing.samples == samples + 1


@pytest.mark.parametrize("critical", [True, False])
def test_a_critical_first_copy_does_not_end_its_link_s_late_streak(critical: bool) -> None:
    """After LATE_STREAK_PRUNE late copies in a row "b" is slow, not late: its next late copy is an ordinary
    duplicate (no sample). A critical first copy from "b" in between must not start the streak again."""
    t = tree()
    assert t.receive(2, "b", 0.0)
    for k in range(LATE_STREAK_PRUNE):  # 10 s apart: no graft pressure builds up, each graft links at once
        assert late_after_repair(t, 100 + k, 10.0 * (k + 1))
    now = 10.0 * (LATE_STREAK_PRUNE + 1)
    assert t.receive(900, "b", now, critical=critical)
    assert late_after_repair(t, 200, now + 10.0) == (not critical)


@pytest.mark.parametrize("critical", [True, False])
def test_a_critical_first_copy_of_an_announced_payload_is_no_late_eager_sample(critical: bool) -> None:
    t = tree()
    t.on_ihave((500,), "d", 1.0)
    samples = t.timing.samples
    assert t.receive(500, "b", 1.05, critical=critical)  # before its graft: no graft for it
    assert t.timing.samples == samples + (not critical)


@pytest.mark.parametrize("critical", [True, False])
def test_a_critical_first_copy_of_a_given_up_payload_is_no_late_eager_sample(critical: bool) -> None:
    t = tree()
    t.on_ihave((500,), "d", 1.0)
    assert t.tick(1.0 + GRAFT).grafts == {"d": [500]}  # "d" never answers
    t.tick(1.5)  # no announcer left: given up (to anti-entropy)
    assert t.grafted(500) is False
    samples = t.timing.samples
    assert t.receive(500, "b", 2.0, critical=critical)
    assert t.timing.samples == samples + (not critical)
