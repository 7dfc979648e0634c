"""The state core without sockets or clocks: events in, effects out, deadlines instead of a polling tick."""

from __future__ import annotations

import dataclasses
import random
from typing import TypeVar

from gossip_agent.core.anti_entropy import AeRequest
from gossip_agent.core.config import AgentConfig, StateConfig, StorageConfig
from gossip_agent.core.convergence import state_meta
from gossip_agent.core.digests import root_prefix
from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.messages import Address, Digest, MemberSnapshot, MemberState
from gossip_agent.core.state_node import (
    ACK_GRACE_MS,
    DIGEST_LATE,
    DIGEST_QUIET,
    REPAIR_HOLD,
    RETIRE_EVERY,
    AntiEntropyWith,
    Broadcast,
    FetchValue,
    Fsync,
    Persist,
    PublishDigest,
    Snapshot,
    StateEffect,
    StateNode,
    digest_max_wait,
)

WALL = 1_795_000_000.0
E = TypeVar("E")


def config(name: str, *, ae: bool = False, **storage: object) -> AgentConfig:
    base = AgentConfig.preset_config("lan", name=name)
    return dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=ae),
                               state=StateConfig(tombstone_ttl=3600.0),
                               storage=dataclasses.replace(StorageConfig(), **storage))  # type: ignore[arg-type]


def core(name: str, *, now: float = 0.0, inline_limit: int = 1200, ae: bool = False, durable: bool = False,
         **storage: object) -> StateNode:
    cfg = config(name, ae=ae, **storage)
    return StateNode(cfg, KvStore(f"{name}@e1", cfg.state), random.Random(1), now, addr=addr(name),
                     inline_limit=inline_limit, durable=durable)


def addr(name: str) -> Address:
    return ("10.0.0.1", 7000 + sum(map(ord, name)) % 1000)


def of(kind: type[E], effects: list[StateEffect]) -> list[E]:
    return [e for e in effects if isinstance(e, kind)]


def member(name: str, meta: dict[str, str] | None = None, state: MemberState = MemberState.ALIVE) -> MemberEvent:
    return MemberEvent(EventKind.JOIN, MemberSnapshot(name, addr(name), 1, state, meta or {}))


def publishing(c: StateNode) -> dict[str, str]:
    s = c.store.stats()
    return state_meta(s.root, s.keys, s.hlc.wall_ms)


def run(c: StateNode, until: float) -> list[StateEffect]:
    """Tick `c` at each of its deadlines up to `until` (what a driver does); all effects, in order."""
    out: list[StateEffect] = []
    for _ in range(1000):
        d = c.next_deadline()
        if d > until:
            return out
        out += c.tick(d, WALL + d)
    raise AssertionError("more than 1000 deadlines: the core is spinning")


def test_a_write_is_persisted_before_it_is_broadcast_and_a_repeat_rumor_is_dropped_undecoded() -> None:
    a, b = core("a"), core("b")
    _, effects = a.put("k", b"v", None, 0.0, WALL)
    assert [type(e) for e in effects] == [Persist, Broadcast]
    persist, broadcast = effects
    assert isinstance(persist, Persist) and [c.key for c in persist.changes] == ["k"]
    assert isinstance(broadcast, Broadcast) and broadcast.key == "k"
    new, effects = b.on_rumor(broadcast.payload, 0.0, WALL)
    assert new and of(Persist, effects)
    assert b.store.get("k") is not None and b.store.root_hex() == a.store.root_hex()
    assert b.on_rumor(broadcast.payload, 0.0, WALL) == (False, [])
    assert a.on_rumor(broadcast.payload, 0.0, WALL) == (False, [])  # our own rumor coming back
    assert b.stats.rumors == {"applied": 1, "duplicate": 1} and a.stats.rumors == {"duplicate": 1}


def test_no_polling_an_idle_core_sleeps_until_its_retirement_check() -> None:
    c = core("idle")
    run(c, 1.0)  # first observation and retirement check
    assert c.next_deadline() == RETIRE_EVERY


