"""State-based CRDTs: G-counter, PN-counter, OR-set (add-wins), LWW-register, MV-register.

Every type is an immutable value with `merge` forming a join-semilattice (commutative, associative,
idempotent; the tests prove it with hypothesis), so replicas converge however gossip and anti-entropy
deliver, duplicate or reorder states. Operations take the acting node (and, for the LWW register, an HLC
timestamp) as arguments and return a new value. `to_plain`/`from_plain` give msgpack-ready data; the
decoders reject malformed input with ValueError so a forged state cannot break the lattice invariants.

The OR-set and the MV-register are causal CRDTs: live dots plus a version-vector context (see
`vector_clock`), which is what makes "add wins over a concurrent remove" and "keep concurrent assignments"
exact without ever-growing tombstone sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gossip_agent.core import hlc as hlc_mod
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.vector_clock import (
    EMPTY,
    MAX_ACCEPTED_COUNTER,
    Dot,
    VersionVector,
    check_counter,
    join_dots,
)

MAX_COUNTER_DELTA = 1 << 32
"""Largest step (either sign) of one PN-counter operation. A replica's per-direction total starts at most at
MAX_ACCEPTED_COUNTER (2^62, a forged state) and overflows at 2^63-1, so it lasts at least 2^62 / 2^32 = 2^30
(~1.07e9) operations of the largest step, ~12 days at 1,000 such requests per second to one agent; an honest
total starting at 0 takes as long again to reach what peers accept. Steps of 2^53 used the room up in 1,024
requests, and a counter cannot be deleted to start over."""


@dataclass(frozen=True, slots=True)
class GCounter:
    """Grow-only counter: one monotone count per node; value = sum, merge = pointwise max."""

    TYPE: ClassVar[str] = "gcounter"
    counts: VersionVector = EMPTY

    def increment(self, node: str, amount: int = 1) -> GCounter:
        if amount < 0:
            raise ValueError("a G-counter only grows; use a PN-counter to decrement")
        if amount == 0:
            return self
        return GCounter(VersionVector({**dict(self.counts.items()), node: self.counts.get(node) + amount}))

    def value(self) -> int:
        return sum(n for _, n in self.counts.items())

    def merge(self, other: GCounter) -> GCounter:
        return GCounter(self.counts.merge(other.counts))

    def to_plain(self) -> list[Any]:
        return self.counts.to_plain()

    @classmethod
    def from_plain(cls, data: object, limit: int = MAX_ACCEPTED_COUNTER) -> GCounter:
        return cls(VersionVector.from_plain(data, limit))


@dataclass(frozen=True, slots=True)
class PNCounter:
    """Counter that also decrements: two G-counters, value = increments - decrements."""

    TYPE: ClassVar[str] = "pncounter"
    inc: GCounter = field(default_factory=GCounter)
    dec: GCounter = field(default_factory=GCounter)

    def increment(self, node: str, amount: int = 1) -> PNCounter:
        if not -MAX_COUNTER_DELTA <= amount <= MAX_COUNTER_DELTA:
            raise ValueError(f"a counter's delta is at most {MAX_COUNTER_DELTA} (2^32) either way, got {amount}")
        if amount >= 0:
            return PNCounter(self.inc.increment(node, amount), self.dec)
        return PNCounter(self.inc, self.dec.increment(node, -amount))

    def value(self) -> int:
        return self.inc.value() - self.dec.value()

    def merge(self, other: PNCounter) -> PNCounter:
        return PNCounter(self.inc.merge(other.inc), self.dec.merge(other.dec))

    def to_plain(self) -> list[Any]:
        return [self.inc.to_plain(), self.dec.to_plain()]

    @classmethod
    def from_plain(cls, data: object, limit: int = MAX_ACCEPTED_COUNTER) -> PNCounter:
        if not isinstance(data, list | tuple) or len(data) != 2:
            raise ValueError("pncounter: expected [increments, decrements]")
        return cls(GCounter.from_plain(data[0], limit), GCounter.from_plain(data[1], limit))


@dataclass(frozen=True, slots=True)
class ORSet:
    """Observed-remove set, add-wins: an element is present while it has a live dot.

    `add` tags the element with a fresh dot (replacing the dots it observed), `remove` drops the dots it
    observed; a concurrent add carries a dot the remover never saw, so it survives the merge.
    """

    TYPE: ClassVar[str] = "orset"
    entries: Mapping[str, frozenset[Dot]] = field(default_factory=dict)
    context: VersionVector = EMPTY

    def add(self, node: str, element: str) -> ORSet:
        context, dot = self.context.increment(node)
        return ORSet({**self.entries, element: frozenset((dot,))}, context)

    def update(self, node: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> ORSet:
        """`remove` each of `remove`, then `add` each of `add`: the same set as that sequence of single
        operations, in one copy of the entries (a request of n operations costs O(n + size), not O(n * size))."""
        entries = dict(self.entries)
        context = self.context
        for element in remove:
            entries.pop(element, None)
        for element in add:
            context, dot = context.increment(node)
            entries[element] = frozenset((dot,))
        return ORSet(entries, context)

    def remove(self, element: str) -> ORSet:
        if element not in self.entries:
            return self
        return ORSet({e: d for e, d in self.entries.items() if e != element}, self.context)

    def value(self) -> frozenset[str]:
        return frozenset(self.entries)

    def __contains__(self, element: object) -> bool:
        return element in self.entries

    def merge(self, other: ORSet) -> ORSet:
        out: dict[str, frozenset[Dot]] = {}
        for element in self.entries.keys() | other.entries.keys():
            mine = dict.fromkeys(self.entries.get(element, ()), True)
            theirs = dict.fromkeys(other.entries.get(element, ()), True)
            dots = join_dots(mine, self.context, theirs, other.context)
            if dots:
                out[element] = frozenset(dots)
        return ORSet(out, self.context.merge(other.context))

    def to_plain(self) -> list[Any]:
        items = [[element, _dots_to_plain(dots)] for element, dots in sorted(self.entries.items())]
        return [self.context.to_plain(), items]

    @classmethod
    def from_plain(cls, data: object, limit: int = MAX_ACCEPTED_COUNTER) -> ORSet:
        if not isinstance(data, list | tuple) or len(data) != 2 or not isinstance(data[1], list | tuple):
            raise ValueError("orset: expected [context, [[element, dots], ...]]")
        context = VersionVector.from_plain(data[0], limit)
        entries: dict[str, frozenset[Dot]] = {}
        for item in data[1]:
            if not isinstance(item, list | tuple) or len(item) != 2 or not isinstance(item[0], str):
                raise ValueError("orset: expected [element, dots]")
            if item[0] in entries:
                raise ValueError(f"orset: duplicate element {item[0]!r:.40}")
            dots = _dots_from_plain(item[1], limit)
            if not dots or not all(context.covers(d) for d in dots):
                raise ValueError("orset: element without dots, or a dot outside the context")
            entries[item[0]] = dots
        return cls(entries, context)


@dataclass(frozen=True, slots=True)
class LWWRegister:
    """Last-writer-wins register: the value with the highest HLC (node id breaks ties) wins."""

    TYPE: ClassVar[str] = "lwwregister"
    data: bytes | None = None
    timestamp: Hlc = hlc_mod.ZERO

    def assign(self, value: bytes, timestamp: Hlc) -> LWWRegister:
        """Set `value` at `timestamp` (a fresh `hlc.tick`); an older timestamp loses, as in a merge."""
        return self.merge(LWWRegister(value, timestamp))

    def value(self) -> bytes | None:
        return self.data

    def _rank(self) -> tuple[Hlc, bool, bytes]:
        # Equal timestamps only arise from forged or corrupt states; ranking by value keeps merge a lattice.
        return self.timestamp, self.data is not None, self.data or b""

    def merge(self, other: LWWRegister) -> LWWRegister:
        return other if other._rank() > self._rank() else self

    def to_plain(self) -> list[Any]:
        return [self.data, hlc_mod.to_plain(self.timestamp)]

    @classmethod
    def from_plain(cls, data: object, limit: int = MAX_ACCEPTED_COUNTER) -> LWWRegister:  # (no counters)
        if not isinstance(data, list | tuple) or len(data) != 2 or not (data[0] is None or
                                                                          isinstance(data[0], bytes)):
            raise ValueError("lwwregister: expected [value or nil, hlc]")
        return cls(data[0], hlc_mod.from_plain(data[1]))


@dataclass(frozen=True, slots=True)
class MVRegister:
    """Multi-value register: an assignment replaces what it observed; concurrent assignments all stay."""

    TYPE: ClassVar[str] = "mvregister"
    values: Mapping[Dot, bytes] = field(default_factory=dict)
    context: VersionVector = EMPTY

    def assign(self, node: str, value: bytes, seen: VersionVector | None = None) -> MVRegister:
        """Replace what this replica holds; with `seen` (the context a client read), replace exactly the values
        held here that it covers: values the client did not see stay as siblings. `seen` is not merged into
        the register's context, as `KvStore._local_write` does not merge a plain key's (see there why): a
        client's context is an unverifiable claim, and one naming this replica at 2^53 left every later read
        token refused. So values read at another replica that have not reached this one yet stay as siblings
        when they arrive (nothing is lost; the next read and write back collapses them)."""
        if seen is None:
            context, dot = self.context.increment(node)
            return MVRegister({dot: value}, context)
        kept = {d: v for d, v in self.values.items() if not seen.covers(d)}
        context, dot = self.context.increment(node)
        return MVRegister({**kept, dot: value}, context)

    def value(self) -> tuple[bytes, ...]:
        """Concurrent values in dot order (the same order on every replica)."""
        return tuple(self.values[d] for d in sorted(self.values))

    def merge(self, other: MVRegister) -> MVRegister:
        return MVRegister(join_dots(self.values, self.context, other.values, other.context, max),
                          self.context.merge(other.context))

    def to_plain(self) -> list[Any]:
        return [self.context.to_plain(), [[node, n, self.values[(node, n)]] for node, n in sorted(self.values)]]

    @classmethod
    def from_plain(cls, data: object, limit: int = MAX_ACCEPTED_COUNTER) -> MVRegister:
        if not isinstance(data, list | tuple) or len(data) != 2 or not isinstance(data[1], list | tuple):
            raise ValueError("mvregister: expected [context, [[node, counter, value], ...]]")
        context = VersionVector.from_plain(data[0], limit)
        values: dict[Dot, bytes] = {}
        for item in data[1]:
            if not (isinstance(item, list | tuple) and len(item) == 3 and isinstance(item[2], bytes)):
                raise ValueError("mvregister: expected [node, counter, value]")
            dot = _dot(item[0], item[1], limit)
            if dot in values or not context.covers(dot):
                raise ValueError("mvregister: duplicate dot, or a dot outside the context")
            values[dot] = item[2]
        return cls(values, context)


Crdt = GCounter | PNCounter | ORSet | LWWRegister | MVRegister
CRDT_TYPES: dict[str, type[Crdt]] = {
    cls.TYPE: cls for cls in (GCounter, PNCounter, ORSet, LWWRegister, MVRegister)
}


def merge(a: Crdt, b: Crdt) -> Crdt:
    """Merge two values of the same type; ValueError if the types differ."""
    if type(a) is not type(b):
        raise ValueError(f"cannot merge a {a.TYPE} with a {b.TYPE}")
    return a.merge(b)  # type: ignore[arg-type]


def to_plain(value: Crdt) -> list[Any]:
    """[type tag, body]: self-describing, so a store can hold any CRDT under a key."""
    return [value.TYPE, value.to_plain()]


def from_plain(data: object, limit: int = MAX_ACCEPTED_COUNTER) -> Crdt:
    """A CRDT from peers (counters up to `limit`: MAX_ACCEPTED_COUNTER; this replica's own records: MAX_COUNTER)."""
    if not isinstance(data, list | tuple) or len(data) != 2 or not isinstance(data[0], str):
        raise ValueError("crdt: expected [type, body]")
    cls = CRDT_TYPES.get(data[0])
    if cls is None:
        raise ValueError(f"crdt: unknown type {data[0]!r:.40}; known: {', '.join(sorted(CRDT_TYPES))}")
    return cls.from_plain(data[1], limit)


def _dot(node: object, n: object, limit: int) -> Dot:
    if not isinstance(node, str) or isinstance(n, bool) or not isinstance(n, int):
        raise ValueError(f"dot: expected (node, counter 1..{limit}), got ({node!r:.40}, {n!r:.20})")
    if not 0 < n <= limit:
        check_counter(n, limit, f"dot of {node!r:.40}")
    return node, n


def _dots_to_plain(dots: frozenset[Dot]) -> list[str | int]:
    out: list[str | int] = []
    for node, n in sorted(dots):
        out.append(node)
        out.append(n)
    return out


def _dots_from_plain(data: object, limit: int) -> frozenset[Dot]:
    if not isinstance(data, list | tuple) or len(data) % 2:
        raise ValueError("dots: expected a flat [node, counter, ...] list")
    dots = [_dot(data[i], data[i + 1], limit) for i in range(0, len(data), 2)]
    if len(set(dots)) != len(dots):
        raise ValueError("dots: duplicates")
    return frozenset(dots)
