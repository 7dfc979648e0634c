"""A Merkle tree over the key-hash space, maintained incrementally, for anti-entropy.

Shape: fan-out 2**bits (default 4) and `depth` levels; a key lives in the leaf named by the first
`bits * depth` bits of sha256(key), so the shape depends only on the key set's hash distribution, never on
insertion order, and two replicas with the same contents have the same root. All replicas of a cluster
must use the same shape. The default, fan-out 4 and depth 8 (65,536 leaves), is chosen for anti-entropy:
finding one differing key costs `fanout` hashes per level, i.e. fanout/bits hashes per bit of key space,
which is 2 for fan-out 4 (as for a binary tree) against 4 for fan-out 16, at half the round trips of a
binary tree. Fan-out 16 (bits=4) is supported for comparison.

Incremental: a leaf's hash is derived from the sum (mod 2^256) of sha256(key hash ‖ version digest) over
its items, a set hash that adding or removing one item updates in O(1). An inner node hashes its
children. A write updates one leaf sum and marks that leaf dirty; `root()` and the other readers re-hash
only the dirty leaves and their ancestors (each node once, however many writes share it), so a write costs
O(depth) and nothing ever rebuilds the tree.

Empty subtrees hash to 32 zero bytes at every level, so an empty store's root is the same for any depth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from hashlib import sha256

HASH_BYTES = 32
EMPTY_HASH = bytes(HASH_BYTES)
MAX_FANOUT = 16
MAX_DEPTH = 16
DEFAULT_DEPTH = 8
DEFAULT_BITS = 2
_MOD = 1 << (8 * HASH_BYTES)


def key_hash(key: str) -> bytes:
    """sha256 of the UTF-8 key: its position in the tree (and its short identity on the wire)."""
    return sha256(key.encode()).digest()


class MerkleTree:
    """Per-key version digests, bucketed by key hash, with lazily refreshed node hashes."""

    def __init__(self, depth: int = DEFAULT_DEPTH, bits: int = DEFAULT_BITS) -> None:
        if bits not in (1, 2, 4) or not 1 <= depth <= MAX_DEPTH or bits * depth > 32:
            raise ValueError(f"merkle shape: bits per level 1, 2 or 4 and depth ≥ 1 with bits x depth ≤ 32, "
                             f"got bits={bits} depth={depth}")
        self.depth = depth
        self.bits = bits
        self.fanout = 1 << bits
        # leaf index -> {key: (key hash, version digest)}
        self._leaves: dict[int, dict[str, tuple[bytes, bytes]]] = {}
        self._sums: dict[int, int] = {}
        # Per level (0 = root .. depth = leaves): node index -> hash / key count; absent = empty.
        self._hashes: list[dict[int, bytes]] = [{} for _ in range(depth + 1)]
        self._counts: list[dict[int, int]] = [{} for _ in range(depth + 1)]
        # Leaves written since the last refresh; their ancestors are derived from them (`_refresh`).
        self._dirty_leaves: set[int] = set()
        self._counts_up = self._counts[::-1]  # the same dicts, leaves first (update walks a leaf's path up)
        self._leaf_shift = 32 - bits * depth
        # Counts the updates that changed a digest: equal versions mean an unchanged tree (and root), read
        # without hashing anything (the state core names a root it did not compute by it).
        self.version = 0

    # -- writes ------------------------------------------------------------------------------------
    def update(self, key: str, digest: bytes | None) -> None:
        """Set the version digest of `key` (None removes it). O(1) hashing; key counts O(depth) when a key
        comes or goes. Only the leaf is marked dirty: `_refresh` derives the dirty ancestors (every write's
        path to the root) by shifting, once per refresh instead of once per write and level."""
        khash = sha256(key.encode()).digest()
        leaf = int.from_bytes(khash[:4], "big") >> self._leaf_shift
        leaves = self._leaves
        items = leaves.get(leaf)
        old = items.get(key) if items is not None else None
        if old is None if digest is None else old is not None and old[1] == digest:
            return  # no change (a removal of an absent key, or the same digest again)
        self.version += 1
        self._dirty_leaves.add(leaf)
        sums = self._sums
        if old is not None and digest is not None:  # a new version of a held key (no count changes)
            assert items is not None
            items[key] = (khash, digest)
            sums[leaf] = (sums[leaf] - _from_bytes(sha256(khash + old[1]).digest(), "big")
                          + _from_bytes(sha256(khash + digest).digest(), "big")) % _MOD
            return
        if digest is not None:  # a new key: its leaf and every ancestor count one more
            if items is None:
                items = leaves[leaf] = {}
            items[key] = (khash, digest)
            sums[leaf] = (sums.get(leaf, 0) + _from_bytes(sha256(khash + digest).digest(), "big")) % _MOD
            index = leaf
            bits = self.bits
            for counts in self._counts_up:  # leaves first, then each ancestor up to the root
                counts[index] = counts.get(index, 0) + 1
                index >>= bits
            return
        assert items is not None and old is not None  # a removal of a held key: one less on its path
        del items[key]
        if not items:
            del leaves[leaf]
        index = leaf
        bits = self.bits
        for counts in self._counts_up:
            n = counts[index] - 1
            if n:
                counts[index] = n
            else:
                del counts[index]
            index >>= bits
        if leaf in self._counts[self.depth]:
            sums[leaf] = (sums[leaf] - _from_bytes(sha256(khash + old[1]).digest(), "big")) % _MOD
        else:
            sums.pop(leaf, None)

    # -- reads -------------------------------------------------------------------------------------
    def leaf_of(self, khash: bytes) -> int:
        """The leaf index of a key hash (its first bits x depth bits); needs ≥ 4 bytes of hash."""
        return int.from_bytes(khash[:4], "big") >> self._leaf_shift

    def root(self) -> bytes:
        self._refresh()
        return self._hashes[0].get(0, EMPTY_HASH)

    def root_hex(self) -> str:
        return self.root().hex()

    def node_hash(self, level: int, index: int) -> bytes:
        self._refresh()
        return self._hashes[level].get(index, EMPTY_HASH)

    def children(self, level: int, index: int) -> list[bytes]:
        """The `fanout` child hashes of an inner node, in order."""
        if not 0 <= level < self.depth:
            raise ValueError(f"level {level} has no children (depth {self.depth})")
        self._refresh()
        hashes = self._hashes[level + 1]
        base = index << self.bits
        return [hashes.get(base + i, EMPTY_HASH) for i in range(self.fanout)]

    def count(self, level: int = 0, index: int = 0) -> int:
        """Keys under a node (the whole tree by default)."""
        return self._counts[level].get(index, 0)

    def items_under(self, level: int, index: int) -> Iterator[tuple[str, bytes, bytes]]:
        """(key, key hash, digest) of every key under a node, in key-hash order within each leaf."""
        if self._counts[level].get(index, 0) == 0:
            return
        shift = self.bits * (self.depth - level)
        first = index << shift
        leaves: Iterable[int] = range(first, first + (1 << shift))
        if (1 << shift) > len(self._leaves):  # a sparse tree: walk the occupied leaves, not all 16^k slots
            leaves = sorted(i for i in self._leaves if first <= i < first + (1 << shift))
        for leaf in leaves:
            items = self._leaves.get(leaf)
            if items:
                for key, (khash, digest) in sorted(items.items(), key=lambda kv: kv[1][0]):
                    yield key, khash, digest

    def walk_cost(self, level: int, index: int) -> int:
        """Leaf slots `items_under(level, index)` visits before yielding anything (the CPU a request for that
        node costs besides its keys): what anti-entropy charges against a request's budget."""
        if self._counts[level].get(index, 0) == 0:
            return 0
        return min(1 << (self.bits * (self.depth - level)), len(self._leaves))

    def keys_with_hash_prefix(self, prefix: bytes) -> list[str]:
        """Keys whose hash starts with `prefix` (≥ 4 bytes): resolves short key ids sent by a peer."""
        items = self._leaves.get(self.leaf_of(prefix), {})
        return [key for key, (khash, _) in items.items() if khash.startswith(prefix)]

    def digest_of(self, key: str) -> bytes | None:
        items = self._leaves.get(self.leaf_of(key_hash(key)))
        found = items.get(key) if items else None
        return found[1] if found else None

    def __len__(self) -> int:
        return self.count()

    # -- internals ---------------------------------------------------------------------------------
    def _refresh(self) -> None:
        """Re-hash the dirty leaves, then their ancestors level by level (each level's dirty set is the one
        below shifted by `bits`): every node on a written key's path, each once however many writes."""
        dirty = self._dirty_leaves
        if not dirty:
            return
        self._dirty_leaves = set()
        depth = self.depth
        leaf_hashes = self._hashes[depth]
        leaf_counts = self._counts[depth]
        sums = self._sums
        join = b"".join
        for leaf in dirty:
            n = leaf_counts.get(leaf, 0)
            if n:
                leaf_hashes[leaf] = sha256(join((b"L", n.to_bytes(8, "big"),
                                                 sums[leaf].to_bytes(HASH_BYTES, "big")))).digest()
            else:
                leaf_hashes.pop(leaf, None)
        bits = self.bits
        fanout = self.fanout
        empty = EMPTY_HASH
        for level in range(depth - 1, -1, -1):
            dirty = {index >> bits for index in dirty}
            hashes = self._hashes[level]
            get = self._hashes[level + 1].get
            counts = self._counts[level]
            if fanout == 4:  # the default shape: four lookups joined once (no intermediate bytes), no generator
                for index in dirty:
                    if index in counts:
                        base = index << 2
                        hashes[index] = sha256(join((b"N", get(base, empty), get(base + 1, empty),
                                                     get(base + 2, empty), get(base + 3, empty)))).digest()
                    else:
                        hashes.pop(index, None)
                continue
            for index in dirty:
                if index in counts:
                    base = index << bits
                    hashes[index] = sha256(b"N" + join([get(base + i, empty) for i in range(fanout)])).digest()
                else:
                    hashes.pop(index, None)


_from_bytes = int.from_bytes


def diff(a: MerkleTree, b: MerkleTree) -> set[str]:
    """Keys whose digests differ between two in-process trees of the same shape (present on one side only,
    or with different versions), found by descending only into differing subtrees. For tests and the
    simulator; replicas on different hosts use `anti_entropy`."""
    if (a.bits, a.depth) != (b.bits, b.depth):
        raise ValueError("trees of different shapes")
    out: set[str] = set()
    frontier = [(0, 0)] if a.root() != b.root() else []
    while frontier:
        level, index = frontier.pop()
        if level == a.depth:
            mine = {key: digest for key, _, digest in a.items_under(level, index)}
            theirs = {key: digest for key, _, digest in b.items_under(level, index)}
            out.update(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
            continue
        for i, (x, y) in enumerate(zip(a.children(level, index), b.children(level, index), strict=True)):
            if x != y:
                frontier.append((level + 1, (index << a.bits) + i))
    return out
