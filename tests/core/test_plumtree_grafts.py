"""Grafts under load (core/plumtree.py, core/graft_timing.py): the graft wait learns how late eager copies come,
the copies a graft draws prune no link, and a truly lost eager link is still repaired as fast as before.
Times are explicit; nothing here sends anything."""

from __future__ import annotations

import pytest

from gossip_agent.core import graft_timing, plumtree
from gossip_agent.core.graft_timing import GraftTiming
from gossip_agent.core.plumtree import Plumtree

LAZY, GRAFT = 0.4, 0.1


def tree() -> Plumtree:
    """"a" with eager links to "b" and "c" (both in use) and lazy ones to "d" and "e"."""
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "c"):
        assert t.add_neighbour(name)
    t.tick(0.0)
    for name in ("d", "e"):
        t.on_ihave((), name, 0.0)
    assert t.receive(1000, "b", 0.0) and t.receive(1001, "c", 0.0)  # both links in use
    return t


def late_eager(t: Plumtree, first_id: int, delay: float, count: int, at: float) -> float:
    """`count` payloads announced by "d" at `at`, grafted when their timers fire, and pushed by "b" `delay`
    after the announcement: each a late eager copy (overload: many at once)."""
    ids = range(first_id, first_id + count)
    for ident in ids:
        t.on_ihave((ident,), "d", at)
    t.tick(at + delay - 1e-6)
    for ident in ids:
        assert t.receive(ident, "b", at + delay)
    t.tick(at + delay)
    return at + delay + 0.01


# -- the graft wait -----------------------------------------------------------------------------------------
def test_the_wait_is_the_base_without_samples_and_a_bounded_quantile_with_them() -> None:
    g = GraftTiming(0.1, 0.8)
    assert g.timeout(0.0) == 0.1 and g.extra(0.0) == 0.0
    for k in range(20):
        g.late_eager(0.3 + 0.01 * k, 1.0)
    assert g.pressure(1.0)  # late copies and no payload on time
    assert g.timeout(1.0) == pytest.approx(0.48)  # the 90th percentile of 0.30 .. 0.49
    g.late_eager(-1.0, 1.0)  # nonsense is ignored
    g.late_eager(float("nan"), 1.0)
    assert g.samples == 20
    for _ in range(graft_timing.WINDOW):
        g.late_eager(5.0, 1.0)
    assert g.timeout(1.0) == 0.8  # the cap
    assert g.timeout(1.0 + graft_timing.MAX_AGE + 1) == 0.1  # old samples forgotten: back to the base


def test_without_graft_pressure_the_wait_stays_the_base() -> None:
    """A quiet cluster with loss sees some late eager copies too (a member up the tree grafted its copy):
    learning from them made every member below wait as long, level after level (simulator N=150, 5 % loss:
    p99 0.9 -> 3.2 s)."""
    g = GraftTiming(0.1, 2.0)
    for k in range(200):
        g.payload(1.0 + k * 0.01)
        if k % 40 == 0:
            g.late_eager(0.5, 1.0 + k * 0.01)
    assert g.samples == 5 and not g.pressure(3.0) and g.timeout(3.0) == 0.1
    for k in range(40):  # then overload: most payloads are late or grafted
        g.payload(3.0 + k * 0.01)
        g.late_eager(0.5, 3.0 + k * 0.01)
        g.grafted(3.0 + k * 0.01)
    assert g.pressure(3.2) and g.timeout(3.2) == 0.5
    assert not g.pressure(3.2 + 10 * graft_timing.PRESSURE_TAU) or g.timeout(30.0) == 0.1


def test_late_eager_copies_make_the_tree_wait_longer_before_grafting() -> None:
    t = tree()
    at = late_eager(t, 1, 0.5, 12, 1.0)
    assert t.timing.samples == 12 and t.timing.pressure(at)
    t.on_ihave((70,), "d", at)
    deadline = t.next_deadline()
    assert deadline == pytest.approx(at + 0.5)  # base 0.1 + learnt 0.4 (under pressure: all were late)
    assert t.tick(at + GRAFT).grafts == {}  # the old timeout would have grafted by now
    assert t.tick(deadline).grafts == {"d": [70]}
    # Much later eager copies: the wait is capped (a lost link is still repaired within a few lazy intervals).
    at = late_eager(t, 100, 5.0, graft_timing.WINDOW, 30.0)
    assert t.timing.pressure(at)
    t.on_ihave((71,), "d", at)
    assert t.next_deadline() == pytest.approx(at + plumtree.GRAFT_CAP_LAZY * LAZY)


