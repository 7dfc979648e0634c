"""Merkle tree: contents decide the root (not history), writes touch O(depth) nodes, and the descent
finds exactly the keys that differ."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core.merkle import EMPTY_HASH, MerkleTree, diff, key_hash


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def test_empty_tree_root_is_zero_for_every_shape() -> None:
    for depth, bits in ((1, 1), (4, 4), (8, 2), (16, 2)):
        assert MerkleTree(depth, bits).root() == EMPTY_HASH
    assert MerkleTree().root_hex() == "0" * 64


@pytest.mark.parametrize("shape", [(0, 2), (17, 2), (9, 4), (4, 3)])
def test_bad_shapes_are_refused(shape: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        MerkleTree(*shape)


@pytest.mark.parametrize("shape", [(4, 4), (8, 2), (12, 1)])
def test_root_depends_on_contents_not_on_history(shape: tuple[int, int]) -> None:
    items = {f"key-{i}": digest(str(i)) for i in range(500)}
    a, b = MerkleTree(*shape), MerkleTree(*shape)
    for key, d in items.items():
        a.update(key, d)
    keys = list(items)
    random.Random(7).shuffle(keys)
    for key in keys:
        b.update(key, digest("temporary"))
        b.root()  # interleave refreshes with writes
    for key in keys:
        b.update(key, items[key])
    b.update("extra", digest("x"))
    b.update("extra", None)
    assert a.root() == b.root() and len(a) == len(b) == 500
    a.update("key-1", digest("changed"))
    assert a.root() != b.root()
    a.update("key-1", items["key-1"])
    assert a.root() == b.root()


def test_a_write_dirties_one_node_per_level_only() -> None:
    tree = MerkleTree(8, 2)
    for i in range(2000):
        tree.update(f"k{i}", digest(str(i)))
    tree.root()
    before = [dict(level) for level in tree._hashes]
    tree.update("k5", digest("new"))
    assert tree._dirty_leaves == {tree.leaf_of(key_hash("k5"))}  # a write marks its leaf only
    tree.root()
    changed = [sum(1 for i, h in level.items() if before[n].get(i) != h) for n, level in enumerate(tree._hashes)]
    assert changed == [1] * 9  # O(depth): the leaf and its 8 ancestors re-hashed, never a rebuild


def test_counts_items_and_hash_prefix_lookup() -> None:
    tree = MerkleTree(4, 4)
    for i in range(100):
        tree.update(f"k{i}", digest(str(i)))
    assert tree.count() == 100
    assert sum(tree.count(1, i) for i in range(16)) == 100
    under = list(tree.items_under(0, 0))
    assert len(under) == 100 and {k for k, _, _ in under} == {f"k{i}" for i in range(100)}
    assert tree.keys_with_hash_prefix(key_hash("k42")[:8]) == ["k42"]
    assert tree.digest_of("k42") == digest("42") and tree.digest_of("nope") is None
    with pytest.raises(ValueError):
        tree.children(4, 0)


stores = st.dictionaries(st.text(min_size=1, max_size=8), st.sampled_from(["1", "2", "3"]), max_size=60)


@settings(max_examples=150)
@given(stores, stores, st.sampled_from([(2, 1), (4, 2), (3, 4)]))
def test_diff_is_the_symmetric_difference(a: dict[str, str], b: dict[str, str], shape: tuple[int, int]) -> None:
    ta, tb = MerkleTree(*shape), MerkleTree(*shape)
    for key, v in a.items():
        ta.update(key, digest(v))
    for key, v in b.items():
        tb.update(key, digest(v))
    expected = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert diff(ta, tb) == expected == diff(tb, ta)
    assert (ta.root() == tb.root()) == (a == b)


def test_diff_needs_equal_shapes() -> None:
    with pytest.raises(ValueError):
        diff(MerkleTree(4, 2), MerkleTree(4, 4))