def digest_of(c: StateNode) -> PublishDigest:
    s = c.store.stats()
    return PublishDigest(s.root, s.keys, s.hlc.wall_ms, 0)


def published(effects: list[StateEffect]) -> list[tuple[str, int, int]]:
    return [(p.root, p.keys, p.hlc_ms) for p in of(PublishDigest, effects)]


def test_the_digest_is_published_when_the_replica_is_quiet_and_at_most_a_max_wait_while_busy() -> None:
    c = core("a")
    first = of(PublishDigest, run(c, 0.5))
    assert [(p.root, p.keys, p.hlc_ms) for p in first] == [(c.store.root_hex(), 0, 0)]
    assert first[0].seq_floor >= int(WALL * 1000)  # numbered by the wall clock: above any before a restart
    t0 = 2.0
    c.put("k1", b"1", None, t0, WALL + t0)
    at = c.next_deadline()
    assert t0 < at <= t0 + DIGEST_QUIET
    assert published(run(c, t0 + DIGEST_QUIET - 0.01)) == []  # not quiet long enough yet
    effects = run(c, t0 + DIGEST_QUIET)
    d = digest_of(c)
    assert published(effects) == [(d.root, d.keys, d.hlc_ms)]
    assert c.next_deadline() == RETIRE_EVERY  # nothing else to do: no wake-up until then
    # A steady stream of writes (every 50 ms, a lull of 0.3 s each second) publishes at most every
    # digest_max_wait, and its last root once quiet.
    max_wait = digest_max_wait(c.config)
    t, sent, span = t0 + 1.0, [], 3 * max_wait
    end = t + span
    while t < end:
        c.put(f"w{t:.2f}", b"x", None, t, WALL + t)
        sent += [t for _ in published(run(c, t + 0.05 - 1e-6))]
        t += 0.3 if round(t * 20) % 20 == 0 else 0.05
    assert 1 <= len(sent) <= span / max_wait + 1
    assert published(run(c, t + DIGEST_QUIET)) == [(digest_of(c).root, digest_of(c).keys, digest_of(c).hlc_ms)]


def test_a_members_digest_overrides_the_root_its_metadata_publishes_and_convergence_follows() -> None:
    a, b = core("a"), core("b")
    _, effects = a.put("k", b"v", None, 0.0, WALL)
    b.on_rumor(of(Broadcast, effects)[0].payload, 0.0, WALL)
    stale = core("stale")
    a.on_member_event(member("b", publishing(stale)), 0.0)  # an old root in b's metadata
    run(a, 0.5)
    assert not a.convergence(WALL + 0.5).converged
    a.on_root_digest(Digest("b", 1, root_prefix(b.store.root_hex()), 1, 0), 0.6)
    run(a, 1.0)
    assert a.convergence(WALL + 1.0).converged
    # A member with neither a digest nor a root in its metadata counts as not agreeing.
    a.on_member_event(member("c"), 1.1)
    run(a, 1.5)
    assert not a.convergence(WALL + 1.5).converged


def test_a_peer_whose_digest_is_only_late_is_not_repaired_from_until_it_had_time_to_publish() -> None:
    # Before: a peer's digest from before our last write looked divergent once both roots held REPAIR_HOLD, and
    # an anti-entropy session started while the peer's new digest (same root as ours) was still on its way.
    a, b = core("a"), core("b")
    _, effects = a.put("k1", b"1", None, 0.0, WALL)
    b.on_rumor(of(Broadcast, effects)[0].payload, 0.0, WALL)
    a.on_member_event(member("b"), 0.0)
    old = b.store.stats()
    a.on_root_digest(Digest("b", 1, root_prefix(old.root), old.keys, old.hlc.wall_ms), 0.5)
    run(a, 1.0)
    _, effects = a.put("k2", b"2", None, 2.0, WALL + 2.0)  # b will have it too, and publish it: no repair
    assert of(AntiEntropyWith, run(a, 2.0 + DIGEST_LATE - 0.01)) == []
    # Still b's old root: b truly lacks the write, and is repaired from now.
    assert of(AntiEntropyWith, run(a, 2.0 + DIGEST_LATE + 0.01)) == [AntiEntropyWith("b", addr("b"))]
    # A digest with our HLC or newer is no late one: a different root then is repaired from after the hold.
    c = core("c")
    c.on_member_event(member("d"), 0.0)
    c.put("k", b"c", None, 0.0, WALL)
    d = core("d")
    d.put("k", b"d", None, 0.0, WALL + 1.0)
    mine = c.store.stats()
    c.on_root_digest(Digest("d", 1, root_prefix(d.store.root_hex()), 1, mine.hlc.wall_ms + 1), 0.1)
    assert of(AntiEntropyWith, run(c, 0.1 + REPAIR_HOLD + 0.01)) == [AntiEntropyWith("d", addr("d"))]