def test_a_lost_eager_link_is_grafted_at_the_base_timeout_in_a_quiet_tree() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    assert t.next_deadline() == pytest.approx(1.0 + GRAFT)
    out = t.tick(1.0 + GRAFT)
    assert out.grafts == {"d": [7]} and "d" in t.eager
    assert t.receive(7, "d", 1.0 + GRAFT + 0.01)  # the repair: nothing late follows, so it stands
    assert t.tick(5.0).prunes == set() and "d" in t.eager


# -- the copies a graft draws ---------------------------------------------------------------------------------
def test_a_graft_answered_after_the_eager_copy_is_undone_and_prunes_nothing_else() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    assert t.tick(1.0 + GRAFT).grafts == {"d": [7]}
    assert t.receive(7, "b", 1.15)  # the eager copy, late: the graft was needless
    assert t.timing.samples == 1
    assert "d" in t.lazy and "d" not in t.eager and t.eager == {"b", "c"}
    out = t.tick(1.16)
    assert out.prunes == {"d"} and out.undone == {"d"}  # the graft is undone at d's end too: no other prune
    assert not t.receive(7, "d", 1.2)  # the graft's answer: expected, prunes nothing
    assert t.tick(1.3).prunes == set() and t.eager == {"b", "c"} and "d" in t.lazy


def test_the_late_eager_copy_after_a_repair_prunes_no_tree_link() -> None:
    """Under load the eager copy comes after the graft's answer. Counted as a duplicate, PRUNE_AFTER of them cut
    the working link and left the grafted one: the tree rewired at every late payload."""
    t = tree()
    at = 1.0
    for ident in range(1, plumtree.PRUNE_AFTER + 2):
        t.on_ihave((ident,), "d", at)
        assert t.tick(at + GRAFT).grafts == {"d": [ident]}
        assert t.receive(ident, "d", at + GRAFT + 0.01)  # the answer comes first
        assert not t.receive(ident, "b", at + GRAFT + 0.05)  # then b's copy, late
        out = t.tick(at + GRAFT + 0.06)
        assert "b" not in out.prunes and "b" in t.eager
        assert out.prunes == out.undone == {"d"}  # the graft's link goes back to lazy: the tree is as before
        assert "d" in t.lazy
        at += 1.0
    assert t.eager == {"b", "c"}
    assert t.timing.samples == plumtree.PRUNE_AFTER + 1


def test_a_graft_link_that_delivered_first_since_is_kept_and_later_duplicates_prune_as_usual() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    t.tick(1.0 + GRAFT)
    assert t.receive(7, "d", 1.11)
    assert t.receive(8, "d", 1.12)  # d is now the faster tree link
    assert not t.receive(7, "b", 1.2)  # b's late copy: excused once, and d is kept
    assert t.tick(1.21).prunes == set() and {"b", "d"} <= t.eager
    for ident in (8,):  # from now on b's duplicates count as usual
        assert not t.receive(ident, "b", 1.3)
    assert t.tick(1.31).prunes == set()  # (b is in use: it waits for PRUNE_AFTER in a row)


def test_on_graft_returns_what_it_passed_over() -> None:
    t = tree()
    assert t.receive(1, None, 1.0)
    t.deliver(1, b"one", None, 1.0)
    first = t.on_graft((1,), "e")
    assert first.payloads == [(b"one", False)] and first.repeats == 0
    again = t.on_graft((1, 1), "e")
    assert again.payloads == [] and again.repeats == 2


# -- prunes ------------------------------------------------------------------------------------------------
def test_a_member_told_prune_lately_is_not_told_again_for_each_push_still_in_flight() -> None:
    """Under load a pruned member's pushes keep coming for a while (in flight, or queued at a busy member):
    each one was a duplicate from a non-eager member and drew a PRUNE of its own."""
    t = tree()
    assert t.receive(1, "b", 1.0)
    assert not t.receive(1, "c", 1.0)  # (c is in use: one duplicate is not enough)
    assert t.receive(2, "d", 1.0) and not t.receive(2, "b", 1.01)  # an off-tree copy first: d is pruned
    assert t.tick(1.02).prunes == {"d"}
    for k, at in enumerate((1.1, 1.2, 1.5)):
        assert t.receive(10 + k, "b", at) and not t.receive(10 + k, "d", at + 0.01)  # d's pushes in flight
        out = t.tick(at + 0.02)
        assert out.prunes == set() and out.prunes_spared == 1
    later = 1.02 + plumtree.PRUNE_RESEND_LAZY * LAZY + 0.1
    assert t.receive(20, "b", later) and not t.receive(20, "d", later)  # still pushing: the PRUNE was lost
    assert t.tick(later).prunes == {"d"}
    t.on_graft((), "d")  # d asks for the link again: eager, and a prune is news again
    assert t.receive(21, "b", later + 0.1) and not t.receive(21, "d", later + 0.1)
    assert t.tick(later + 0.2).prunes == {"d"}
