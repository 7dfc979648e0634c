"""The broadcast tree's pure core (core/plumtree.py): prune on a duplicate, graft on a missed payload, repair
when members die, and every memory bounded. Times are explicit; nothing here sends anything."""

from __future__ import annotations

import math

import pytest

from gossip_agent.core import plumtree
from gossip_agent.core.plumtree import Plumtree, message_id, short_id

LAZY, GRAFT = 0.05, 0.1


def tree(eager: tuple[str, ...] = ("b", "c"), lazy: tuple[str, ...] = ("d", "e")) -> Plumtree:
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in eager:
        assert t.add_neighbour(name)
    t.tick(0.0)  # sends the link requests
    for name in lazy:
        t.on_ihave((), name, 0.0)  # an (empty) announcement makes the sender a lazy neighbour
    return t


def test_message_id_is_a_stable_64_bit_hash_of_the_payload() -> None:
    assert message_id(b"x") == message_id(b"x") != message_id(b"y")
    assert 0 <= message_id(b"x") < 1 << 64


def test_new_neighbours_are_told_by_an_empty_graft_at_once() -> None:
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    assert t.wanted() == 2
    assert t.add_neighbour("b") and not t.add_neighbour("b") and not t.add_neighbour("a")
    assert t.next_deadline() == 0.0  # a time already past: at once (never -inf: drivers read it as never)
    assert t.tick(0.0).grafts == {"b": []}
    assert t.next_deadline() == math.inf and t.wanted() == 1


def test_a_new_payload_goes_to_eager_peers_but_its_sender_and_is_announced_to_lazy_ones_in_a_batch() -> None:
    t = tree()
    assert t.receive(1, "b", 1.0)
    assert sorted(t.deliver(1, b"one", "b", 1.0)) == ["c"]
    assert t.receive(2, None, 1.01)
    assert sorted(t.deliver(2, b"two", None, 1.01)) == ["b", "c"]
    assert t.next_deadline() == pytest.approx(1.0 + LAZY)
    assert t.tick(1.04).ihaves == {}
    out = t.tick(1.0 + LAZY)
    assert out.ihaves == {"d": [1, 2], "e": [1, 2]} and not out.grafts and not out.prunes


def test_duplicates_in_a_row_prune_the_link_they_came_over_at_once() -> None:
    t = tree()
    assert t.receive(100, "c", 0.5)  # "c" is a tree link in use (it delivered first once)
    for ident in range(1, plumtree.PRUNE_AFTER + 1):
        assert "c" in t.eager
        assert t.receive(ident, "b", 1.0)
        t.deliver(ident, b"x", "b", 1.0)
        assert not t.receive(ident, "c", 1.01)
    assert "c" in t.lazy and "c" not in t.eager
    assert t.next_deadline() == 0.0  # the prune leaves at the next tick, not with the lazy flush
    assert t.tick(1.02).prunes == {"c"}
    assert not t.receive(1, "b", 1.1)  # the same link again: nothing new to prune
    assert t.tick(2.0).prunes == set()


def test_under_graft_pressure_a_proven_link_is_pruned_only_after_more_duplicates_in_a_row() -> None:
    """Busy agents reorder the copies of two working paths, and a prune then draws the pushes in flight as
    more duplicates and rewires the tree (grafts): under graft pressure (core/graft_timing.py) a proven link
    waits for PRUNE_AFTER_PRESSURE duplicates in a row. Without pressure, PRUNE_AFTER as before."""
    assert plumtree.PRUNE_AFTER_PRESSURE > plumtree.PRUNE_AFTER
    t = tree()
    for _ in range(20):  # grafts for a fifth of at least PRESSURE_FLOOR payloads: pressure
        t.timing.grafted(0.5)
    assert t.timing.pressure(0.5)
    assert t.receive(100, "c", 0.5)  # "c" is a tree link in use
    for ident in range(1, plumtree.PRUNE_AFTER_PRESSURE + 1):
        assert "c" in t.eager, ident
        assert t.receive(ident, "b", 0.5)
        assert not t.receive(ident, "c", 0.5)
    assert "c" in t.lazy and t.tick(0.6).prunes == {"c"}
    # The pressure decays (core/graft_timing.py PRESSURE_TAU): then PRUNE_AFTER again.
    quiet = tree()
    for _ in range(20):
        quiet.timing.grafted(0.5)
    assert not quiet.timing.pressure(30.0)
    assert quiet.receive(100, "c", 30.0)
    for ident in range(1, plumtree.PRUNE_AFTER + 1):
        assert quiet.receive(ident, "b", 30.0)
        assert not quiet.receive(ident, "c", 30.0)
    assert "c" in quiet.lazy