def test_joining_starts_anti_entropy_with_a_peer_that_publishes_another_root() -> None:
    c = core("a")
    c.put("k", b"v", None, 0.0, WALL)
    other = core("b")
    effects = c.on_member_event(member("b", publishing(other)), 0.1)
    assert effects == [AntiEntropyWith("b", addr("b"))]
    same = core("s")
    same.put("k", b"v", None, 0.0, WALL)
    d = core("d")
    d.put("k", b"v", None, 0.0, WALL)  # another replica id: another root
    assert d.on_member_event(member("a", publishing(d)), 0.1) == []  # publishes our root: no traffic
    assert d.stats.ae["skipped_same_root"] == 1


def test_a_peer_divergent_for_the_hold_time_is_repaired_from() -> None:
    c = core("a")
    run(c, 0.5)
    peer = core("p")
    peer.put("x", b"1", None, 0.0, WALL)
    c.on_member_event(member("q", publishing(c)), 0.5)  # joined: a same-root peer, no session
    c.on_member_event(MemberEvent(EventKind.JOIN, MemberSnapshot("p", addr("p"), 1, MemberState.ALIVE,
                                                                 publishing(peer))), 0.6)
    effects = run(c, 0.6 + REPAIR_HOLD + 0.2)
    assert AntiEntropyWith("p", addr("p")) in effects
    session = c.start_anti_entropy(1.0)
    request: AeRequest | None = session.start()
    while request is not None:
        response, _ = peer.serve_anti_entropy(request, 1.0, WALL + 1)
        request, _ = c.on_anti_entropy_reply(session, response, 1.0, WALL + 1)
    assert c.store.get("x") is not None


def test_tombstones_every_member_holds_are_collected_after_the_grace() -> None:
    c = core("a")
    c.put("gone", b"v", None, 0.0, WALL)
    c.delete("gone", None, 0.0, WALL)
    run(c, 0.5)
    assert c.store.entry("gone") is not None  # nobody else confirmed yet
    c.on_member_event(member("b", publishing(c)), 1.0)  # the only other member holds our root
    run(c, 1.5)
    effects = run(c, 2.0 + ACK_GRACE_MS / 1000)
    assert c.store.entry("gone") is None
    gc = [ch for p in of(Persist, effects) for ch in p.changes]
    assert [(ch.key, ch.entry, ch.origin) for ch in gc] == [("gone", None, "gc")]


def test_fsync_and_snapshot_are_scheduled_only_when_durable_and_needed() -> None:
    c = core("a", durable=True, fsync="interval", fsync_interval=0.05, snapshot_every=3)
    run(c, 0.5)
    assert not of(Fsync, run(c, 10.0))  # nothing logged: nothing to sync
    c.put("k1", b"1", None, 10.0, WALL + 10)
    assert c.next_deadline() <= 10.05
    assert of(Fsync, c.tick(10.05, WALL + 10.05)) == [Fsync()]
    c.put("k2", b"2", None, 11.0, WALL + 11)
    c.put("k3", b"3", None, 11.0, WALL + 11)
    assert of(Snapshot, run(c, 11.1)) == [Snapshot()]
    assert c.stats.snapshots == 1
    memory = core("m")  # no data dir
    memory.put("k", b"v", None, 0.0, WALL)
    assert not of(Fsync, run(memory, 5.0)) and not of(Snapshot, run(memory, 5.0))


