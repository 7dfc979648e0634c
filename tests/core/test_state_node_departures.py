"""The state core's member view when members depart: a member that left or was reaped no longer counts, so its
published key count stops gating whether our root is computed and its root stops waking the repair planner."""

from __future__ import annotations

import random
from collections import Counter

from gossip_agent.core.digests import root_prefix
from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.messages import Digest, MemberSnapshot, MemberState
from gossip_agent.core.state_node import AntiEntropyWith, StateNode
from tests.core.test_state_node import WALL, addr, core, of, run

_STATE_OF = {EventKind.JOIN: MemberState.ALIVE, EventKind.ALIVE: MemberState.ALIVE,
             EventKind.UPDATE: MemberState.ALIVE, EventKind.SUSPECT: MemberState.SUSPECT,
             EventKind.DEAD: MemberState.DEAD, EventKind.LEFT: MemberState.LEFT,
             EventKind.REAP: MemberState.DEAD}


def event(kind: EventKind, name: str) -> MemberEvent:
    return MemberEvent(kind, MemberSnapshot(name, addr(name), 1, _STATE_OF[kind], {}))


def assert_counts_match_the_members(c: StateNode) -> None:
    """The incremental counts equal the ones computed afresh from the members the view holds."""
    view = c._view
    counted = [p for p in view.peers.values() if p.state != MemberState.LEFT]
    assert view.counted == len(counted)
    assert view.counted_roots == Counter(p.root for p in counted)
    assert view.counted_keys == Counter(p.keys for p in counted if p.root is not None)
    assert list(view.alive) == [n for n, p in view.peers.items() if p.state == MemberState.ALIVE]


def test_the_counts_follow_members_through_leaves_reaps_and_returns() -> None:
    rng = random.Random(5)
    kinds = list(_STATE_OF)
    for _ in range(50):
        c = core("a")
        names = [f"m{i}" for i in range(4)]
        seq = 0
        for step in range(60):
            name = rng.choice(names)
            if rng.random() < 0.4:
                seq += 1
                c.on_root_digest(Digest(name, seq, bytes([rng.randint(1, 3)]) * 8, rng.randint(0, 2), 0), step)
            else:
                c.on_member_event(event(rng.choice(kinds), name), step)
            assert_counts_match_the_members(c)
        for name in names:
            c.on_member_event(event(EventKind.REAP, name), 100.0)
        assert (c._view.counted, c._view.counted_roots, c._view.counted_keys) == (0, Counter(), Counter())


def _with_a_member_publishing_our_key_count(departure: EventKind) -> StateNode:
    """`a` holds one key; `b` publishes a key count of one under another root (so our root would be computed, and
    b is a divergent peer to repair from); then b departs."""
    c = core("a")
    c.on_member_event(event(EventKind.JOIN, "b"), 0.0)
    c.on_member_event(event(EventKind.JOIN, "q"), 0.0)  # stays: a member publishing nothing
    run(c, 5.0)
    c.put("k", b"v", None, 5.0, WALL + 5)
    c.on_root_digest(Digest("b", 1, bytes([7]) * 8, 1, c.store.clock.wall_ms), 5.0)
    assert c._view.may_publish(len(c.store)) and c._someone_differs()
    c.on_member_event(event(departure, "b"), 5.05)
    return c


def test_a_member_that_left_or_was_reaped_no_longer_makes_us_compute_our_root_or_plan_a_repair() -> None:
    for departure in (EventKind.LEFT, EventKind.REAP):
        c = _with_a_member_publishing_our_key_count(departure)
        assert c._view.counted_keys == Counter()  # q publishes no root: no count is left
        assert not c._view.may_publish(len(c.store))
        c.store.merkle.update("k", bytes(32))  # the tree is dirty again: any computation of our root shows
        c.store.merkle.update("k", c.store.merkle.digest_of("k") or bytes(32))
        effects = c.tick(5.15, WALL + 5.15)  # the observation (no digest is due: the replica is not quiet)
        assert c.store.merkle._dirty_leaves, departure  # our root was not computed
        assert not c._someone_differs()
        assert of(AntiEntropyWith, effects + run(c, 10.0)) == [], departure
        assert c._repair_at == float("inf"), departure  # the planner sleeps: nobody to repair from
        status = c.convergence(WALL + 10)
        assert status.distinct_roots == 1 and status.fraction == 1 / 2  # q's missing root, and ours


def test_a_member_back_after_leaving_counts_again() -> None:
    c = _with_a_member_publishing_our_key_count(EventKind.LEFT)
    c.on_member_event(event(EventKind.ALIVE, "b"), 6.0)
    assert c._view.counted_keys == Counter({1: 1}) and c._view.may_publish(1)
    s = c.store.stats()
    c.on_root_digest(Digest("b", 2, root_prefix(s.root), s.keys, s.hlc.wall_ms), 6.1)
    run(c, 7.0)
    assert c.convergence(WALL + 7).fraction == 2 / 3


def test_a_whole_member_table_installed_at_once_forgets_the_members_it_lacks() -> None:
    """`set_members` installs the whole table: a member it no longer holds does not keep counting (there is no
    event left that would remove it)."""
    c = core("a")
    c.put("k", b"v", None, 0.0, WALL)
    c.set_members([event(EventKind.JOIN, n).member for n in ("b", "q")], 0.0)
    c.on_root_digest(Digest("b", 1, bytes([7]) * 8, 1, c.store.clock.wall_ms), 0.0)
    assert c._view.counted == 2 and c._view.may_publish(1) and c._someone_differs()
    c.set_members([event(EventKind.JOIN, "q").member], 1.0)
    assert set(c._view.peers) == {"q"} and c._view.counted_keys == Counter()
    assert "b" not in c._digest_roots and not c._someone_differs()
    assert_counts_match_the_members(c)