def test_a_link_that_never_delivered_first_is_pruned_at_its_first_duplicate() -> None:
    """While the tree forms every member has eager_target eager links, ~3x a tree's: one that has only ever
    brought duplicates is redundant, and waiting for PRUNE_AFTER of them cost ~0.2 payload copies per member
    per write over the first ~20 writes. A link made eager again (a graft) has to prove itself anew."""
    t = tree()
    assert t.receive(1, "b", 1.0)
    assert not t.receive(1, "c", 1.01)
    assert t.eager == {"b"} and t.tick(1.02).prunes == {"c"}
    t.on_graft((), "c")  # eager again
    assert t.receive(2, "c", 1.1)  # delivers first: in use
    for ident in range(3, 3 + plumtree.PRUNE_AFTER - 1):
        assert t.receive(ident, "b", 1.2)
        assert not t.receive(ident, "c", 1.2)
    assert t.eager == {"b", "c"}  # a used link waits for PRUNE_AFTER in a row
    t.on_prune("c")
    t.on_graft((), "c")  # pruned and grafted again: unproven once more
    assert t.receive(10, "b", 1.3) and not t.receive(10, "c", 1.3)
    assert t.eager == {"b"}


def test_a_duplicate_from_a_lazy_peer_drops_its_queued_announcement() -> None:
    """A peer that sent us the payload holds it: announcing it back would be a wasted id (and often a packet)."""
    t = tree()
    assert t.receive(1, "b", 1.0)
    t.deliver(1, b"one", "b", 1.0)
    assert not t.receive(1, "d", 1.01)  # an off-tree copy from lazy "d"
    assert t.tick(1.0 + LAZY).ihaves == {"e": [1]}


def test_riders_take_the_oldest_queued_announcements_and_leave_the_rest_for_the_flush() -> None:
    """`take_for`: ids that ride on a packet going to the peer anyway are not announced again at the flush."""
    t = tree()
    for ident in (1, 2, 3):
        t.receive(ident, None, 1.0)
        t.deliver(ident, b"x", None, 1.0)
    assert t.take_for("d", 2) == [1, 2]
    assert t.take_for("d", 0) == [] and t.take_for("nobody") == []
    assert t.take_for("e") == [1, 2, 3]
    assert t.tick(1.0 + LAZY).ihaves == {"d": [3]}


def test_announcements_leave_at_the_gossip_tick_or_one_lazy_interval_after_the_first() -> None:
    """The Node flushes at its gossip tick, after the round's gossip packets took their riders: a lazy peer that
    got one needs no packet of its own. Without a tick, the flush comes one lazy interval after the first id."""
    t = tree()
    t.receive(1, None, 1.0)
    t.deliver(1, b"x", None, 1.0)
    assert t.next_deadline() == pytest.approx(1.0 + LAZY)
    assert t.take_for("d") == [1]  # rode on a gossip packet to d
    assert t.tick(1.01).ihaves == {}
    assert t.tick(1.02, flush=True).ihaves == {"e": [1]}
    assert t.next_deadline() == math.inf and t.tick(1.03, flush=True).ihaves == {}


def test_a_link_that_delivers_first_in_between_is_not_pruned() -> None:
    """A duplicate now and then is a transient of rewiring elsewhere; a redundant link duplicates every time."""
    t = tree()
    assert t.receive(100, "b", 0.5) and t.receive(101, "c", 0.5)  # both tree links in use
    for ident in range(10):
        first, second = ("b", "c") if ident % 2 else ("c", "b")
        assert t.receive(ident, first, 1.0)
        assert not t.receive(ident, second, 1.0)
    assert t.eager == {"b", "c"} and t.tick(2.0).prunes == set()