def test_a_state_too_big_for_a_packet_is_announced_and_pulled_once() -> None:
    a, b = core("a", inline_limit=64), core("b")
    _, effects = a.put("big", b"x" * 500, None, 0.0, WALL)
    [announce] = of(Broadcast, effects)
    assert len(announce.payload) < 200
    new, effects = b.on_rumor(announce.payload, 0.0, WALL)
    assert new and effects == [FetchValue("big", addr("a"))]
    answer = a.fetch_answer("big")
    assert answer is not None
    assert of(Persist, b.on_fetched("big", answer, 0.1, WALL))
    assert b.store.root_hex() == a.store.root_hex() and b.stats.rumors["pulled"] == 1


def test_retirement_forgets_writers_of_members_gone_longer_than_the_ttl() -> None:
    cfg = config("a")
    cfg = dataclasses.replace(cfg, state=StateConfig(tombstone_ttl=30.0))
    c = StateNode(cfg, KvStore("a@e1", cfg.state), random.Random(1), 0.0, addr=addr("a"), inline_limit=1200,
                  durable=True)
    gone = KvStore("gone@x1", cfg.state)
    new, _ = c.on_rumor(_rumor(gone.local_put("k", b"old", int(WALL * 1000) - 5)), 0.0, WALL)
    assert new
    read = c.store.get("k")
    assert read is not None
    c.put("k", b"mine", read.context, 0.0, WALL)
    run(c, 1.0)
    assert c.store.retired == frozenset()
    effects = run(c, 2 * RETIRE_EVERY + 1)
    assert c.store.retired == frozenset({"gone@x1"}) and of(Snapshot, effects)


def _rumor(entry: object) -> bytes:
    from gossip_agent.core.state_codec import encode_rumor
    return encode_rumor(entry)  # type: ignore[arg-type]


def test_the_convergence_lag_counts_from_the_end_of_an_agreement_not_from_its_last_observation() -> None:
    """Nothing polls: an idle, converged cluster is observed once, then not again until something changes;
    the lag after a change must start at the change (an hour of idle agreement is not an hour of lag)."""
    c = core("a")
    c.on_member_event(member("b", publishing(c)), 0.0)
    run(c, 1.0)
    assert c.convergence(WALL + 1).converged
    c.put("k", b"v", None, 3600.0, WALL + 3600)  # an hour later: we differ from b now
    run(c, 3600.5)
    status = c.convergence(WALL + 3601)
    assert not status.converged
    assert status.seconds_since_agreement is not None and status.seconds_since_agreement <= 1.0


def test_whether_a_member_differs_is_told_without_our_root_when_two_roots_are_published() -> None:
    """The repair planner's first question (does any counted member publish a root other than ours?) gets the
    answer the counts give with our root, whatever mix of roots the members publish (ours, others, none; ours
    current or stale); when two distinct roots are published it is answered without computing ours (the
    Merkle paths written since stay unhashed)."""
    rng = random.Random(7)
    for trial in range(300):
        c = core("a")
        names = [f"m{i}" for i in range(rng.randint(0, 5))]
        for name in names:
            c.on_member_event(member(name), 0.0)
        key = f"k{trial}"
        c.store.local_put(key, b"v", int(WALL * 1000))
        mine = root_prefix(c.store.root_hex())
        for seq, name in enumerate(names):
            pick = rng.choice(["mine", "other", "another", "none"])
            if pick != "none":
                root = mine if pick == "mine" else bytes([pick == "other"]) * len(mine)
                c.on_root_digest(Digest(name, seq + 1, root, 1, 0), 0.1)
        digest = c.store.merkle.digest_of(key)
        c.store.merkle.update(key, bytes(32))  # the tree is dirty, its root unchanged
        c.store.merkle.update(key, digest)
        if rng.random() < 0.5:
            c.store.local_put("later", b"w", int(WALL * 1000))  # ours changed: the members' "mine" is stale
        view = c._view
        distinct = len([r for r in view.counted_roots if r is not None])
        differs = c._someone_differs()
        if distinct >= 2:
            assert c.store.merkle._dirty_leaves  # told without hashing our root
        ours = c._my_root()
        assert differs == (view.counted - view.counted_roots.get(ours, 0) - view.counted_roots.get(None, 0) > 0)


