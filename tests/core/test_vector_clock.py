"""Version vectors: a partial order whose merge is the least upper bound; safe pruning; compact encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core.vector_clock import EMPTY, Order, VersionVector, join_dots

NODES = ["a", "b", "c", "d"]
vvs = st.dictionaries(st.sampled_from(NODES), st.integers(0, 4)).map(VersionVector)

INVERSE = {Order.BEFORE: Order.AFTER, Order.AFTER: Order.BEFORE, Order.EQUAL: Order.EQUAL,
           Order.CONCURRENT: Order.CONCURRENT}


def test_compare_cases() -> None:
    a = VersionVector({"a": 1})
    b = VersionVector({"a": 1, "b": 1})
    c = VersionVector({"c": 1})
    assert a.compare(b) is Order.BEFORE
    assert b.compare(a) is Order.AFTER
    assert a.compare(VersionVector({"a": 1, "z": 0})) is Order.EQUAL
    assert a.compare(c) is Order.CONCURRENT


def test_increment_names_the_new_write() -> None:
    vv, dot = VersionVector({"a": 2}).increment("a")
    assert dot == ("a", 3) and vv.covers(dot) and not VersionVector({"a": 2}).covers(dot)
    assert EMPTY.add(("b", 4)).get("b") == 4


@settings(max_examples=150)
@given(vvs, vvs)
def test_compare_is_antisymmetric(a: VersionVector, b: VersionVector) -> None:
    assert b.compare(a) is INVERSE[a.compare(b)]
    assert (a.compare(b) is Order.EQUAL) == (a == b)


@settings(max_examples=150)
@given(vvs, vvs, vvs)
def test_descends_is_a_partial_order(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    assert a.descends(a)
    if a.descends(b) and b.descends(c):
        assert a.descends(c)
    if a.descends(b) and b.descends(a):
        assert a == b


@settings(max_examples=150)
@given(vvs, vvs, vvs)
def test_merge_is_a_least_upper_bound(a: VersionVector, b: VersionVector, c: VersionVector) -> None:
    m = a.merge(b)
    assert m.descends(a) and m.descends(b)
    if c.descends(a) and c.descends(b):
        assert c.descends(m)
    assert m == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a


@settings(max_examples=100)
@given(vvs, st.sampled_from(NODES))
def test_increment_moves_strictly_after(a: VersionVector, node: str) -> None:
    b, dot = a.increment(node)
    assert a.compare(b) is Order.BEFORE and b.covers(dot) and not a.covers(dot)


def test_prune_drops_retired_entries_but_keeps_live_dots() -> None:
    vv = VersionVector({"a": 5, "gone": 7, "old": 3})
    pruned = vv.prune({"gone", "old"}, [("gone", 4), ("a", 5)])
    assert pruned == VersionVector({"a": 5, "gone": 4})
    assert vv.prune(set()) is vv
    assert vv.prune({"nobody"}) is vv


@settings(max_examples=100)
@given(vvs, vvs)
def test_pruning_commutes_with_merge(a: VersionVector, b: VersionVector) -> None:
    """Re-applying the rule on ingest means a merge never brings a pruned entry back."""
    retired = {"c", "d"}
    assert a.merge(b).prune(retired) == a.prune(retired).merge(b.prune(retired))


@settings(max_examples=100)
@given(vvs)
def test_plain_round_trip_is_compact(a: VersionVector) -> None:
    plain = a.to_plain()
    assert len(plain) == 2 * len(a)
    assert VersionVector.from_plain(plain) == a


@pytest.mark.parametrize("bad", [None, "ab", ["a"], ["a", 0], ["a", -1], [1, 1], ["a", 1, "a", 2], ["a", True]])
def test_from_plain_rejects_garbage(bad: object) -> None:
    with pytest.raises(ValueError):
        VersionVector.from_plain(bad)


def test_join_dots_keeps_concurrent_and_drops_overwritten() -> None:
    # a wrote a1; b saw a1 and overwrote it with b1; c wrote c1 concurrently with both.
    a = ({("a", 1): "x"}, VersionVector({"a": 1}))
    b = ({("b", 1): "y"}, VersionVector({"a": 1, "b": 1}))
    c = ({("c", 1): "z"}, VersionVector({"c": 1}))
    assert join_dots(*a, *b) == {("b", 1): "y"}
    assert join_dots(*b, *c) == {("b", 1): "y", ("c", 1): "z"}
    assert join_dots(*a, *a) == a[0]
