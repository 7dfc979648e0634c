"""The broadcast tree under topology-aware choice (core/plumtree.py `far`): far picks start as lazy links, so
the eager links across zones are only those a graft made, and a missed payload is grafted from a near
announcer before a far one. Pure core, explicit times."""

from __future__ import annotations

from gossip_agent.core.plumtree import Plumtree

LAZY, GRAFT = 0.05, 0.1
FAR = {"x", "y", "z"}


def zoned(**kwargs: object) -> Plumtree:
    t = Plumtree("a", eager_target=3, lazy_interval=LAZY, graft_timeout=GRAFT, **kwargs)  # type: ignore[arg-type]
    t.is_far = FAR.__contains__
    return t


def test_a_far_pick_becomes_a_lazy_link_once_we_have_an_eager_one() -> None:
    t = zoned()
    assert t.add_neighbour("b") and t.add_neighbour("x") and t.add_neighbour("c")
    assert t.eager == {"b", "c"} and t.lazy == {"x"}
    assert t.wanted() == 0  # the far pick counts among our picks: the far share of the graph stays
    assert t.tick(0.0).grafts == {"b": [], "c": []}  # no link request to the far one (our IHAVEs tell it)
    assert t.receive(1, None, 1.0)
    assert t.deliver(1, b"one", None, 1.0) == ["b", "c"]
    assert t.tick(1.0 + LAZY).ihaves == {"x": [1]}  # announced across zones, not pushed


def test_a_far_pick_is_eager_while_we_have_no_eager_link_and_every_pick_is_eager_without_topology() -> None:
    t = zoned()
    assert t.add_neighbour("x")
    assert t.eager == {"x"}  # else nothing would reach us but by a graft
    plain = Plumtree("a", eager_target=3, lazy_interval=LAZY, graft_timeout=GRAFT)
    for name in ("b", "x", "c"):
        assert plain.add_neighbour(name)
    assert plain.eager == {"b", "x", "c"} and not plain.far("x")


def test_a_graft_across_zones_makes_that_link_eager_at_both_ends() -> None:
    t = zoned()
    t.add_neighbour("b")
    t.add_neighbour("x")
    t.tick(0.0)
    t.on_ihave((7,), "x", 1.0)
    out = t.tick(1.0 + GRAFT)
    assert out.grafts == {"x": [7]} and "x" in t.eager  # the zone's bridge
    far_end = zoned()
    far_end.me = "x"
    far_end.is_far = {"a"}.__contains__
    far_end.on_ihave((), "a", 0.0)
    assert "a" in far_end.lazy
    far_end.on_graft((7,), "a")
    assert "a" in far_end.eager


def test_a_missed_payload_is_grafted_from_a_near_announcer_before_a_far_one() -> None:
    t = zoned()
    t.add_neighbour("b")
    t.tick(0.0)
    t.on_ihave((7,), "x", 1.0)   # a far member announces first,
    t.on_ihave((7,), "y", 1.01)
    t.on_ihave((7,), "d", 1.02)  # then a near one: it is asked first
    out = t.tick(1.0 + GRAFT)
    assert out.grafts == {"d": [7]}
    out = t.tick(1.0 + 2 * GRAFT + 0.001)
    assert out.grafts == {"x": [7]}  # then the far ones, in the order they announced
    out = t.tick(1.0 + 3 * GRAFT + 0.002)
    assert out.grafts == {"y": [7]}


def test_without_topology_announcers_are_grafted_in_the_order_they_announced() -> None:
    t = Plumtree("a", eager_target=3, lazy_interval=LAZY, graft_timeout=GRAFT)
    t.add_neighbour("b")
    t.tick(0.0)
    t.on_ihave((7,), "x", 1.0)
    t.on_ihave((7,), "d", 1.02)
    assert t.tick(1.0 + GRAFT).grafts == {"x": [7]}
