"""The replica: limits, LWW and siblings policies, causal contexts, tombstones that never resurrect,
garbage collection, CRDT values, change log replay, snapshots."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip_agent.core.config import KEY_BYTES_CEILING, VALUE_BYTES_CEILING, StateConfig
from gossip_agent.core.crdt import GCounter, ORSet, PNCounter
from gossip_agent.core.kvstore import (
    MAX_LOCAL_SIBLINGS,
    CausalContext,
    CrdtEntry,
    Entry,
    InvalidEntry,
    InvalidKey,
    KindMismatch,
    KvStore,
    TooManySiblings,
    ValueEntry,
    ValueTooLarge,
    Version,
    entry_from_plain,
    entry_to_plain,
)
from gossip_agent.core.vector_clock import VersionVector

T = 1_700_000_000_000
CONFIG = StateConfig(conflict_policies={"carts/": "siblings"}, max_value_bytes=1024, tombstone_ttl=3600.0)


def store(node: str, config: StateConfig = CONFIG) -> KvStore:
    return KvStore(node, config, merkle_depth=4)


def values(s: KvStore, key: str) -> set[bytes]:
    result = s.get(key)
    return set(result.values) if result else set()


# -- basics and limits ---------------------------------------------------------------------------------
def test_put_get_delete() -> None:
    s = store("a")
    s.local_put("ns/k", b"v1", T)
    assert s.get("ns/k").values == (b"v1",)  # type: ignore[union-attr]
    s.local_put("ns/k", b"v2", T + 1)
    assert s.get("ns/k").values == (b"v2",)  # type: ignore[union-attr]
    assert len(s) == 1
    assert s.local_delete("ns/k", T + 2) is not None
    read = s.get("ns/k")
    assert read is not None and read.deleted and len(s) == 0 and s.stats().tombstones == 1
    assert s.local_delete("ns/k", T + 3) is None
    assert s.local_delete("ns/never", T + 3) is None
    assert s.get("ns/never") is None


def test_limits() -> None:
    s = store("a")
    s.local_put("k" * 256, b"", T)
    s.local_put("é" * 128, b"x" * 1024, T)
    for key in ("", "k" * 257, "é" * 129, "\ud800"):
        with pytest.raises(InvalidKey):
            s.local_put(key, b"", T)
    with pytest.raises(ValueTooLarge):
        s.local_put("k", b"x" * 1025, T)


def test_policy_is_chosen_by_the_longest_prefix() -> None:
    s = KvStore("a", StateConfig(conflict_policies={"a/": "siblings", "a/b/": "lww"}))
    assert s.policy_for("a/x") == "siblings"
    assert s.policy_for("a/b/x") == "lww"
    assert s.policy_for("z") == "lww"


# -- concurrency ---------------------------------------------------------------------------------------
def test_lww_concurrent_writes_resolve_to_the_highest_hlc_everywhere() -> None:
    a, b = store("a"), store("b")
    ea = a.local_put("k", b"from-a", T + 5)
    eb = b.local_put("k", b"from-b", T)
    assert a.apply_remote(eb) is True  # our value wins, but the context now covers b's write
    assert a.apply_remote(eb) is False
    assert b.apply_remote(ea) is True
    a.apply_remote(b.entry("k"))  # type: ignore[arg-type]
    assert values(a, "k") == values(b, "k") == {b"from-a"}
    assert a.root_hex() == b.root_hex()
    assert b.stats().conflicts_detected == 1 and b.stats().conflicts_resolved == 1


def test_lww_ties_on_time_are_broken_by_node_id() -> None:
    a, b = store("a"), store("b")
    ea, eb = a.local_put("k", b"a", T), b.local_put("k", b"b", T)
    a.apply_remote(eb)
    b.apply_remote(ea)
    assert values(a, "k") == values(b, "k") == {b"b"}


def test_a_causal_overwrite_wins_even_from_a_node_whose_clock_is_behind() -> None:
    a, b = store("a"), store("b")
    ea = a.local_put("k", b"first", T + 10_000)   # a's clock is 10 s ahead
    b.apply_remote(ea)
    read = b.get("k")
    assert read is not None
    eb = b.local_put("k", b"second", T, context=read.context)
    assert eb.versions[0].timestamp > ea.versions[0].timestamp
    a.apply_remote(eb)
    assert values(a, "k") == {b"second"}
    # Even a client carrying the context to a replica that never saw the first write:
    c = store("c")
    ec = c.local_put("k", b"third", T, context=a.get("k").context)  # type: ignore[union-attr]
    a.apply_remote(ec)
    assert values(a, "k") == {b"third"}


def test_siblings_policy_keeps_concurrent_values_and_a_context_write_resolves_them() -> None:
    a, b = store("a"), store("b")
    ea = a.local_put("carts/1", b"apple", T)
    eb = b.local_put("carts/1", b"pear", T + 1)
    a.apply_remote(eb)
    b.apply_remote(ea)
    assert values(a, "carts/1") == values(b, "carts/1") == {b"apple", b"pear"}
    assert a.root_hex() == b.root_hex()
    assert a.stats().conflicts_detected == 1
    read = a.get("carts/1")
    assert read is not None and len(read.versions) == 2
    merged = a.local_put("carts/1", b"apple+pear", T + 2, context=read.context)
    assert values(a, "carts/1") == {b"apple+pear"}
    assert a.stats().conflicts_resolved == 1
    b.apply_remote(merged)
    assert values(b, "carts/1") == {b"apple+pear"}


def test_siblings_blind_write_adds_a_sibling_and_stale_context_keeps_unseen_ones() -> None:
    a = store("a")
    a.local_put("carts/1", b"one", T)
    stale = a.get("carts/1").context  # type: ignore[union-attr]
    a.local_put("carts/1", b"two", T + 1)  # blind: a sibling
    assert values(a, "carts/1") == {b"one", b"two"}
    a.local_put("carts/1", b"three", T + 2, context=stale)  # overwrites "one" only
    assert values(a, "carts/1") == {b"two", b"three"}


def test_blind_writes_are_capped_to_avoid_sibling_explosion() -> None:
    a = store("a")
    for i in range(MAX_LOCAL_SIBLINGS):
        a.local_put("carts/x", bytes([i]), T + i)
    with pytest.raises(TooManySiblings):
        a.local_put("carts/x", b"more", T + 100)
    a.local_put("carts/x", b"resolved", T + 101, context=a.get("carts/x").context)  # type: ignore[union-attr]
    assert values(a, "carts/x") == {b"resolved"}


def test_siblings_delete_without_context_removes_what_it_holds_but_not_unseen_writes() -> None:
    a, b = store("a"), store("b")
    ea = a.local_put("carts/1", b"x", T)
    b.apply_remote(ea)
    eb = b.local_put("carts/1", b"y", T + 1, context=b.get("carts/1").context)  # type: ignore[union-attr]
    concurrent = store("c").local_put("carts/1", b"z", T + 2)
    a.local_delete("carts/1", T + 3)
    a.apply_remote(eb)
    assert values(a, "carts/1") == {b"y"}  # b's write followed a version a's delete had not seen... y survives
    a.apply_remote(concurrent)
    assert values(a, "carts/1") == {b"y", b"z"}


# -- delivery order: the same result on every replica -------------------------------------------------
def _workload(policy_key: str, seed: int, n_ops: int) -> list[Entry]:
    """Three replicas writing and deleting one key, sometimes after reading each other: every entry emitted."""
    rng = random.Random(seed)
    replicas = [store(name) for name in "abc"]
    emitted: list[Entry] = []
    for step in range(n_ops):
        r = rng.choice(replicas)
        roll = rng.random()
        if roll < 0.3 and emitted:
            r.apply_remote(rng.choice(emitted))
            continue
        read = r.get(policy_key)
        context = read.context if read is not None and rng.random() < 0.5 else None
        now = T + rng.randrange(0, 50)  # clocks disagree
        if roll < 0.45:
            entry = r.local_delete(policy_key, now, context)
        else:
            entry = r.local_put(policy_key, b"v%d" % step, now, context)
        if entry is not None:
            emitted.append(entry)
    return emitted


@pytest.mark.parametrize("key", ["plain/k", "carts/k"], ids=["lww", "siblings"])
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_ops=st.integers(1, 25), order=st.randoms(use_true_random=False))
def test_any_delivery_order_gives_the_same_state(key: str, seed: int, n_ops: int, order: random.Random) -> None:
    emitted = _workload(key, seed, n_ops)
    if not emitted:
        return
    reference = store("r1")
    for entry in emitted:
        reference.apply_remote(entry)
    shuffled = list(emitted) + [order.choice(emitted) for _ in range(3)]  # duplicates too
    order.shuffle(shuffled)
    other = store("r2")
    for entry in shuffled:
        other.apply_remote(entry)
    assert other.entry(key) == reference.entry(key)
    assert other.root_hex() == reference.root_hex()


def test_lww_resolution_is_identical_for_every_permutation() -> None:
    import itertools
    writers = [store(n) for n in "abcd"]
    entries = [w.local_put("k", n.encode(), T + t) for w, n, t in zip(writers, "abcd", (3, 9, 9, 1), strict=True)]
    results = set()
    for perm in itertools.permutations(entries):
        s = store("r")
        for e in perm:
            s.apply_remote(e)
        results.add((s.root_hex(), tuple(values(s, "k"))))
    assert len(results) == 1
    assert next(iter(results))[1] == (b"c",)  # equal times: node id "c" > "b"


# -- tombstones ----------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(order=st.permutations(range(4)), policy_key=st.sampled_from(["plain/k", "carts/k"]))
def test_a_delete_never_resurrects_whatever_the_delivery_order(order: list[int], policy_key: str) -> None:
    a, b = store("a"), store("b")
    put1 = a.local_put(policy_key, b"v1", T)
    b.apply_remote(put1)
    put2 = b.local_put(policy_key, b"v2", T + 1, context=b.get(policy_key).context)  # type: ignore[union-attr]
    a.apply_remote(put2)
    delete = a.local_delete(policy_key, T + 2)
    assert delete is not None
    stale_copy = store("c")
    stale_copy.apply_remote(put1)
    updates = [put1, put2, delete, stale_copy.entry(policy_key)]
    target = store("t")
    for i in order:
        target.apply_remote(updates[i])  # type: ignore[arg-type]
    read = target.get(policy_key)
    assert read is not None and read.deleted


def test_acknowledged_tombstones_are_collected_and_stale_copies_stay_dead() -> None:
    a, b = store("a"), store("b")
    put = a.local_put("k", b"v", T)
    b.apply_remote(put)
    delete = a.local_delete("k", T + 1)
    assert delete is not None
    assert a.collect_garbage(T + 2) == 0  # not acknowledged, not expired
    assert a.acknowledge_tombstones(T + 2) == 1
    assert a.collect_garbage(T + 2, ack_grace_ms=1000) == 0
    assert a.collect_garbage(T + 1002, ack_grace_ms=1000) == 1
    assert "k" not in a and a.was_collected("k") and a.stats().tombstones == 0
    assert a.root_hex() == store("x").root_hex()
    # b never got the delete (say it was partitioned): its stale value must not come back.
    assert a.apply_remote(b.entry("k")) is False  # type: ignore[arg-type]
    assert a.apply_remote(delete) is False
    assert a.get("k") is None
    # A genuinely new write after the delete is accepted.
    fresh = b.local_put("k", b"new", T + 5000, context=CausalContext(delete.context, delete.timestamp))
    assert a.apply_remote(fresh) is True and values(a, "k") == {b"new"}


def test_a_change_clears_the_acknowledgement() -> None:
    a = store("a")
    a.local_put("k", b"v", T)
    a.local_delete("k", T + 1)
    a.acknowledge_tombstones(T + 2)
    a.local_put("k", b"again", T + 3)
    a.local_delete("k", T + 4)
    assert a.collect_garbage(T + 5) == 0


def test_tombstones_and_the_graveyard_expire_after_the_ttl() -> None:
    a = store("a")
    a.local_put("k", b"v", T)
    a.local_put("j", b"v", T)
    a.local_delete("k", T)
    a.local_delete("j", T)
    a.acknowledge_tombstones(T)
    a.collect_garbage(T, ack_grace_ms=0)
    a.local_put("m", b"v", T)
    a.local_delete("m", T)
    ttl_ms = int(CONFIG.tombstone_ttl * 1000)
    assert a.collect_garbage(T + ttl_ms - 1) == 0 and a.stats().graveyard == 2
    assert a.collect_garbage(T + ttl_ms) == 1
    assert a.stats().graveyard == 0 and a.stats().tombstones == 0


def test_forget_collected_drops_our_tombstone_when_a_peer_collected_it() -> None:
    a = store("a")
    a.local_put("k", b"v", T)
    assert a.forget_collected("k", T) is False  # live: never
    a.local_delete("k", T + 1)
    assert a.forget_collected("k", T + 2) is True
    assert a.was_collected("k")


# -- remote validation ---------------------------------------------------------------------------------
def test_invalid_remote_entries_are_refused() -> None:
    s = store("a")
    good = store("b").local_put("k", b"v", T)
    v = good.versions[0]
    bad = [
        ValueEntry("", good.versions, good.context),
        ValueEntry("k", (), good.context),
        ValueEntry("k", good.versions, VersionVector()),
        ValueEntry("k", (v, v), good.context),
        ValueEntry("k", (Version(v.dot, v.timestamp.with_node("x"), v.value),), good.context),
        ValueEntry("k", (Version(v.dot, v.timestamp, b"x" * (VALUE_BYTES_CEILING + 1)),), good.context),
        ValueEntry("k" * (KEY_BYTES_CEILING + 1), good.versions, good.context),
    ]
    for entry in bad:
        with pytest.raises(InvalidEntry):
            s.apply_remote(entry)
    assert len(s) == 0
    assert s.refused == {"invalid_key": 1, "invalid_entry": 4, "value_too_large": 1, "key_too_long": 1}


def test_limits_lowered_since_a_write_refuse_only_new_local_writes() -> None:
    """state.maxKeyBytes / maxValueBytes limit local writes: an entry written under larger ones (lowered since)
    is accepted from a peer, and the key it holds stays deletable; a new key or value over them is refused."""
    before = store("b", StateConfig(max_key_bytes=4096, max_value_bytes=4096))
    lowered = StateConfig(max_key_bytes=128, max_value_bytes=1024)
    long_key = "lim/" + "k" * 200
    written = before.local_put(long_key, b"x" * 2000, T)
    empty = store("a", lowered)
    assert empty.apply_remote(written)
    assert empty.get(long_key) == before.get(long_key)
    assert empty.refused == {}
    with pytest.raises(InvalidKey):
        empty.local_put(long_key + "-new", b"v", T)
    with pytest.raises(ValueTooLarge):
        empty.local_put("short", b"x" * 2000, T)
    with pytest.raises(InvalidKey):  # (a key it does not hold is still checked)
        empty.local_delete(long_key + "-new", T)
    tombstone = empty.local_delete(long_key, T + 1)
    assert tombstone is not None and tombstone.is_tombstone
    assert before.apply_remote(tombstone) and before.entry(long_key).is_tombstone  # type: ignore[union-attr]


# -- scan ----------------------------------------------------------------------------------------------
def test_scan_pages_through_a_prefix_skipping_deleted_keys() -> None:
    s = store("a")
    for i in range(10):
        s.local_put(f"ns/{i:02d}", b"v", T)
    s.local_put("other/1", b"v", T)
    s.local_delete("ns/03", T + 1)
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        page = s.scan("ns/", after, limit=4)
        pages += 1
        seen += [e.key for e in page.entries]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == [f"ns/{i:02d}" for i in range(10) if i != 3]
    assert pages == 3
    assert [e.key for e in s.scan("ns/", limit=100, include_deleted=True).entries][3] == "ns/03"
    assert s.scan("zz/").entries == ()
    assert [e.key for e in s.scan("", after="ns/08").entries] == ["ns/09", "other/1"]


def _scanned(s: KvStore, prefix: str, limit: int, *, include_deleted: bool) -> list[str]:
    seen: list[str] = []
    after = None
    while True:
        page = s.scan(prefix, after, limit, include_deleted=include_deleted)
        seen += [e.key for e in page.entries]
        if page.next_after is None:
            return seen
        after = page.next_after


def _churn(s: KvStore, bulk: int, ops: list[tuple[str, int]], rng: random.Random) -> None:
    """`bulk` keys put in random order, then `ops`: local writes, remote entries (anti-entropy delivers them in
    hash order, not key order), deletes and garbage collection (keys leave the store); then every ordered
    reader must see exactly the held keys in key order: all_keys, every prefix scan paged through (with and
    without tombstones), the snapshot, and the store restored from it."""
    other = store("b")
    first = [f"k/{i:05d}" for i in range(0, 2 * bulk, 2)]
    rng.shuffle(first)
    for key in first:
        s.local_put(key, b"v", T)
    now = T
    for op, n in ops:
        now += 1
        key = f"k/{n:05d}" if n % 3 else f"j/{n:04d}"
        if op == "put":
            s.local_put(key, b"v", now)
        elif op == "remote":
            s.apply_remote(other.local_put(key, b"w", now))
        elif op == "delete":
            s.local_delete(key, now)
        else:
            s.collect_garbage(now + 3_600_001)
    held = sorted(k for k in {*first, *(f"k/{n:05d}" if n % 3 else f"j/{n:04d}" for _, n in ops)} if k in s)
    live = [k for k in held if not (entry := s.entry(k)) or not entry.is_tombstone]
    assert s.all_keys() == held
    for prefix in ("", "k/", "k/0", "k/04", "j/", "j/1", "z"):
        limit = rng.randint(1, 700)
        assert _scanned(s, prefix, limit, include_deleted=True) == [k for k in held if k.startswith(prefix)]
        assert _scanned(s, prefix, limit, include_deleted=False) == [k for k in live if k.startswith(prefix)]
    assert [e.key for e in s.capture().entries] == held
    assert KvStore.restore(s.snapshot(), CONFIG, merkle_depth=4).all_keys() == held


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.lists(st.tuples(st.sampled_from(["put", "put", "remote", "delete", "gc"]),
                                             st.integers(0, 500)), max_size=60), st.integers(0, 2**32))
def test_key_order_holds_whatever_order_keys_arrive_and_leave_in(bulk: int, ops: list[tuple[str, int]],
                                                                 seed: int) -> None:
    _churn(store("a"), bulk, ops, random.Random(seed))


def test_key_order_holds_across_thousands_of_keys() -> None:
    """5,000 keys in random order, then 2,000 random operations: the sorted key list spans several blocks."""
    rng = random.Random(7)
    ops = [(rng.choice(["put", "remote", "delete", "delete", "gc"]), rng.randrange(12_000)) for _ in range(2000)]
    _churn(store("a"), 5000, ops, rng)


# -- CRDT values ---------------------------------------------------------------------------------------
def test_crdt_values_merge_by_their_own_join() -> None:
    a, b = store("a"), store("b")
    a.update_crdt("crdt/counters/hits", PNCounter, lambda c, node, _: c.increment(node, 3), T)
    b.update_crdt("crdt/counters/hits", PNCounter, lambda c, node, _: c.increment(node, -1), T)
    b.update_crdt("crdt/counters/hits", PNCounter, lambda c, node, _: c.increment(node, 5), T + 1)
    ea, eb = a.entry("crdt/counters/hits"), b.entry("crdt/counters/hits")
    assert isinstance(ea, CrdtEntry) and isinstance(eb, CrdtEntry)
    assert a.apply_remote(eb) and b.apply_remote(ea)
    assert a.get_crdt("crdt/counters/hits") == b.get_crdt("crdt/counters/hits")
    assert a.get_crdt("crdt/counters/hits").value() == 7  # type: ignore[union-attr]
    assert a.root_hex() == b.root_hex()
    assert a.apply_remote(eb) is False
    s = a.update_crdt("crdt/sets/s", ORSet, lambda c, node, _: c.add(node, "x"), T)
    assert s.value() == frozenset({"x"})


def test_crdt_and_plain_keys_do_not_mix() -> None:
    a = store("a")
    a.local_put("k", b"v", T)
    with pytest.raises(KindMismatch):
        a.update_crdt("k", GCounter, lambda c, n, _: c.increment(n), T)
    c = "crdt/counters/c"  # (session 16: a CRDT lives under its prefix, core/keys.py)
    a.update_crdt(c, PNCounter, lambda c, n, _: c.increment(n), T)
    with pytest.raises(KindMismatch):
        a.local_put(c, b"v", T)
    with pytest.raises(KindMismatch):
        a.update_crdt(c, ORSet, lambda s, n, _: s.add(n, "e"), T)
    with pytest.raises(KindMismatch):
        a.local_delete(c, T)
    assert a.get(c) is None


def test_crdt_state_size_is_capped() -> None:
    a = KvStore("a", StateConfig(max_value_bytes=64))
    a.update_crdt("crdt/sets/s", ORSet, lambda c, n, _: c.add(n, "element-0"), T)
    with pytest.raises(ValueTooLarge):
        for i in range(1, 20):
            a.update_crdt("crdt/sets/s", ORSet, lambda c, n, _, i=i: c.add(n, f"element-{i}"), T)  # type: ignore[misc]
    s = a.get_crdt("crdt/sets/s")
    assert s is not None and len(s.value()) < 20  # type: ignore[attr-defined]


# -- persistence ---------------------------------------------------------------------------------------
def _busy_store() -> KvStore:
    a = store("a")
    b = store("b")
    a.local_put("x", b"1", T)
    a.local_put("carts/y", b"2", T)
    a.apply_remote(b.local_put("carts/y", b"3", T + 1))
    a.local_put("z", b"4", T + 2)
    a.local_delete("z", T + 3)
    a.update_crdt("crdt/counters/c", PNCounter, lambda c, n, _: c.increment(n, 2), T + 4)
    a.local_put("gone", b"5", T + 5)
    a.local_delete("gone", T + 6)
    a.acknowledge_tombstones(T + 7)
    a.collect_garbage(T + 7)
    return a


def test_changes_replay_to_the_same_store() -> None:
    a = _busy_store()
    changes = a.drain_changes()
    assert [c.origin for c in changes].count("gc") == 2 and a.drain_changes() == []
    replica = store("a")
    for change in changes:
        replica.replay(change)
    assert replica.root_hex() == a.root_hex()
    assert replica.all_keys() == a.all_keys()
    assert replica.drain_changes() == []
    assert (replica.stats().tombstones, replica.stats().graveyard, len(replica)) == (0, 2, len(a))
    assert replica.was_collected("gone") and replica.get_crdt("crdt/counters/c") == a.get_crdt("crdt/counters/c")


def test_snapshot_round_trip() -> None:
    import msgpack
    a = _busy_store()
    plain = msgpack.unpackb(msgpack.packb(a.snapshot(), use_bin_type=True), raw=False)
    b = KvStore.restore(plain, CONFIG, merkle_depth=4)
    assert b.root_hex() == a.root_hex()
    assert b.all_keys() == a.all_keys() and b.stats() == a.stats()
    assert b.clock == a.clock
    assert b.was_collected("gone")
    b.local_put("new", b"x", T + 100)
    assert b.drain_changes()[-1].key == "new"
    with pytest.raises(ValueError):
        KvStore.restore({"v": 2})


def test_entry_plain_round_trip() -> None:
    a = _busy_store()
    for key in a.all_keys():
        entry = a.entry(key)
        assert entry is not None
        assert entry_from_plain(entry_to_plain(entry)) == entry


# -- pruning -------------------------------------------------------------------------------------------
def test_retiring_a_member_prunes_its_context_entries_everywhere() -> None:
    a, old = store("a"), store("old")
    e = old.local_put("k", b"from-old", T)
    a.apply_remote(e)
    a.local_put("k", b"mine", T + 1)
    before = a.entry("k")
    assert isinstance(before, ValueEntry) and "old" in before.context.nodes()
    assert a.retire_nodes({"old"}) == 1
    after = a.entry("k")
    assert isinstance(after, ValueEntry) and "old" not in after.context.nodes()
    # A replica that has not pruned yet sends the old context back: pruned on ingest, nothing changes.
    assert a.apply_remote(before) is False
    # A live version of a retired member keeps its own entry.
    b = store("b")
    b.apply_remote(old.local_put("carts/k", b"v", T))
    b.retire_nodes({"old"})
    kept = b.entry("carts/k")
    assert isinstance(kept, ValueEntry) and kept.context.get("old") == 1
    b.unretire_nodes({"old"})
    assert b.retired == frozenset()
