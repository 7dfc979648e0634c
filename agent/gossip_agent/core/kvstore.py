"""The replica: versioned key-value entries, conflict policies, tombstones, CRDT values, Merkle upkeep.

Model. A key's state is a set of *versions* (value or tombstone, each named by a dot and stamped with an
HLC) plus a causal *context* (a version vector of every write to this key the replica has seen). Replicas
ship whole key states and merge them with a join, so delivery order, duplicates and anti-entropy repairs
never matter. Per key prefix the policy decides what a merge keeps:
- `lww`: the single version with the highest HLC (node id breaks ties). The HLC makes this respect
  causality: a write stamped after reading (context) or receiving another always has a higher HLC.
- `siblings`: every version no other side has seen (concurrent writes), returned to readers, who write
  back with the context they read to collapse them.
A write may carry the `CausalContext` its client read; it overwrites exactly the versions that context
covers (a write without one, under `siblings`, adds a sibling; a delete without one deletes what this
replica holds). A context read elsewhere may name writes not yet here, which a write here cannot cover:
`delete_leaves` names those a delete left live, so the API does not answer that the key is deleted.

Deletes are tombstone versions. They are collected (see `collect_garbage`) only when safe:
- acknowledged: the runtime calls `acknowledge_tombstones` when every current member (alive, suspect, or
  dead but not reaped) publishes our Merkle root, i.e. every member holds every tombstone we hold; after
  `ack_grace_ms` they leave the tree but their context stays in a small *graveyard* until the TTL, so a
  stale copy arriving from a member that was partitioned (or reaped and back) is still recognised as
  deleted, and a peer still holding the tombstone is told (`was_collected`) and drops it too;
- expired: older than `StateConfig.tombstone_ttl` (by the tombstone's HLC), graveyard included. The
  assumption (as Cassandra's gc_grace): no replica comes back holding state older than the TTL.

Every mutation is also recorded as a `Change` (drained with `drain_changes`) for the append-only log and
for broadcasting; `replay` re-applies one and `snapshot`/`restore` round-trip the whole store as plain data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from gossip_agent.core import crdt as crdt_mod
from gossip_agent.core import hlc as hlc_mod
from gossip_agent.core import packing
from gossip_agent.core.config import CRDT_STATE_CEILING, KEY_BYTES_CEILING, VALUE_BYTES_CEILING, StateConfig
from gossip_agent.core.crdt import Crdt
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.keys import CRDT_PREFIXES, crdt_prefix, crdt_route, key_problem, kind_problem, with_article
from gossip_agent.core.merkle import DEFAULT_BITS, DEFAULT_DEPTH, MerkleTree
from gossip_agent.core.vector_clock import (
    EMPTY,
    MAX_ACCEPTED_COUNTER,
    MAX_CONTEXT_NODES,
    MAX_COUNTER,
    Dot,
    VersionVector,
    check_counter,
    dots_vector,
    join_dots,
)

if TYPE_CHECKING:
    from sortedcontainers import SortedList

C = TypeVar("C", bound=Crdt)

LWW = "lww"
SIBLINGS = "siblings"
MAX_LOCAL_SIBLINGS = 64
"""A write that would leave more live siblings, and overwrites none of them, is refused: the client must read and
resolve first. (One that overwrites some always passes: a state of more, merged from concurrent writes, must stay
resolvable, also by a token that names only part of it: `read_context`.)"""
MAX_TOKEN_BYTES = 4096
"""The most a read's context token (`read_context`, before base64) may take: its base64 (5,464 characters) fits a
request header line (io/http_limits.MAX_HEADER_LINE, 8,190) with room to spare and any client's response header
limit (Python's http.client: 64 KiB), so a token a read returns can always be sent back. An honest token names the
writers of the values read, a few dozen bytes each: only a state of hundreds of concurrent writers reaches it."""

_VALUE_TAG = 0
_CRDT_TAG = 1


class StateError(ValueError):
    """A request the store refuses; the message says why."""


class InvalidKey(StateError):
    """Empty, not UTF-8 encodable, or longer than `max_key_bytes`."""


class ValueTooLarge(StateError):
    """Longer than `max_value_bytes` (for a CRDT: its encoded state grown past `StateConfig.crdt_write_limit`)."""


class KindMismatch(StateError):
    """A CRDT operation on a plain key, or a plain write on a CRDT key (or a CRDT of another type)."""


class TooManySiblings(StateError):
    """A write without context would leave more than MAX_LOCAL_SIBLINGS concurrent values."""


class InvalidEntry(StateError):
    """A remote entry breaks an invariant or a limit; it is dropped, not merged."""


class OutOfRange(StateError):
    """A number would leave its range: a timestamp too far ahead of our clock, or a counter or dot that the
    next increment would push past MAX_COUNTER. Refused where it enters, before anything is stored: a value
    no decoder accepts would stop the key replicating and make the log record unreadable."""


@dataclass(frozen=True, slots=True)
class Version:
    """One write of a key: a value, or a tombstone (`value is None`)."""

    dot: Dot
    timestamp: Hlc  # timestamp.node == dot[0]: the writer
    value: bytes | None

    @property
    def deleted(self) -> bool:
        return self.value is None

    def rank(self) -> tuple[Hlc, bool, bytes]:
        """LWW order: HLC (node tie-break) first; the value only separates forged duplicates."""
        return self.timestamp, self.value is not None, self.value or b""


@dataclass(frozen=True, slots=True)
class ValueEntry:
    """A plain key's state: versions (sorted by dot) and the context of every write seen to this key."""

    key: str
    versions: tuple[Version, ...]
    context: VersionVector

    # These run several times per merged rumor; almost every entry holds one version, hence the fast paths.
    @property
    def live(self) -> tuple[Version, ...]:
        versions = self.versions
        if len(versions) == 1:
            return versions if versions[0].value is not None else ()
        return tuple(v for v in versions if v.value is not None)

    @property
    def is_tombstone(self) -> bool:
        versions = self.versions
        if len(versions) == 1:
            return versions[0].value is None
        return all(v.value is None for v in versions)

    @property
    def timestamp(self) -> Hlc:
        versions = self.versions
        if len(versions) == 1:
            return versions[0].timestamp
        return max((v.timestamp for v in versions), default=hlc_mod.ZERO)


@dataclass(frozen=True, slots=True)
class CrdtEntry:
    """A CRDT key's state: merged with the CRDT's own join; `timestamp` is its latest update's HLC."""

    key: str
    value: Crdt
    timestamp: Hlc

    @property
    def is_tombstone(self) -> bool:
        return False


Entry = ValueEntry | CrdtEntry


@dataclass(frozen=True, slots=True)
class CausalContext:
    """What a client read. Sent back with a write, it makes the write overwrite exactly those versions."""

    vv: VersionVector = EMPTY
    timestamp: Hlc = hlc_mod.ZERO  # the highest HLC read: the write is stamped after it


@dataclass(frozen=True, slots=True)
class ReadResult:
    key: str
    versions: tuple[Version, ...]  # live ones; more than one only under `siblings`
    context: CausalContext

    @property
    def values(self) -> tuple[bytes, ...]:
        return tuple(v.value for v in self.versions if v.value is not None)

    @property
    def deleted(self) -> bool:
        return not self.versions


@dataclass(frozen=True, slots=True)
class Change:
    """One mutation, for the log and for broadcasting. `entry is None`: the key was collected. `packed`: the
    entry's canonical encoding when the store had it at hand (it hashed it for the Merkle tree), which the log
    record reuses instead of encoding the entry again (state_codec.encode_change); not part of equality."""

    key: str
    entry: Entry | None
    origin: str  # "local" | "remote" | "gc" | "prune"
    packed: bytes | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ScanPage:
    entries: tuple[Entry, ...]
    next_after: str | None  # pass as `after` for the next page; None: no more


@dataclass(frozen=True, slots=True)
class StoreStats:
    keys: int           # live keys (CRDT keys included)
    tombstones: int
    graveyard: int
    conflicts_detected: int
    conflicts_resolved: int
    hlc: Hlc
    root: str


@dataclass(slots=True)
class _Grave:
    context: VersionVector
    timestamp: Hlc


@dataclass(slots=True)
class _Counters:
    detected: int = 0
    resolved: int = 0


@dataclass(slots=True)
class _Tracking:
    acked: dict[str, int] = field(default_factory=dict)  # tombstone key -> acknowledged at (ms)


class KvStore:
    """One replica. Not thread-safe: one driver owns it. Times are integer milliseconds from the caller."""

    def __init__(self, node: str, config: StateConfig | None = None, *, merkle_depth: int = DEFAULT_DEPTH,
                 merkle_bits: int = DEFAULT_BITS, record_changes: bool = True,
                 crdt_ceiling: int = CRDT_STATE_CEILING) -> None:
        self.node = node
        self.config = config or StateConfig()
        self.crdt_ceiling = crdt_ceiling  # peers' CRDT states and merges: config.CRDT_STATE_CEILING (tests: less)
        self.clock: Hlc = Hlc(0, 0, node)
        self.merkle = MerkleTree(merkle_depth, merkle_bits)
        self.record_changes = record_changes
        self._entries: dict[str, Entry] = {}
        self._sorted_keys: SortedList[str] | None = None  # `_sorted`, made with the first key order asked for
        self._tombstones: set[str] = set()
        self._graveyard: dict[str, _Grave] = {}
        self._retired: frozenset[str] = frozenset()
        self._tracking = _Tracking()
        self._counters = _Counters()
        self.refused: dict[str, int] = {}   # reason -> count: numbers refused at the edge (metrics)
        self.refused_remote = 0             # peers' entries (or merges with them) refused, every reason
        self.last_refused_remote = ""       # why the latest was (the state service logs it, rate-limited)
        self._changes: list[Change] = []
        self._policies = sorted(self.config.conflict_policies.items(), key=lambda kv: -len(kv[0]))

    @property
    def _sorted(self) -> SortedList[str]:
        """Every key held, tombstones included, in order (`_put`). Made, and `sortedcontainers` imported, on first
        use: the package (SortedList, SortedDict, SortedSet) costs ~0.3 MiB of RSS, and an idle agent whose
        replica holds no key never needs a key order (test_idle_imports.py)."""
        if self._sorted_keys is None:
            from sortedcontainers import SortedList

            self._sorted_keys = SortedList()
        return self._sorted_keys

    @property
    def _key_order(self) -> Iterable[str]:
        """`_sorted` to walk, without making it while no key was ever held (the periodic walks of an idle agent)."""
        return () if self._sorted_keys is None else self._sorted_keys

    # -- policy and limits -------------------------------------------------------------------------
    def policy_for(self, key: str) -> str:
        """The conflict policy of a key: the longest matching prefix override, else the default."""
        for prefix, policy in self._policies:
            if key.startswith(prefix):
                return policy
        return self.config.conflict_policy

    def check_key(self, key: str) -> None:
        try:
            size = len(key.encode())
        except UnicodeEncodeError as err:
            raise InvalidKey(f"key is not valid UTF-8: {err}") from None
        if not 0 < size <= self.config.max_key_bytes:
            raise InvalidKey(f"key must be 1..{self.config.max_key_bytes} bytes of UTF-8, got {size}")

    def check_value(self, value: bytes) -> None:
        if len(value) > self.config.max_value_bytes:
            raise ValueTooLarge(f"value is {len(value)} bytes; the limit is {self.config.max_value_bytes}")

    # -- local writes ------------------------------------------------------------------------------
    def local_put(self, key: str, value: bytes, now_ms: int,
                  context: CausalContext | None = None) -> ValueEntry:
        """Write `value`; returns the key's new state (broadcast it as a state rumor). KindMismatch under a CRDT
        prefix (core/keys.py: such keys hold their CRDT only)."""
        self.check_key(key)
        self._check_plain(key)
        self.check_value(value)
        return self._local_write(key, value, now_ms, context)

    @staticmethod
    def _check_plain(key: str) -> None:
        """KindMismatch if `key` lies under a CRDT prefix: a plain value there made the CRDT's route fail for it."""
        prefix = crdt_prefix(key)
        if prefix is not None:
            raise KindMismatch(f"{key[:80]!r}: keys under {prefix!r} hold {with_article(CRDT_PREFIXES[prefix])} only; "
                               f"use {crdt_route(key)}")

    def local_delete(self, key: str, now_ms: int, context: CausalContext | None = None) -> ValueEntry | None:
        """Delete (a tombstone); None if there was nothing live to delete. Without a context it deletes
        every version this replica holds. A key it holds is never refused for its length: one written under
        a larger max_key_bytes (lowered since) must stay deletable."""
        self._check_plain(key)
        current = self._entries.get(key)
        if current is None:
            self.check_key(key)
        if current is None or current.is_tombstone:
            return None
        if isinstance(current, CrdtEntry):
            if kind_problem(key, current.value.TYPE) is None:
                raise KindMismatch(f"{key!r} holds {with_article(current.value.TYPE)}; CRDT keys cannot be deleted")
            return self._local_write(key, None, now_ms, None)  # (a legacy CRDT outside the prefixes: replaced)
        if context is None:
            context = CausalContext(current.context, current.timestamp)
        return self._local_write(key, None, now_ms, context)

    def delete_leaves(self, key: str, context: CausalContext | None) -> tuple[Dot, ...]:
        """The writes a delete of `key` with the client's `context`, just made here (or not made: nothing live
        was here), leaves live: the dots the token names (each writer's latest read) that this replica has not
        seen. Ask it after `local_delete`; () when the delete covers everything the client read.

        Why this is needed (ctx-review F2): a token read at another agent may name a value that has not reached
        this one. The tombstone's context is what this replica has seen (`_local_write`: never the client's
        claim), so when that value arrives it is not covered and stays live, while the delete answered success;
        38 of 40 such cross-agent deletes did so. Under `siblings` a dot outside the key's context (and
        graveyard) survives. Under `lww` the newest HLC wins: a tombstone stamped after the token's HLC beats
        every value read (each is at or before it), so nothing survives; with no such tombstone here (nothing
        was written, and what is here is older than the read) the value read wins when it arrives. This
        replica's own dots are never reported: it holds every write it made, so a higher one is made up and
        will never arrive."""
        if context is None:
            return ()
        entry = self._entries.get(key)
        if isinstance(entry, CrdtEntry):
            return ()
        if self.policy_for(key) == LWW and entry is not None and entry.is_tombstone \
                and entry.timestamp > context.timestamp:
            return ()
        return self._unseen(key, entry, context)

    def put_leaves(self, key: str, context: CausalContext | None) -> tuple[Dot, ...]:
        """The writes a put of `key` with the client's `context`, just made here, leaves as siblings when they
        arrive: the dots the token names that this replica has not seen (as `delete_leaves`: the new state's
        context is what this replica has seen, never the client's claim). Ask it after `local_put`; () when the
        write replaces everything the client read. Under `lww` always (): the write is stamped after the
        token's HLC, so it beats every value read wherever it meets one. The write itself succeeded; the API
        only says what it could not replace (ctx-review: the PUT answered as if it had replaced them)."""
        if context is None or self.policy_for(key) == LWW:
            return ()
        entry = self._entries.get(key)
        if isinstance(entry, CrdtEntry):
            return ()
        return self._unseen(key, entry, context)

    def _unseen(self, key: str, entry: ValueEntry | None, context: CausalContext) -> tuple[Dot, ...]:
        """The dots `context` names that this replica has not seen for `key` (neither in its context nor in its
        graveyard), its own excepted (it holds every write it made: a higher one is made up and never arrives)."""
        seen = entry.context if entry is not None else EMPTY
        grave = self._graveyard.get(key)
        if grave is not None:
            seen = seen.merge(grave.context)
        if not is_compact(context.vv):
            return tuple(dot for dot in context.vv.items() if dot[0] != self.node and not seen.covers(dot))
        # A compact token (`read_context`): a digest of a writer seen here stands for it (and is reported by its
        # name); one of a writer never seen here is reported as the token names it.
        names = {compact_writer(node): node for node in (*seen, self.node)}
        unseen = []
        for node, n in context.vv.items():
            node = names.get(node, node)
            if node != self.node and not seen.covers((node, n)):
                unseen.append((node, n))
        return tuple(unseen)

    def _local_write(self, key: str, value: bytes | None, now_ms: int,
                     context: CausalContext | None) -> ValueEntry:
        """The write's new state. The client's context (`context.vv`) only selects which versions held here it
        overwrites (those it covers) and its HLC stamps the write after what was read; the new state's context is
        what this replica has seen (the key's context and graveyard) plus the new dot, never the client's.

        Why not merge the client's context in (Riak's client-side DVV, and this store until session 14): it is an
        unverifiable claim. One naming this replica at 2^53 (accepted then) became the key's context, the next
        write took 2^53 + 1, and every token read afterwards was refused as over the client bound (400 for
        good: siblings could not be collapsed, surviving delete and collection through the graveyard); ones
        naming 4,000 made-up writers each were stored and replicated, so three concurrent writes gave a token no
        client could send back (224 KB), five a union past MAX_CONTEXT_NODES that left replicas refusing each
        other's states for good, and 250 writes a million names the retirement scan walked every minute. An
        honest token only names writers of the key, and a context bounded by what the replica has seen keeps
        every name and counter stored one that a real write made.

        The price, in the safe direction: a token read at another agent may cover versions not yet here; they
        are not overwritten when they arrive but stay as siblings (`siblings` policy; a delete leaves them
        live, and `delete_leaves` says which), to be collapsed by the next read-and-write: nothing is lost,
        and under `lww` nothing changes (its winner is the highest HLC, and the write is stamped after the
        token's). A client that needs the cross-agent overwrite writes with `?w=N` or reads and writes at one
        agent."""
        current = self._entries.get(key)
        if isinstance(current, CrdtEntry):
            if kind_problem(key, current.value.TYPE) is None:
                raise KindMismatch(f"{key!r} holds {with_article(current.value.TYPE)}; use the CRDT operations")
            # A legacy CRDT outside the CRDT prefixes (an old snapshot, an older peer): no route serves it, and
            # the plain write replaces it (stamped after it, so it wins the kinds' merge everywhere).
            current = None
        policy = self.policy_for(key)
        base = current.context if current is not None else EMPTY
        grave = self._graveyard.get(key)
        if grave is not None:
            base = base.merge(grave.context)
        seen = context.vv if context is not None else EMPTY
        if policy == LWW:
            kept: list[Version] = []
        else:
            # Tombstones hold no value, so any local write may overwrite them; live versions only if read.
            compact = is_compact(seen)  # (a token naming writers by digest: `read_context`)
            kept = [v for v in (current.versions if current else ()) if v.value is not None
                    and not token_covers(seen, v.dot, compact)]
            if len(kept) + 1 > MAX_LOCAL_SIBLINGS and (current is None or len(kept) >= len(current.live)):
                raise TooManySiblings(f"{key!r} has {len(kept)} concurrent values; read it and write back "
                                      "with its context to resolve them")
        stamp_after = context.timestamp if context is not None else hlc_mod.ZERO
        try:
            clock = hlc_mod.update(self.clock, stamp_after, now_ms, max_drift_ms=self.config.max_clock_drift_ms)
        except hlc_mod.ClockDriftError as err:
            raise self._refuse("clock_drift", f"causal context: {err}") from None
        new_context = base  # (not base.merge(seen): see the docstring)
        if len(new_context) + (self.node not in new_context) > MAX_CONTEXT_NODES:
            raise self._refuse("context_too_large", f"{key!r}: the write's context would name more than "
                                                    f"{MAX_CONTEXT_NODES} writer nodes")
        if new_context.get(self.node) >= MAX_COUNTER:
            raise self._refuse("counter_overflow", f"{key!r}: the context's counter for this replica is at "
                                                   f"{MAX_COUNTER}; no further write fits")
        self.clock = clock
        new_context, dot = new_context.increment(self.node)
        version = Version(dot, self.clock, value)
        live_before = len(current.live) if current is not None else 0
        if kept:  # a write concurrent with live values it has not read: a new sibling
            self._counters.detected += 1
        entry = ValueEntry(key, tuple(sorted([*kept, version], key=lambda v: v.dot)), new_context)
        if live_before > 1 and len(entry.live) <= 1:
            self._counters.resolved += 1
        self._graveyard.pop(key, None)
        self._put(key, entry, "local")
        return entry

    def update_crdt(self, key: str, kind: type[C], mutate: Callable[[C, str, Hlc], C], now_ms: int) -> C:
        """Apply `mutate(current, node, timestamp)` to the CRDT under `key` (created empty if absent).

        e.g. `store.update_crdt("crdt/counters/hits", PNCounter, lambda c, n, _: c.increment(n, 3), now_ms)`.

        KindMismatch (counted as `wrong_kind`) when `kind` may not live under `key` (core/keys.kind_problem: a
        CRDT outside the CRDT prefixes, or under another type's). The HTTP routes only ever pass their own
        prefix, but the rule was theirs alone: any other caller (a state-node operation, a test, a tool) could
        plant a CRDT no route serves, which then replicated to every agent.
        """
        self.check_key(key)
        problem = kind_problem(key, kind.TYPE)
        if problem is not None:
            self.refused["wrong_kind"] = self.refused.get("wrong_kind", 0) + 1
            raise KindMismatch(problem)
        current = self._entries.get(key)
        if current is not None and kind_problem(key, entry_kind(current)):
            current = None  # a legacy entry of the wrong kind under this CRDT's prefix: the update replaces it
        if isinstance(current, ValueEntry) and not current.is_tombstone:
            raise KindMismatch(f"{key!r} holds plain values, not {with_article(kind.TYPE)}")
        if isinstance(current, CrdtEntry) and not isinstance(current.value, kind):
            raise KindMismatch(f"{key!r} holds {with_article(current.value.TYPE)}, not {with_article(kind.TYPE)}")
        clock = hlc_mod.tick(self.clock, now_ms)
        start: C = current.value if isinstance(current, CrdtEntry) else kind()  # type: ignore[assignment]
        try:
            value = mutate(start, self.node, clock)
        except (ValueError, OverflowError) as err:
            raise self._refuse("crdt_invalid", f"{key!r}: {err}") from None
        plain = crdt_mod.to_plain(value)
        if _max_int(plain) > MAX_COUNTER:
            raise self._refuse("counter_overflow", f"{key!r}: the {kind.TYPE} would hold a number above "
                                                   f"{MAX_COUNTER} (2^63-1); refused")
        head = [_CRDT_TAG, key, hlc_mod.to_plain(clock)]  # (entry_to_plain's, the state converted once)
        packed = _pack([*head, plain])
        size = len(packed) - len(_pack(head))  # (the state's bytes: see `_crdt_packed`)
        limit = self.config.crdt_write_limit
        if size > limit and size > _crdt_size(current):  # (shrinking an over-limit state always passes)
            raise ValueTooLarge(f"{key!r}: the {kind.TYPE} would encode to {size} bytes; the limit is {limit}")
        self.clock = clock
        entry = CrdtEntry(key, value, self.clock)
        self._graveyard.pop(key, None)
        self._put(key, entry, "local", packed)
        return value

    # -- remote writes -----------------------------------------------------------------------------
    def apply_remote(self, entry: Entry, now_ms: int | None = None) -> bool:
        """Merge a key state from a peer (a rumor or an anti-entropy repair). True if ours changed.

        Raises InvalidEntry if the entry breaks a limit or an invariant (its key included: `key_problem`, and
        `kind_problem`, counted as `wrong_kind`, so no caller that skips the decoders plants a CRDT no route
        serves or a plain value under a CRDT prefix), or (given `now_ms`, which every
        network edge passes) carries a timestamp further ahead of our clock than `max_clock_drift_ms`.
        """
        packed = self._validated(entry)  # (a CRDT entry's encoding: its state's size was checked on it)
        if now_ms is not None:
            self.check_timestamps(entry, now_ms)
        entry = self._normalize(entry)  # (CRDT entries are left as they are)
        self.clock = hlc_mod.observe(self.clock, entry.timestamp)
        key = entry.key
        current = self._entries.get(key)
        if current is None:
            grave = self._graveyard.get(key)
            if grave is not None:
                if isinstance(entry, CrdtEntry):
                    if entry.timestamp <= grave.timestamp:
                        return False
                else:
                    fresh = tuple(v for v in entry.versions if not grave.context.covers(v.dot))
                    if not fresh:
                        return False
                    entry = ValueEntry(key, fresh, entry.context.merge(grave.context))
                    self._check_merged_context(entry)
                del self._graveyard[key]
            merged: Entry = entry
        else:
            merged = self._merge(current, entry)
            if merged == current:
                return False
            self._check_merged_context(merged)
            packed = self._crdt_packed(merged, "the merged") if isinstance(merged, CrdtEntry) else None
        self._put(key, merged, "remote", packed)
        return True

    def _crdt_packed(self, entry: CrdtEntry, what: str) -> bytes:
        """The entry's canonical encoding (`_put`'s, for the Merkle digest and the log record), its state held
        up to the fixed CRDT_STATE_CEILING (not the configured write limit: concurrent operations, each within
        it, merge into more, and a replica refusing what the rest of the cluster merged diverges for good);
        past it, refused and counted as `state_too_large`. The state's size is read off the entry's encoding
        (msgpack packs an array's items one after the other: the entry's bytes less those of its first three
        fields), so the state is converted and packed once: twice, converting it was ~90 % of merging a new
        OR-set key."""
        plain = entry_to_plain(entry)
        packed = _pack(plain)
        size = len(packed) - len(_pack(plain[:3]))
        limit = self.crdt_ceiling
        if size > limit:
            raise self._invalid("state_too_large", f"{entry.key!r}: {what} CRDT state would encode to {size} "
                                                   f"bytes; peers' states are merged up to {limit}")
        return packed

    def _check_merged_context(self, merged: Entry) -> None:
        """Each entry passed its own MAX_CONTEXT_NODES bound (`validate`); their union may not (disjoint
        writers sent one entry at a time would grow a key's context without end): refused, ours unchanged."""
        if isinstance(merged, ValueEntry) and len(merged.context) > MAX_CONTEXT_NODES:
            raise self._invalid("context_too_large", f"{merged.key!r}: the merged context would name more than "
                                                     f"{MAX_CONTEXT_NODES} writer nodes")

    def was_collected(self, key: str) -> bool:
        """True if `key` is absent here because its tombstone was collected (it is in the graveyard)."""
        return key not in self._entries and key in self._graveyard

    def forget_collected(self, key: str, now_ms: int) -> bool:
        """A peer collected this key's tombstone (every member had it): collect ours too."""
        current = self._entries.get(key)
        if current is None or not current.is_tombstone:
            return False
        self._collect(key, to_graveyard=now_ms - current.timestamp.wall_ms < self._ttl_ms)
        return True

    def _refuse(self, reason: str, message: str) -> OutOfRange:
        """A local write refused, counted under `reason`."""
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return OutOfRange(message)

    def _invalid(self, reason: str, message: str) -> InvalidEntry:
        """A peer's entry refused (`refuse_remote`), as the exception to raise."""
        self.refuse_remote(reason, message)
        return InvalidEntry(message)

    def refuse_remote(self, reason: str, message: str, count: int = 1) -> None:
        """Count `count` peers' entries refused under `reason` (gossip_state_refused_total) and as remote
        refusals, which the state service logs (rate-limited, naming the latest `message`): a refused merge can
        keep replicas apart, and is never silent. The store's own refusals, and the entries a decoder skipped
        before they reached it (the state node's rumors, io/state_service's anti-entropy answers and pushes):
        one count and one log for both."""
        self.refused[reason] = self.refused.get(reason, 0) + count
        self.refused_remote += count
        self.last_refused_remote = f"{reason}: {message}"

    def check_timestamps(self, entry: Entry, now_ms: int) -> None:
        """InvalidEntry (counted as `clock_drift`) if any timestamp in `entry` runs more than
        `max_clock_drift_ms` ahead of `now_ms`: merging it would drag our clock (and every later local write)
        into the future, up to values no decoder accepts."""
        limit = now_ms + self.config.max_clock_drift_ms
        if isinstance(entry, ValueEntry):  # its timestamp is its latest version's (ZERO without versions)
            worst = 0
            for v in entry.versions:
                if v.timestamp.wall_ms > worst:
                    worst = v.timestamp.wall_ms
        else:
            worst = entry.timestamp.wall_ms
            inner = getattr(entry.value, "timestamp", None)
            if isinstance(inner, Hlc):
                worst = max(worst, inner.wall_ms)
        if worst > limit:
            raise self._invalid("clock_drift", f"{entry.key!r}: timestamp {worst} ms is {worst - now_ms} ms ahead "
                                               f"of this agent's clock (tolerance state.maxClockDriftMs = "
                                               f"{self.config.max_clock_drift_ms} ms)")

    def validate(self, entry: Entry) -> None:
        """Limits and invariants every stored entry satisfies; raises InvalidEntry. Keys, values and CRDT
        states are held to the fixed ceilings, not max_key_bytes / max_value_bytes / max_crdt_bytes (limits on
        local writes): an entry written under a larger limit, lowered since, must still reach a replica that
        starts empty."""
        self._validated(entry)

    def _validated(self, entry: Entry) -> bytes | None:
        """`validate`, returning a CRDT entry's encoding (`_crdt_packed`: checking its state's size made it)."""
        try:
            size = len(entry.key.encode())
        except UnicodeEncodeError:
            raise self._invalid("invalid_key", f"{entry.key!r}: key is not valid UTF-8") from None
        if size == 0:
            raise self._invalid("invalid_key", "empty key")
        if size > KEY_BYTES_CEILING:
            raise self._invalid("key_too_long", f"key must be 1..{KEY_BYTES_CEILING} bytes of UTF-8, got {size}")
        problem = key_problem(entry.key)  # (the decoders skip these first: this holds every other caller to it)
        if problem is not None:
            raise self._invalid("invalid_key", problem)
        problem = kind_problem(entry.key, entry_kind(entry))  # (likewise: the decoders' `wrong_kind`, held here)
        if problem is not None:
            raise self._invalid("wrong_kind", problem)
        if isinstance(entry, CrdtEntry):
            return self._crdt_packed(entry, "a peer's")
        if not entry.versions:
            raise self._invalid("invalid_entry", f"{entry.key!r}: no versions")
        if len(entry.context) > MAX_CONTEXT_NODES:
            raise self._invalid("context_too_large", f"{entry.key!r}: a context of {len(entry.context)} writer "
                                                     f"nodes (limit {MAX_CONTEXT_NODES})")
        dots = set()
        for v in entry.versions:
            if v.value is not None and len(v.value) > VALUE_BYTES_CEILING:
                raise self._invalid("value_too_large", f"{entry.key!r}: value above {VALUE_BYTES_CEILING} bytes")
            if v.timestamp.node != v.dot[0] or v.dot in dots or not entry.context.covers(v.dot):
                raise self._invalid("invalid_entry", f"{entry.key!r}: version {v.dot} is duplicated, "
                                                     "mis-stamped or outside the context")
            dots.add(v.dot)
        return None

    def _merge(self, a: Entry, b: Entry) -> Entry:
        if isinstance(a, ValueEntry) and isinstance(b, ValueEntry):
            return self._merge_values(a, b)
        if isinstance(a, CrdtEntry) and isinstance(b, CrdtEntry) and type(a.value) is type(b.value):
            return CrdtEntry(a.key, crdt_mod.merge(a.value, b.value), max(a.timestamp, b.timestamp))
        # Different kinds under one key (misuse): the later one wins, deterministically.
        return max(a, b, key=lambda e: (e.timestamp, entry_digest(e)))

    def _merge_values(self, a: ValueEntry, b: ValueEntry) -> ValueEntry:
        context = a.context.merge(b.context)
        if self.policy_for(a.key) == LWW:
            wa = max(a.versions, key=Version.rank)
            wb = max(b.versions, key=Version.rank)
            winner = max(wa, wb, key=Version.rank)
            if wa.dot != wb.dot and not b.context.covers(wa.dot) and not a.context.covers(wb.dot):
                self._counters.detected += 1
                self._counters.resolved += 1
            return ValueEntry(a.key, (winner,), context)
        joined = join_dots({v.dot: v for v in a.versions}, a.context, {v.dot: v for v in b.versions},
                           b.context, lambda x, y: max(x, y, key=Version.rank))
        merged = ValueEntry(a.key, tuple(joined[d] for d in sorted(joined)), context)
        if len(merged.live) > max(len(a.live), len(b.live)):
            self._counters.detected += 1
        return merged

    # -- reads -------------------------------------------------------------------------------------
    def entry(self, key: str) -> Entry | None:
        """The raw state of a key (None if absent or collected)."""
        return self._entries.get(key)

    def get(self, key: str) -> ReadResult | None:
        """Live values (siblings under `siblings`) and the context to write back with; None if the key
        is unknown or a CRDT. A deleted key gives `deleted=True` and a context (to re-create it causally)."""
        entry = self._entries.get(key)
        if entry is None or isinstance(entry, CrdtEntry):
            return None
        return read_result(entry)

    def get_crdt(self, key: str) -> Crdt | None:
        entry = self._entries.get(key)
        return entry.value if isinstance(entry, CrdtEntry) else None

    def scan(self, prefix: str = "", after: str | None = None, limit: int = 100, *,
             include_deleted: bool = False) -> ScanPage:
        """Up to `limit` entries with keys starting with `prefix`, in key order, after key `after`."""
        keys = self._sorted
        start = keys.bisect_right(after) if after is not None and after >= prefix else keys.bisect_left(prefix)
        out: list[Entry] = []
        for key in keys.islice(start):
            if not key.startswith(prefix):
                break
            entry = self._entries[key]
            if not include_deleted and entry.is_tombstone:
                continue
            if len(out) == limit:
                return ScanPage(tuple(out), out[-1].key if out else after)
            out.append(entry)
        return ScanPage(tuple(out), None)

    def __len__(self) -> int:
        """Live keys."""
        return len(self._entries) - len(self._tombstones)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def all_keys(self) -> list[str]:
        """Every key held, tombstones included, in order."""
        return list(self._key_order)

    @property
    def retired(self) -> frozenset[str]:
        return self._retired

    def tombstone_count(self) -> int:
        """Tombstones held (`stats().tombstones`, without computing the root)."""
        return len(self._tombstones)

    def holds_garbage(self) -> bool:
        """Tombstones or graveyard entries wait for collection (`collect_garbage` has work)."""
        return bool(self._tombstones or self._graveyard)

    def root_hex(self) -> str:
        return self.merkle.root_hex()

    def stats(self) -> StoreStats:
        return StoreStats(len(self), len(self._tombstones), len(self._graveyard), self._counters.detected,
                          self._counters.resolved, self.clock, self.root_hex())

    # -- garbage collection ------------------------------------------------------------------------
    @property
    def _ttl_ms(self) -> int:
        return int(self.config.tombstone_ttl * 1000)

    def acknowledge_tombstones(self, now_ms: int) -> int:
        """Every current member holds what we hold (their published roots equal ours): mark our
        tombstones collectible. Returns how many were newly marked."""
        acked = self._tracking.acked
        fresh = [key for key in self._tombstones if key not in acked]
        for key in fresh:
            acked[key] = now_ms
        return len(fresh)

    def collect_garbage(self, now_ms: int, *, ack_grace_ms: int = 0) -> int:
        """Collect tombstones acknowledged ≥ `ack_grace_ms` ago or older than the TTL, and expire the
        graveyard. Returns how many tombstones left the store."""
        ttl = self._ttl_ms
        acked = self._tracking.acked
        collected = 0
        for key in sorted(self._tombstones):
            age = now_ms - self._entries[key].timestamp.wall_ms
            at = acked.get(key)
            if age >= ttl or (at is not None and now_ms - at >= ack_grace_ms):
                self._collect(key, to_graveyard=age < ttl)
                collected += 1
        for key in [k for k, g in self._graveyard.items() if now_ms - g.timestamp.wall_ms >= ttl]:
            del self._graveyard[key]
        return collected

    def _collect(self, key: str, *, to_graveyard: bool) -> None:
        entry = self._entries.pop(key)
        if to_graveyard and isinstance(entry, ValueEntry):
            self._graveyard[key] = _Grave(entry.context, entry.timestamp)
        self._tombstones.discard(key)
        self._tracking.acked.pop(key, None)
        self._sorted.remove(key)
        self.merkle.update(key, None)
        if self.record_changes:
            self._changes.append(Change(key, None, "gc"))

    def retire_nodes(self, nodes: Iterable[str]) -> int:
        """Prune version-vector entries of members reaped longer ago than the tombstone TTL (the runtime
        decides that; see `vector_clock` for the safety rule). Entries arriving later are pruned on
        ingest. Returns how many keys changed."""
        self._retired = self._retired | frozenset(nodes)
        changed = 0
        for key in list(self._key_order):
            entry = self._entries[key]
            pruned = self._normalize(entry)
            if pruned is not entry:
                self._put(key, pruned, "prune")
                changed += 1
        for grave in self._graveyard.values():
            grave.context = grave.context.prune(self._retired)
        return changed

    def unretire_nodes(self, nodes: Collection[str]) -> None:
        """A retired member is back (same name): stop pruning its entries."""
        self._retired = self._retired - frozenset(nodes)

    def context_writers(self, now_ms: int) -> dict[str, bool]:
        """Every writer not yet retired that a context names (value entries and the graveyard; CRDT states
        are never pruned), mapped to whether retiring it at `now_ms` is safe as far as this replica can tell.

        Pruned contexts spread (anti-entropy ships them, and every replica prunes what it ingests), so a
        pruned context must never meet a replica that still holds one of the writer's versions: the version
        would look unseen and come back (as a sibling, or through the graveyard). Under the TTL assumption
        (no replica lags a write by more than the TTL) that cannot happen once no state here naming the
        writer is younger than the TTL and none still holds one of its versions. Hence a writer is unsafe
        while some entry holds a version of it, or names it and was written less than the TTL ago, or a
        graveyard context names it (graves are younger than the TTL by construction)."""
        out: dict[str, bool] = {}
        self.context_writers_from(out, now_ms)
        return out

    def context_writers_from(self, out: dict[str, bool], now_ms: int, after: str | None = None,
                             budget: int | None = None) -> str | None:
        """`context_writers` a slice at a time, into `out`: the keys after `after` (None: from the first) in key
        order until `budget` names (context entries and versions) were walked, then the graveyard. Returns the
        last key walked (the next slice's `after`), or None once the graveyard was too (the scan is complete).

        Why slices: the whole walk ran on the event loop every retirement check (state_node.RETIRE_EVERY):
        ~0.4 s at a million keys of three writers, ~0.3 s per million names of made-up writers (which a client
        could add then). A key changed after its slice was walked is seen as it was; state_node checks the
        writers it would retire against a whole walk before retiring any (see `StateNode._retire`)."""
        ttl, retired, entries = self._ttl_ms, self._retired, self._entries
        keys = self._sorted.irange(minimum=after, inclusive=(False, True)) if after is not None else self._key_order
        walked = 0
        for key in keys:
            entry = entries[key]
            walked += 1
            if not isinstance(entry, CrdtEntry):
                young = now_ms - entry.timestamp.wall_ms < ttl
                for node in entry.context:
                    if node not in retired:
                        out[node] = out.get(node, True) and not young
                for v in entry.versions:
                    if v.dot[0] not in retired:
                        out[v.dot[0]] = False
                walked += len(entry.context) + len(entry.versions)
            if budget is not None and walked >= budget:
                return key
        for grave in self._graveyard.values():
            for node in grave.context:
                if node not in retired:
                    out[node] = False
        return None

    def _normalize(self, entry: Entry) -> Entry:
        if not self._retired or isinstance(entry, CrdtEntry):
            return entry
        pruned = entry.context.prune(self._retired, (v.dot for v in entry.versions))
        return entry if pruned is entry.context else ValueEntry(entry.key, entry.versions, pruned)

    # -- persistence -------------------------------------------------------------------------------
    def drain_changes(self) -> list[Change]:
        """Changes since the last call, oldest first (append them to the log)."""
        changes, self._changes = self._changes, []
        return changes

    def replay(self, change: Change) -> None:
        """Re-apply a logged change (after `restore` of the snapshot that preceded it); not re-recorded."""
        recording, self.record_changes = self.record_changes, False
        try:
            if change.entry is None:
                if change.key in self._entries:
                    current = self._entries[change.key]
                    self._collect(change.key, to_graveyard=isinstance(current, ValueEntry))
                return
            self.clock = hlc_mod.observe(self.clock, change.entry.timestamp)
            self._graveyard.pop(change.key, None)
            self._put(change.key, change.entry, change.origin)
        finally:
            self.record_changes = recording

    def snapshot(self) -> dict[str, Any]:
        """The whole store as plain (msgpack-ready) data; `restore` reads it back."""
        return self.capture().to_plain()

    def capture(self) -> StoreImage:
        """The store as of now, cheaply: references to its (immutable) entries, no conversion. The image
        stays consistent while the store changes, so the costly `to_plain` and packing can run on another
        thread (the state driver writes snapshots off the event loop)."""
        entries = self._entries
        return StoreImage(self.node, self.clock, tuple(entries[k] for k in self._key_order),
                          tuple((k, g.context, g.timestamp) for k, g in sorted(self._graveyard.items())),
                          self._retired, (self._counters.detected, self._counters.resolved))

    @classmethod
    def restore(cls, data: Any, config: StateConfig | None = None, *, merkle_depth: int = DEFAULT_DEPTH,
                merkle_bits: int = DEFAULT_BITS, refused: list[RefusedItem] | None = None) -> KvStore:
        """Inverse of `snapshot`; raises ValueError on malformed data. An entry or graveyard item whose context
        names more than MAX_CONTEXT_NODES writer nodes (the bound every network path holds entries to: a
        crafted or damaged data directory), or whose key no client or peer may write now (core/keys.py: a
        control character, a '.'/'..' segment; an entry whose kind contradicts its key's prefix), written by an
        older version or edited on disk, is left out and appended to `refused`, the rest restored; without
        `refused`, it raises ValueError. Restored, such a key broke watchers and logs here and went on to every
        peer (which now skips it: a divergence for good)."""
        if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("node"), str):
            raise ValueError("snapshot: not a version 1 store snapshot")
        store = cls(data["node"], config, merkle_depth=merkle_depth, merkle_bits=merkle_bits, record_changes=False)
        store.clock = hlc_mod.from_plain(data["clock"]).with_node(store.node)
        store._retired = frozenset(_str_list(data.get("retired", [])))

        def over_bound(kind: Literal["entry", "graveyard item"], item: list[Any], context: object) -> bool:
            nodes = len(context) // 2 if isinstance(context, list) else 0
            if nodes <= MAX_CONTEXT_NODES:
                return False
            if refused is None:
                raise ValueError(f"snapshot: {kind} {item[1 if kind == 'entry' else 0]!r:.80} names {nodes} "
                                 f"writer nodes in its context (limit {MAX_CONTEXT_NODES})")
            refused.append(RefusedItem(kind, item, nodes=nodes))
            return True

        def bad_key(kind: Literal["entry", "graveyard item"], item: list[Any], problem: str | None) -> bool:
            if problem is None:
                return False
            if refused is None:
                raise ValueError(f"snapshot: {kind}: {problem}")
            refused.append(RefusedItem(kind, item, problem=problem))
            return True
        for item in _list(data.get("entries")):
            if isinstance(item, list) and len(item) == 4 and item[0] == _VALUE_TAG and over_bound("entry", item,
                                                                                                  item[2]):
                continue
            entry = entry_from_plain(item, MAX_COUNTER)  # (our own writes: up to the overflow point)
            if bad_key("entry", item, key_problem(entry.key) or kind_problem(entry.key, entry_kind(entry))):
                continue
            store._put(entry.key, entry, "restore")
        for item in _list(data.get("graveyard")):
            if not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], str):
                raise ValueError("snapshot: bad graveyard record")
            if over_bound("graveyard item", item, item[1]) or bad_key("graveyard item", item, key_problem(item[0])):
                continue
            store._graveyard[item[0]] = _Grave(VersionVector.from_plain(item[1], MAX_COUNTER),
                                               hlc_mod.from_plain(item[2]))
        conflicts = data.get("conflicts", [0, 0])
        if isinstance(conflicts, list) and len(conflicts) == 2 and all(isinstance(n, int) for n in conflicts):
            store._counters = _Counters(conflicts[0], conflicts[1])
        store.record_changes = True
        return store

    # -- internals ---------------------------------------------------------------------------------
    def _put(self, key: str, entry: Entry, origin: str, packed: bytes | None = None) -> None:
        """Hold `entry` for `key`: the key order, tombstones, the Merkle leaf and the change log. The key order is
        a SortedList (O(log n) per new key): a sorted list's insert moved every later key, ~150 us per new key
        at 1M keys (~3 us in the SortedList), and a replica filled in hash order (anti-entropy answers, rumors
        of new keys) took time quadratic in its key count: 300k keys cost ~5 s in list moves alone."""
        if key not in self._entries:
            self._sorted.add(key)
        self._entries[key] = entry
        if entry.is_tombstone:
            self._tombstones.add(key)
        else:
            self._tombstones.discard(key)
        self._tracking.acked.pop(key, None)
        # (entry_digest's bytes, kept for the log record; `packed`: the caller's, made for a check of its own)
        if packed is None:
            packed = _pack(entry_to_plain(entry))
        self.merkle.update(key, hashlib.sha256(packed).digest())
        if self.record_changes:
            self._changes.append(Change(key, entry, origin, packed))


