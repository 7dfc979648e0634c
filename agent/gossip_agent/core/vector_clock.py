"""Version vectors and dots: the causality layer under the key-value store and the causal CRDTs.

A *dot* `(node, n)` names one write: the n-th write that `node` made to one key (or one CRDT). A version
vector `{node: n}` is a causal context: it stands for the downward-closed set of dots `(node, 1..n)`. A
replica's state is a set of live dots plus such a context (the "dotted version vector set" design of Riak),
which separates "I have seen this write" (context) from "this write is still current" (live dot). Two
writes are concurrent exactly when neither context covers the other's dot, so siblings are detected
exactly, and the context shipped with a write lets it overwrite precisely what its client read.

Pruning (keeping vectors bounded): entries name members, and members come and go. An entry of member `m`
may be dropped from a context when ALL of these hold:
1. `m` was reaped from the membership longer ago than `StateConfig.tombstone_ttl`. The cluster already
   assumes no replica comes back holding state older than that TTL (the same assumption that makes
   tombstone collection safe), so no unseen dot of `m` can still arrive and be wrongly treated as new.
2. No live dot of `m` remains in the state: a live dot keeps its entry, lowered to that dot's counter, so
   the invariant "every live dot is covered by its own context" holds.
3. Every replica applies the same rule, and re-applies it to every state it ingests, so a merge with a
   replica that has not pruned yet never brings the entry back (states converge after pruning too).
`VersionVector.prune` implements 2; the runtime decides 1 (it knows reap times); the store does 3.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from enum import Enum
from typing import TypeVar

Dot = tuple[str, int]
"""(node, counter): one write. Counters start at 1."""

MAX_COUNTER = (1 << 63) - 1
"""The overflow point (msgpack int64): the largest dot, version-vector entry or CRDT count per node a local write
may produce (kvstore refuses the write past it), and so what this replica's own log and snapshot records may
hold when read back (`from_plain(..., MAX_COUNTER)`): a record it wrote must always decode again."""

MAX_ACCEPTED_COUNTER = 1 << 62
"""Largest counter accepted from a peer (rumors, write-concern pushes, anti-entropy pushes and answers: every
dot, version-vector entry and CRDT count). Half of MAX_COUNTER: whatever a peer sends, every replica it names
keeps 2^62 writes of room (a write adds one to a dot; a PN-counter step is at most crdt.MAX_COUNTER_DELTA).
A forged entry at 2^63-1 used to leave a key or counter refusing every later write, cluster-wide, for good.
The price of that room: after such a forgery, the named replica's next writes of that key carry counters
above this bound, which its peers refuse (that entry skipped and counted, `counter_too_large`; the rest of an
anti-entropy exchange still applies), so the key diverges until an operator acts; only a member holding the
cluster's peer credentials can forge one. (Refusing those writes instead, MAX_COUNTER = MAX_ACCEPTED_COUNTER,
would leave the key unwritable at that replica: the trade is room and divergence against refusal.)"""

T = TypeVar("T")


class CounterAboveLimit(ValueError):
    """A well-formed counter (a dot, a version-vector entry, a CRDT count) above the limit its reader accepts
    (MAX_ACCEPTED_COUNTER from peers): the entry holding it is skipped and counted, not its whole message
    (entry_decoding.checked_entry); anything else malformed is a plain ValueError."""


def check_counter(n: int, limit: int, what: str) -> None:
    """Raise for a counter outside 1..`limit` (`n` an int): CounterAboveLimit above it, ValueError below 1."""
    if n > limit:
        raise CounterAboveLimit(f"{what} is {n}; counters are 1..{limit}")
    if n < 1:
        raise ValueError(f"{what} is {n}; counters are 1..{limit}")


class Order(Enum):
    """How two version vectors relate in the causal partial order."""

    BEFORE = "before"          # self < other: other has seen everything self has, and more
    AFTER = "after"            # self > other
    EQUAL = "equal"
    CONCURRENT = "concurrent"  # each has seen something the other has not


class VersionVector:
    """An immutable map node -> counter (zeros omitted). Methods return new vectors."""

    __slots__ = ("_entries",)

    _entries: dict[str, int]

    def __init__(self, entries: Mapping[str, int] | Iterable[tuple[str, int]] = ()) -> None:
        items = entries.items() if isinstance(entries, Mapping) else entries
        self._entries = {node: n for node, n in items if n > 0}

    # -- queries -----------------------------------------------------------------------------------
    def get(self, node: str) -> int:
        return self._entries.get(node, 0)

    def covers(self, dot: Dot) -> bool:
        """True if the write `dot` is in this context (has been seen)."""
        return self._entries.get(dot[0], 0) >= dot[1]

    def descends(self, other: VersionVector) -> bool:
        """self ≥ other: self has seen every write other has."""
        mine = self._entries
        return all(mine.get(node, 0) >= n for node, n in other._entries.items())

    def compare(self, other: VersionVector) -> Order:
        ge = self.descends(other)
        le = other.descends(self)
        if ge and le:
            return Order.EQUAL
        if ge:
            return Order.AFTER
        if le:
            return Order.BEFORE
        return Order.CONCURRENT

    def nodes(self) -> frozenset[str]:
        return frozenset(self._entries)

    def items(self) -> list[tuple[str, int]]:
        """Entries sorted by node: the canonical order for hashing and encoding."""
        return sorted(self._entries.items())

    # -- updates (return new vectors) --------------------------------------------------------------
    def merge(self, other: VersionVector) -> VersionVector:
        """Least upper bound: pointwise max."""
        if not other._entries:
            return self
        if not self._entries:
            return other
        merged = dict(self._entries)
        for node, n in other._entries.items():
            if n > merged.get(node, 0):
                merged[node] = n
        return _wrap(merged)

    def increment(self, node: str) -> tuple[VersionVector, Dot]:
        """The next write by `node`: its dot, and this context extended to cover it."""
        n = self._entries.get(node, 0) + 1
        merged = dict(self._entries)
        merged[node] = n
        return _wrap(merged), (node, n)

    def add(self, dot: Dot) -> VersionVector:
        """This context extended to cover `dot` (and, being downward closed, every earlier dot of its node)."""
        if self.covers(dot):
            return self
        merged = dict(self._entries)
        merged[dot[0]] = dot[1]
        return _wrap(merged)

    def prune(self, retired: Collection[str], live_dots: Iterable[Dot] = ()) -> VersionVector:
        """Drop the entries of `retired` members, keeping each at its highest live dot (see module doc)."""
        if not retired or not any(node in self._entries for node in retired):
            return self
        keep: dict[str, int] = {}
        for node, n in live_dots:
            if node in retired and n > keep.get(node, 0):
                keep[node] = n
        out = {node: n for node, n in self._entries.items() if node not in retired}
        out.update(keep)
        return _wrap(out)

    # -- protocol ----------------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        return isinstance(other, VersionVector) and self._entries == other._entries

    def __hash__(self) -> int:
        return hash(frozenset(self._entries.items()))

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __contains__(self, node: object) -> bool:
        return node in self._entries

    def __repr__(self) -> str:
        return f"VersionVector({dict(self.items())!r})"

    # -- encoding ----------------------------------------------------------------------------------
    def to_plain(self) -> list[str | int]:
        """Compact: a flat list [node, counter, node, counter, ...] sorted by node (no map overhead)."""
        out: list[str | int] = []
        for node, n in self.items():
            out.append(node)
            out.append(n)
        return out

    @staticmethod
    def from_plain(data: object, limit: int = MAX_ACCEPTED_COUNTER) -> VersionVector:
        """Inverse of `to_plain`; raises ValueError on anything malformed (duplicate nodes included) or on a
        counter above `limit` (MAX_ACCEPTED_COUNTER for peers; MAX_COUNTER for our own records and for a client's
        context, which names only what a read returned and is never stored: see `kvstore.KvStore.local_put`)."""
        if type(data) is list and len(data) == 2:  # one writer (most keys' contexts): checked in one go
            node, n = data
            if type(node) is str and type(n) is int and 0 < n <= limit:
                return _wrap({node: n})
        if not isinstance(data, list | tuple) or len(data) % 2:
            raise ValueError(f"version vector: expected a flat [node, counter, ...] list, got {data!r:.80}")
        entries: dict[str, int] = {}
        for i in range(0, len(data), 2):
            node, n = data[i], data[i + 1]
            if not isinstance(node, str) or isinstance(n, bool) or not isinstance(n, int):
                raise ValueError(f"version vector: bad entry {node!r:.40}: {n!r:.20}")
            if not 0 < n <= limit:
                check_counter(n, limit, f"version vector: entry {node!r:.40}")
            if node in entries:
                raise ValueError(f"version vector: duplicate node {node!r:.40}")
            entries[node] = n
        return _wrap(entries)


def _wrap(entries: dict[str, int]) -> VersionVector:
    vv = VersionVector.__new__(VersionVector)
    vv._entries = entries
    return vv


EMPTY = VersionVector()

MAX_CONTEXT_NODES = 16_384
"""Writer nodes one value entry's context may name (a protocol constant, so every agent refuses the same
entries). An honest key's context names each member that wrote it, and pruning drops members reaped longer
ago than the tombstone TTL: at most the member table (membership.maxMembers, 5,000 by default, ~2x the
largest simulated cluster) plus recent churn. Past it an entry is refused before its context is built: one
entry naming 500k writers (2.4 MiB) cost ~0.8 s to decode and, once stored, every merge of its key paid
again and every peer received it."""


def dots_vector(dots: Iterable[Dot]) -> VersionVector:
    """The smallest context covering `dots`: each node at its highest dot."""
    out: dict[str, int] = {}
    for node, n in dots:
        if n > out.get(node, 0):
            out[node] = n
    return _wrap(out)


def join_dots(a: Mapping[Dot, T], ca: VersionVector, b: Mapping[Dot, T], cb: VersionVector,
              pick: Callable[[T, T], T] | None = None) -> dict[Dot, T]:
    """Join two dot stores with their contexts (the causal-CRDT join of Almeida et al.).

    A dot survives if both sides hold it, or if the other side has never seen it. A dot one side has seen
    but no longer holds was overwritten or removed there, so it goes. With `ca ⊔ cb` as the new context,
    this join is commutative, associative and idempotent. `pick` chooses between two payloads under the
    same dot; dots are unique so they agree, but a deterministic choice keeps corrupt input convergent.
    """
    out: dict[Dot, T] = {}
    for dot, payload in a.items():
        other = b.get(dot)
        if other is not None:
            out[dot] = pick(payload, other) if pick is not None and other != payload else payload
        elif not cb.covers(dot):
            out[dot] = payload
    for dot, payload in b.items():
        if dot not in a and not ca.covers(dot):
            out[dot] = payload
    return out
