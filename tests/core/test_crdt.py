"""CRDTs: merge is commutative, associative and idempotent on reachable states; the types mean what
they say (add-wins, last-writer-wins, concurrent values kept); plain data round-trips."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core import crdt
from gossip_agent.core.crdt import Crdt, GCounter, LWWRegister, MVRegister, ORSet, PNCounter
from gossip_agent.core.hlc import Hlc

NODES = ("a", "b", "c")
ELEMENTS = ("x", "y", "z")


def _op(kind: type[Crdt], state: Any, node: str, arg: int, clock: int) -> Any:
    if kind is GCounter:
        return state.increment(node, arg % 4)
    if kind is PNCounter:
        return state.increment(node, arg % 7 - 3)
    if kind is ORSet:
        element = ELEMENTS[arg % 3]
        return state.add(node, element) if arg % 2 else state.remove(element)
    if kind is LWWRegister:
        return state.assign(bytes([arg % 256]), Hlc(clock, arg % 3, node))
    return state.assign(node, bytes([arg % 256]))


# A script: (replica, op-or-merge, argument). Running it on 3 replicas yields reachable states, which is
# what the lattice laws are about (causal CRDTs have invariants arbitrary data would break).
scripts = st.lists(st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 1000)), min_size=1, max_size=30)


def _reachable(kind: type[Crdt], script: list[tuple[int, bool, int]]) -> list[Any]:
    replicas: list[Any] = [kind() for _ in NODES]
    seen: list[Any] = []
    for step, (i, merge, arg) in enumerate(script):
        if merge:
            replicas[i] = replicas[i].merge(replicas[arg % 3])
        else:
            replicas[i] = _op(kind, replicas[i], NODES[i], arg, step)
        seen.append(replicas[i])
    return seen + replicas


KINDS = [GCounter, PNCounter, ORSet, LWWRegister, MVRegister]


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.TYPE)
@settings(max_examples=60)
@given(script=scripts, picks=st.tuples(st.integers(0, 100), st.integers(0, 100), st.integers(0, 100)))
def test_merge_is_a_semilattice(kind: type[Crdt], script: list[tuple[int, bool, int]],
                                picks: tuple[int, int, int]) -> None:
    states = _reachable(kind, script)
    a, b, c = (states[p % len(states)] for p in picks)
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.TYPE)
@settings(max_examples=40)
@given(script=scripts)
def test_plain_round_trip(kind: type[Crdt], script: list[tuple[int, bool, int]]) -> None:
    for state in _reachable(kind, script)[-3:]:
        assert crdt.from_plain(crdt.to_plain(state)) == state


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.TYPE)
@settings(max_examples=40)
@given(script=scripts)
def test_replicas_converge_after_a_full_exchange(kind: type[Crdt], script: list[tuple[int, bool, int]]) -> None:
    replicas = _reachable(kind, script)[-3:]
    everything = replicas[0].merge(replicas[1]).merge(replicas[2])
    for order in ((0, 1, 2), (2, 1, 0), (1, 2, 0)):
        acc = replicas[order[0]]
        for i in order[1:]:
            acc = replicas[i].merge(acc)
        assert acc == everything


def test_counters() -> None:
    g = GCounter().increment("a", 2).increment("b").increment("a")
    assert g.value() == 4
    assert g.merge(GCounter().increment("a", 10)).value() == 11
    with pytest.raises(ValueError):
        g.increment("a", -1)
    p = PNCounter().increment("a", 5).increment("b", -7)
    assert p.value() == -2
    assert p.merge(PNCounter().increment("c", 1)).value() == -1


def test_or_set_add_wins_over_a_concurrent_remove() -> None:
    base = ORSet().add("a", "x")
    removed = base.remove("x")          # replica a removes x ...
    readded = base.add("b", "x")        # ... while b adds it again concurrently
    assert "x" in removed.merge(readded) and "x" in readded.merge(removed)
    # A remove that has seen the add wins.
    assert "x" not in readded.merge(removed).remove("x").merge(readded)
    assert base.add("a", "y").remove("y").value() == frozenset({"x"})


def test_lww_register_highest_timestamp_wins_and_node_breaks_ties() -> None:
    r1 = LWWRegister().assign(b"one", Hlc(10, 0, "a"))
    r2 = LWWRegister().assign(b"two", Hlc(10, 0, "b"))
    assert r1.merge(r2).value() == b"two" == r2.merge(r1).value()
    assert r2.assign(b"old", Hlc(5, 0, "z")).value() == b"two"


def test_mv_register_keeps_concurrent_values_until_overwritten() -> None:
    a = MVRegister().assign("a", b"1")
    b = MVRegister().assign("b", b"2")
    both = a.merge(b)
    assert set(both.value()) == {b"1", b"2"}
    resolved = both.assign("a", b"3")
    assert resolved.value() == (b"3",)
    assert resolved.merge(a).merge(b).value() == (b"3",)


@pytest.mark.parametrize("bad", [
    None, [], ["nope", []], ["gcounter", ["a", -1]], ["orset", [["a", 1], [["x", ["a", 2]]]]],
    ["orset", [[], [["x", []]]]], ["orset", [["a", 1], [["x", ["a", 1]], ["x", ["a", 1]]]]],
    ["mvregister", [["a", 1], [["a", 2, b"v"]]]], ["mvregister", [[], [["a", 1, "str"]]]],
    ["lwwregister", ["str", [1, 0, "a"]]], ["pncounter", [[]]], ["gcounter", "x"],
])
def test_from_plain_rejects_malformed_states(bad: object) -> None:
    with pytest.raises(ValueError):
        crdt.from_plain(bad)


def test_merging_different_types_is_an_error() -> None:
    with pytest.raises(ValueError):
        crdt.merge(GCounter(), PNCounter())
    assert crdt.merge(GCounter().increment("a"), GCounter()) == GCounter().increment("a")