def test_the_last_eager_link_is_never_pruned() -> None:
    t = tree()
    t.on_prune("b")
    assert t.eager == {"c"}
    for ident in range(2 * plumtree.PRUNE_AFTER):
        t.receive(ident, None, 1.0)
        assert not t.receive(ident, "c", 1.0)
    assert t.eager == {"c"}
    t.on_prune("c")  # theirs: the link stays, and they are asked to keep it
    assert t.eager == {"c"} and t.tick(2.0).grafts == {"c": []} and t.kept_links == 1


def test_a_duplicate_after_an_off_tree_copy_prunes_the_off_tree_link_not_the_tree() -> None:
    """A critical write's extra push (or a peer whose link request was lost) arrives first from a member that
    is not an eager neighbour: the tree link that delivers next is the one to keep."""
    t = tree()
    assert t.receive(1, "x", 1.0)
    assert "x" in t.lazy  # links are symmetric: we announce to it from now on
    assert not t.receive(1, "b", 1.01)
    assert t.eager == {"b", "c"}
    assert t.tick(2.0).prunes == {"x"}


def test_a_copy_from_a_member_that_cannot_read_tree_messages_prunes_nothing() -> None:
    """An older agent's flood is no tree link: it must not cost one (a prune would only make it drop the packet)."""
    t = tree()
    assert t.receive(1, "old", 1.0, can_prune=False)
    assert "old" not in t.neighbours()
    assert not t.receive(1, "b", 1.01)
    assert not t.receive(1, "old", 1.02, can_prune=False)
    assert t.eager == {"b", "c"} and t.tick(2.0).prunes == set()


def test_prune_and_graft_from_a_peer_move_its_link() -> None:
    t = tree()
    t.on_prune("b")
    assert "b" in t.lazy and "b" not in t.eager
    t.on_prune("zz")  # no link: nothing happens
    assert "zz" not in t.neighbours()
    assert t.on_graft((), "d").payloads == []
    assert "d" in t.eager and "d" not in t.lazy


def test_an_ihave_for_a_missing_payload_grafts_the_announcer_after_the_timeout() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    t.on_ihave((7,), "e", 1.02)
    assert t.next_deadline() == pytest.approx(1.0 + GRAFT)
    assert t.tick(1.0 + GRAFT - 0.001).grafts == {}
    out = t.tick(1.0 + GRAFT)
    assert out.grafts == {"d": [7]}
    assert "d" in t.eager and "d" not in t.lazy  # the repaired link is eager at once
    # Still missing a graft timeout later: the next announcer; then nobody is left and it is given up.
    assert t.tick(1.0 + 2 * GRAFT + 1e-9).grafts == {"e": [7]}
    assert t.tick(1.0 + 3 * GRAFT + 1e-9).grafts == {}
    assert t.stats()["missing"] == 0 and t.next_deadline() == math.inf


def test_a_payload_that_arrives_in_time_cancels_the_graft() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    assert t.receive(7, "b", 1.05)
    assert t.tick(1.0 + GRAFT).grafts == {}


def test_an_ihave_for_a_payload_we_hold_needs_no_announcement_back() -> None:
    t = tree()
    assert t.receive(1, "b", 1.0)
    t.deliver(1, b"one", "b", 1.0)
    t.on_ihave((1,), "d", 1.01)
    assert t.tick(1.0 + LAZY).ihaves == {"e": [1]}


def test_a_graft_is_answered_from_the_cache_while_it_lasts() -> None:
    t = tree()
    assert t.receive(1, None, 1.0)
    t.deliver(1, b"one", None, 1.0)
    assert t.on_graft((1, 99), "e").payloads == [(b"one", False)]
    assert "e" in t.eager
    t.tick(1.0 + plumtree.CACHE_SECONDS + 1)
    assert t.on_graft((1,), "e").payloads == []