def test_an_observation_counts_the_members_publishing_our_root_without_it_while_our_key_count_is_unpublished() -> None:
    """Equal roots mean equal contents, so a member publishing another key count cannot publish our root: while
    writes stream in (our key count ahead of every published one) an observation answers as our root would
    (agreeing fraction, distinct roots, whether some member differs) and leaves the Merkle paths written since
    unhashed; once a member publishes our key count, our root is computed and compared."""
    rng = random.Random(11)
    unhashed = 0
    for trial in range(300):
        c = core("a")
        names = [f"m{i}" for i in range(rng.randint(0, 5))]
        for name in names:
            c.on_member_event(member(name), 0.0)
        run(c, 5.0)  # settled: published, nothing due but the periodic checks
        c.put(f"k{trial}", b"v", None, 5.0, WALL + 5)
        mine = c.store.stats()
        for seq, name in enumerate(names):
            pick = rng.choice(["mine", "other", "other-same-count", "none"])
            if pick == "mine":
                c.on_root_digest(Digest(name, seq + 1, root_prefix(mine.root), mine.keys, mine.hlc.wall_ms), 5.0)
            elif pick != "none":
                keys = mine.keys if pick == "other-same-count" else rng.randint(0, 3)
                c.on_root_digest(Digest(name, seq + 1, bytes([1 + seq]) * 8, keys, 0), 5.0)
        moved = rng.random() < 0.5
        if moved:  # ours moves on (the test hashed our root above to publish it)
            c.put(f"later{trial}", b"w", None, 5.01, WALL + 5.01)
        ahead = not c._view.may_publish(len(c.store))
        c.tick(5.11, WALL + 5.11)  # the observation (no digest is due yet: the replica is not quiet)
        if ahead and moved:
            assert c.store.merkle._dirty_leaves  # answered without hashing our root
            unhashed += 1
        status = c.convergence(WALL + 5.11)
        ours, view = c._my_root(), c._view
        roots = view.counted_roots
        agree = roots.get(ours, 0)
        assert status.fraction == (agree + 1) / (view.counted + 1)
        assert status.distinct_roots == len(roots) - (None in roots) + (ours not in roots)
        assert c._someone_differs() == (view.counted - agree - roots.get(None, 0) > 0)
    assert 50 < unhashed < 200


def test_our_root_named_later_keeps_the_repair_hold_it_had_unnamed() -> None:
    """An observation that did not compute our root tells the repair planner a stand-in that changes when our tree
    does; computed later for the same tree, the real root takes its place without restarting our hold (a repair
    is not put off by REPAIR_HOLD for a root that did not change)."""
    c = core("a")
    c.on_member_event(member("b"), 0.0)
    run(c, 5.0)
    c.put("k", b"v", None, 5.0, WALL + 5)
    c.tick(5.1, WALL + 5.1)  # b publishes no key count of ours: a stand-in
    held_from = c.planner._mine.since
    assert c.planner._mine.root is not None and c.planner._mine.root.startswith("~")
    s = c.store.stats()
    c.on_root_digest(Digest("b", 9, root_prefix(s.root), s.keys, s.hlc.wall_ms), 5.2)
    c.tick(c.next_deadline(), WALL + c.next_deadline())
    assert c.planner._mine.root == root_prefix(s.root).hex() and c.planner._mine.since == held_from
    assert c.convergence(WALL + 6).converged