@dataclass(frozen=True, slots=True)
class RefusedItem:
    """A snapshot item `KvStore.restore` left out: `kind` "entry" (`plain`: kvstore's plain entry) or
    "graveyard item" (`plain`: [key, context, timestamp]), and why: how many writer nodes its context names
    (past MAX_CONTEXT_NODES), or `problem`, what is wrong with its key (core/keys.py)."""

    kind: Literal["entry", "graveyard item"]
    plain: list[Any]
    nodes: int = 0
    problem: str | None = None

    @property
    def why(self) -> str:
        """Why it was left out, for the log line recovery writes."""
        if self.problem is not None:
            return self.problem
        return (f"names {self.nodes} writer nodes in its context (limit {MAX_CONTEXT_NODES}, which every peer "
                "holds entries to)")

    @property
    def key(self) -> str:
        key = self.plain[1] if self.kind == "entry" else self.plain[0]
        return key if isinstance(key, str) else repr(key)


@dataclass(frozen=True, slots=True)
class StoreImage:
    """A store captured at one instant (`KvStore.capture`): immutable parts only."""

    node: str
    clock: Hlc
    entries: tuple[Entry, ...]
    graveyard: tuple[tuple[str, VersionVector, Hlc], ...]
    retired: frozenset[str]
    conflicts: tuple[int, int]

    def to_plain(self) -> dict[str, Any]:
        """The snapshot format (`KvStore.restore` reads it back)."""
        return {
            "v": 1,
            "node": self.node,
            "clock": hlc_mod.to_plain(self.clock),
            "entries": [entry_to_plain(e) for e in self.entries],
            "graveyard": [[k, context.to_plain(), hlc_mod.to_plain(ts)] for k, context, ts in self.graveyard],
            "retired": sorted(self.retired),
            "conflicts": list(self.conflicts),
        }