def test_the_second_end_of_a_lazy_link_holds_its_announcements_and_the_first_ends_cancel_them() -> None:
    """Each id crosses a healthy lazy link once: the member whose name sorts first announces at its next flush,
    the other holds its ids past that flush, and the first end's IHAVE removes them (without the hold both ends
    announced every id to each other whenever writes kept their queues busy)."""
    z = Plumtree("z", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("d", "e"):
        z.on_ihave((), name, 0.0)
    assert not z.first_end("d") and tree().first_end("d")
    for ident in (1, 2):
        assert z.receive(ident, None, 1.0)
        z.deliver(ident, b"x", None, 1.0)
    assert z.tick(1.0 + LAZY).ihaves == {}  # the first end's flush is still due
    z.on_ihave((1, 2), "d", 1.0 + LAZY)  # d, the first end, announced: nothing to tell it
    assert z.tick(1.0 + 2 * LAZY).ihaves == {"e": [1, 2]}  # the next flush: e said nothing, it may lack them
    assert z.tick(1.0 + 4 * LAZY).ihaves == {} and z.next_deadline() == math.inf


def test_a_cached_payload_keeps_its_class_for_grafts() -> None:
    """The class travels with the cached payload (the Node kept a second, separately bounded set of critical
    ids, which could forget a payload's class while the cache still held it)."""
    t = tree()
    assert t.receive(1, None, 1.0) and t.receive(2, None, 1.0)
    t.deliver(1, b"urgent", None, 1.0, critical=True)
    t.deliver(2, b"plain", None, 1.0)
    assert t.cached(1) == (b"urgent", True)
    assert t.on_graft((2, 1), "e").payloads == [(b"plain", False), (b"urgent", True)]


def test_member_death_clears_its_links_and_asks_for_new_neighbours() -> None:
    t = tree(lazy=())
    assert t.wanted() == 0
    t.on_ihave((5,), "b", 1.0)
    t.remove("b")
    t.remove("c")
    assert t.neighbours() == set() and t.wanted() == 2
    assert t.tick(1.0 + GRAFT).grafts == {}  # its only announcer died: nobody to graft
    assert t.add_neighbour("f") and t.add_neighbour("g")
    assert t.tick(2.0).grafts == {"f": [], "g": []}


def test_every_memory_is_bounded() -> None:
    t = Plumtree("a", eager_target=2, lazy_interval=LAZY, graft_timeout=GRAFT, max_neighbours=4)
    for i in range(50):
        t.on_ihave((), f"p{i}", 0.0)
        t.on_graft((), f"q{i}")
    assert len(t.neighbours()) == 4
    for i in range(plumtree.MAX_SEEN + 10):
        t.receive(i, None, 0.0)
    assert t.stats()["seen"] == plumtree.MAX_SEEN
    many = tuple(range(1 << 40, (1 << 40) + plumtree.MAX_MISSING + 10))
    t.on_ihave(many, "p0", 0.0)
    assert t.stats()["missing"] == plumtree.MAX_MISSING_PER_PEER  # one announcer's share (tests/hostile)
    for k in range(1, 8):
        t.on_ihave(tuple(i + k * len(many) for i in many), f"p{k}", 0.0)
    assert t.stats()["missing"] == plumtree.MAX_MISSING
    big = b"x" * (64 << 10)
    for i in range(100):
        t.deliver(i, big, None, 0.0)
    assert t.stats()["cached"] * len(big) <= plumtree.MAX_CACHED_BYTES
    for i in range(plumtree.MAX_ANNOUNCE_PER_PEER + 10):
        t.deliver(i, b"", None, 0.0)
    assert all(len(ids) <= plumtree.MAX_ANNOUNCE_PER_PEER for ids in t.tick(1.0).ihaves.values())
    assert len(t.on_graft(tuple(range(1000)), "p0").payloads) <= plumtree.MAX_GRAFT_ANSWER


def test_each_member_picks_its_own_neighbours_whatever_others_picked() -> None:
    """Links others asked for do not count: with them, members ended with ~fanout links in all, a sparse graph
    in pieces; fanout picks each (a random k-out graph) is connected."""
    t = tree(eager=(), lazy=("d", "e", "f"))
    t.on_graft((), "g")
    assert t.wanted() == 2
    assert t.add_neighbour("d")  # a lazy link may be promoted
    assert t.eager == {"d", "g"} and t.lazy == {"e", "f"} and t.wanted() == 1
    assert t.tick(1.0).grafts == {"d": []}


def test_short_announcements_are_grafted_by_short_id_and_answered_from_the_cache() -> None:
    """Wire type 19 names payloads by 4-byte short ids: a short IHAVE for a payload we lack is grafted by its
    short id, one for a payload we hold cancels our announcement of it, and a short GRAFT finds the payload."""
    t = tree()
    full = message_id(b"lost")
    t.on_ihave((short_id(full),), "d", 1.0, short=True)
    out = t.tick(1.0 + GRAFT)
    assert out.short_grafts == {"d": [short_id(full)]} and out.grafts == {}
    t.on_ihave((short_id(message_id(b"late")),), "e", 2.0, short=True)
    assert t.receive(message_id(b"late"), "b", 2.01)  # arrived in time: no graft
    assert t.tick(2.0 + GRAFT).short_grafts == {}
    held = message_id(b"held")
    assert t.receive(held, None, 3.0)
    t.deliver(held, b"held", None, 3.0)
    t.on_ihave((short_id(held),), "d", 3.01, short=True)  # d holds it: not announced to d
    assert t.tick(3.0 + LAZY).ihaves == {"e": [held]}
    assert t.on_graft((short_id(held), 12345), "e", short=True).payloads == [(b"held", False)]


def test_a_payload_goes_to_none_of_the_members_that_announced_it_to_us() -> None:
    """Members that announced a payload hold it: under load its late eager copy reached us after their
    announcements, and a push or an announcement to them was a duplicate (or wasted ids) at their end."""
    t = tree()
    t.on_ihave((7,), "c", 1.0)  # an eager neighbour that announced it (its end holds the link lazy)
    t.on_ihave((7,), "d", 1.0)
    assert t.receive(7, "b", 1.02)
    assert t.deliver(7, b"seven", "b", 1.02) == []
    assert t.tick(1.02 + LAZY).ihaves == {"e": [7]}
    # Only for that payload: the next one goes to every eager neighbour but its sender, and to every lazy one.
    assert t.receive(8, "b", 1.1)
    assert t.deliver(8, b"eight", "b", 1.1) == ["c"]
    assert t.tick(1.1 + LAZY).ihaves == {"d": [8], "e": [8]}


def test_a_payload_goes_to_none_of_the_members_it_was_grafted_from() -> None:
    t = tree()
    t.on_ihave((7,), "d", 1.0)
    assert t.tick(1.0 + GRAFT).grafts == {"d": [7]}  # "d" is eager now
    assert t.receive(7, "d", 1.0 + GRAFT + 0.01)  # the graft's answer
    assert sorted(t.deliver(7, b"seven", "d", 1.0 + GRAFT + 0.01)) == ["b", "c"]
    t.on_ihave((9,), "e", 2.0)
    assert t.tick(2.0 + GRAFT).grafts == {"e": [9]}
    assert t.receive(9, "b", 2.0 + GRAFT + 0.01)  # the eager copy came after all: the graft was needless
    assert "e" in t.lazy  # (undone: core/plumtree.py _settle)
    assert t.deliver(9, b"nine", "b", 2.0 + GRAFT + 0.01) == ["c", "d"]
    assert 9 not in t.tick(3.0).ihaves.get("e", [])  # it holds it: asked, it answers with the payload


def test_a_run_of_three_duplicates_between_firsts_keeps_a_link_in_use() -> None:
    """Under overload agents' queues reorder the copies of two eager paths: a link in use sends short runs of
    duplicates between its firsts. Pruned at 3 in a row, such links were cut while in use, the pushes still in
    flight came as duplicates and the rewired tree grafted (simulator: 0.16 duplicates per delivery, 0.07 at 4)."""
    t = tree()
    ident = 0
    for _ in range(3):
        ident += 1
        assert t.receive(ident, "c", 1.0)  # "c" first
        t.deliver(ident, b"x", "c", 1.0)
        for _ in range(3):  # then three in a row where "b" was first
            ident += 1
            assert t.receive(ident, "b", 1.0)
            t.deliver(ident, b"x", "b", 1.0)
            assert not t.receive(ident, "c", 1.01)
    assert "c" in t.eager and t.tick(1.02).prunes == set()