def read_result(entry: ValueEntry) -> ReadResult:
    """What a reader sees of a plain entry: live versions and the context to write back with."""
    live = entry.live
    return ReadResult(entry.key, live, read_context((v.dot for v in live), entry.timestamp, compact=True))


def read_context(dots: Iterable[Dot], timestamp: Hlc, *, compact: bool = False) -> CausalContext:
    """The context a read of values named by `dots` returns (a plain key's live versions, an MV register's values):
    each writer at its highest dot read, nodes in order while the token fits MAX_TOKEN_BYTES, and `timestamp`.

    Not the key's whole context: a write takes from its token only which versions held here it overwrites (see
    `KvStore._local_write`), and the versions read are exactly those (one held here that the reader did not see
    came after the read, so its dot is above what the token names). The whole context named every writer the
    key ever had, up to MAX_CONTEXT_NODES, and its token (over 200 KB) could be sent back neither as a header nor
    in a JSON body. A state of so many concurrent writers that their token would pass MAX_TOKEN_BYTES gives one
    naming those that fit: a write back overwrites those and leaves the rest as siblings (nothing is lost, and
    each further read and write back collapses more).

    `compact` (a plain key's read, `read_result`; not an MV register's, whose context core/crdt matches by name):
    when the writers' names do not fit, the token names each writer by `compact_writer` (`#` and 16 hex
    digits) instead, so a state of up to ~130 concurrent writers of any name length is named whole (before: 26
    of 128-byte member names, and a write back of 64 such siblings left 39 of them). The agent matches them
    against the writers of the versions it holds (`KvStore._local_write`, `_unseen`). Tokens whose names fit
    are as before (an agent of an older version reads them alike)."""
    vv = dots_vector(dots)
    stamp = len(timestamp.node.encode())
    if stamp > _MAX_NODE_BYTES:  # (only its wall time and logical count matter to a write: `hlc.update`)
        timestamp, stamp = Hlc(timestamp.wall_ms, timestamp.logical, ""), 0
    budget = MAX_TOKEN_BYTES - 32 - stamp  # (the frame and the HLC's numbers: at most ~30 bytes)
    if compact and len(vv) * (_MAX_NODE_BYTES + _ENTRY_BYTES) > budget \
            and sum(len(node.encode()) + _ENTRY_BYTES for node in vv) > budget:
        vv = VersionVector({compact_writer(node): n for node, n in vv.items()})
    if len(vv) * (_MAX_NODE_BYTES + _ENTRY_BYTES) > budget:
        kept: dict[str, int] = {}
        for node, n in vv.items():
            budget -= len(node.encode()) + _ENTRY_BYTES
            if budget < 0:
                break
            kept[node] = n
        vv = VersionVector(kept)
    return CausalContext(vv, timestamp)


_MAX_NODE_BYTES = 256  # (a member name's wire bound, codec._MAX_NAME_BYTES: below it, no size check is needed)
COMPACT_MARK = "#"
"""A compact token's writer names start with it (`compact_writer`); a replica id is `name@epoch`."""


def compact_writer(node: str) -> str:
    """How a compact token (`read_context`) names writer `node`: `#` and 16 hex digits of an unkeyed 64-bit
    BLAKE2b digest of the name (17 bytes, whatever the name's length; a 128-byte member name's replica id is
    135). Collisions among a key's writers (at most MAX_CONTEXT_NODES) have odds below 1e-11; a token is a
    client's claim anyway, which may name any writer."""
    return COMPACT_MARK + hashlib.blake2b(node.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def is_compact(vv: VersionVector) -> bool:
    """Whether a client's context names any writer by `compact_writer` (checked once per write)."""
    return any(node.startswith(COMPACT_MARK) for node in vv)


def token_covers(vv: VersionVector, dot: Dot, compact: bool) -> bool:
    """Whether a client's context `vv` covers `dot`: by the writer's name, or (a `compact` token) its digest."""
    return vv.covers(dot) or (compact and vv.get(compact_writer(dot[0])) >= dot[1])
_ENTRY_BYTES = 12      # (msgpack: a str header of at most 3 bytes, an int of at most 9)


# -- plain data (msgpack-ready); the codecs (state_codec, ae_codec) add framing and limits ------------------
def entry_to_plain(entry: Entry) -> list[Any]:
    """Canonical: equal states give equal plain data (and so equal digests)."""
    if isinstance(entry, CrdtEntry):
        return [_CRDT_TAG, entry.key, hlc_mod.to_plain(entry.timestamp), crdt_mod.to_plain(entry.value)]
    versions = [[v.dot[0], v.dot[1], v.timestamp.wall_ms, v.timestamp.logical, v.value] for v in entry.versions]
    return [_VALUE_TAG, entry.key, entry.context.to_plain(), versions]


def entry_from_plain(data: object, limit: int = MAX_ACCEPTED_COUNTER) -> Entry:
    """Inverse of `entry_to_plain`; raises ValueError on malformed data or a counter above `limit`
    (MAX_ACCEPTED_COUNTER for peers' entries; MAX_COUNTER for this replica's own records). Other limits are the
    store's job."""
    if not isinstance(data, list | tuple) or len(data) != 4 or not isinstance(data[1], str):
        raise ValueError("entry: expected [tag, key, ...]")
    tag, key = data[0], data[1]
    if tag == _CRDT_TAG:
        return CrdtEntry(key, crdt_mod.from_plain(data[3], limit), hlc_mod.from_plain(data[2]))
    if tag != _VALUE_TAG or not isinstance(data[3], list | tuple):
        raise ValueError(f"entry: unknown tag {tag!r:.20}")
    context = VersionVector.from_plain(data[2], limit)
    versions = []
    from_parts = hlc_mod.from_parts
    for item in data[3]:
        # (A decoder's lists of exact types take the first test; anything else the full checks.)
        if (type(item) is not list and not isinstance(item, list | tuple)) or len(item) != 5:
            raise ValueError("entry: expected [node, counter, wall_ms, logical, value]")
        node, n, wall, logical, value = item
        if value is not None and type(value) is not bytes and not isinstance(value, bytes):
            raise ValueError("entry: value must be bytes or nil")
        ts = from_parts(wall, logical, node)
        if type(n) is not int and (isinstance(n, bool) or not isinstance(n, int)):
            raise ValueError(f"entry: bad dot counter (counters are 1..{limit})")
        if not 0 < n <= limit:
            check_counter(n, limit, "entry: a dot counter")
        versions.append(Version((node, n), ts, value))
    if len(versions) > 1:
        versions.sort(key=_by_dot)
    return ValueEntry(key, tuple(versions), context)


def entry_kind(entry: Entry) -> str | None:
    """The kind core/keys.kind_problem checks: a CRDT's type, or PLAIN (None) for values and tombstones."""
    return entry.value.TYPE if isinstance(entry, CrdtEntry) else None


def _by_dot(v: Version) -> Dot:
    return v.dot


def entry_digest(entry: Entry) -> bytes:
    """sha256 of the canonical encoding: the version digest the Merkle tree holds."""
    return hashlib.sha256(_pack(entry_to_plain(entry))).digest()


def _pack(data: Any) -> bytes:
    return packing.pack(data)  # (msgpack.packb's bytes, without a new Packer per call)


def _crdt_size(entry: Entry | None) -> int:
    """The encoded size of a CRDT entry's state (0 for anything else)."""
    return len(_pack(crdt_mod.to_plain(entry.value))) if isinstance(entry, CrdtEntry) else 0


def _max_int(data: object) -> int:
    """The largest integer anywhere in plain (nested list) data; 0 if none."""
    if isinstance(data, bool):
        return 0
    if isinstance(data, int):
        return abs(data)
    if isinstance(data, list | tuple):
        return max((_max_int(item) for item in data), default=0)
    return 0


def _list(data: object) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError("snapshot: expected a list")
    return data


def _str_list(data: object) -> list[str]:
    if not isinstance(data, list) or not all(isinstance(s, str) for s in data):
        raise ValueError("snapshot: expected a list of strings")
    return data
