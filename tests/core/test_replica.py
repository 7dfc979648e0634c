"""core/replica.py: replica ids, rumor payloads, root publication, repair targets, write concern, retirement
(with the store's side of it, `KvStore.context_writers`)."""

from __future__ import annotations

import pytest

from gossip_agent.core.codec_limits import StateCodecError
from gossip_agent.core.config import StateConfig
from gossip_agent.core.convergence import state_meta
from gossip_agent.core.kvstore import KvStore, ValueEntry
from gossip_agent.core.messages import MemberSnapshot, MemberState
from gossip_agent.core.replica import (
    Announcement,
    MetaPublisher,
    RepairPlanner,
    Retirement,
    WriteConcern,
    counted_members,
    decode_payload,
    encode_announcement,
    hedge_delay,
    inline_budget,
    member_of,
    merged_meta,
    parse_write_concern,
    replica_id,
)
from gossip_agent.core.state_codec import encode_rumor

ROOT_A, ROOT_B, ROOT_C = "a" * 64, "b" * 64, "c" * 64


def test_replica_ids() -> None:
    rid = replica_id("demo-0", "5f3a9c")
    assert rid == "demo-0@5f3a9c" and member_of(rid) == "demo-0" and member_of("plain") == "plain"
    with pytest.raises(ValueError, match="epoch"):
        replica_id("demo-0", "")


def test_payloads_round_trip_and_garbage_is_a_codec_error() -> None:
    store = KvStore("n@1")
    entry = store.local_put("k", b"v", 1000)
    assert decode_payload(encode_rumor(entry)) == entry
    ann = Announcement("big/key", b"\x07" * 32, ("10.0.0.5", 7946))
    assert decode_payload(encode_announcement(ann)) == ann
    bad = [b"", b"\x95\x06", encode_announcement(ann)[:-3], b"\x95\x06\xa1k\xc4\x01x\xa1h\x01",
           encode_announcement(Announcement("k", b"\x00" * 32, ("h", 1)))[:-1] + b"\x00"]
    for payload in bad:
        with pytest.raises(StateCodecError):
            decode_payload(payload)


def test_inline_budget_leaves_room_in_the_mtu() -> None:
    budget = inline_budget(1400, "demo-0", ("10.0.0.5", 7946))
    assert 1100 < budget < 1400


def test_meta_publisher_rate_limits_and_skips_unchanged() -> None:
    pub = MetaPublisher(0.25)
    m1, m2 = state_meta(ROOT_A, 1, 10), state_meta(ROOT_B, 2, 20)
    assert pub.due(0.0, m1)
    pub.done(0.0, m1)
    assert not pub.due(1.0, m1)           # unchanged
    assert not pub.due(0.1, m2)           # too soon
    assert pub.due(0.3, m2)
    assert merged_meta({"zone": "a", "state.root": "old"}, m2) == {"zone": "a", **m2}


def snap(name: str, state: MemberState, meta: dict[str, str]) -> MemberSnapshot:
    return MemberSnapshot(name, ("127.0.0.1", 1), 1, state, meta)


def test_counted_members_skip_left_and_self() -> None:
    members = [snap("me", MemberState.ALIVE, state_meta(ROOT_A, 1, 1)),
               snap("b", MemberState.ALIVE, state_meta(ROOT_B, 1, 1)),
               snap("c", MemberState.DEAD, {}),
               snap("d", MemberState.LEFT, state_meta(ROOT_A, 1, 1))]
    assert counted_members(members, "me") == {"b": ROOT_B, "c": None}


def test_repair_planner_waits_for_stable_divergent_roots() -> None:
    p = RepairPlanner(hold=0.5, min_gap=1.0)
    p.observe(0.0, ROOT_A, {"b": ROOT_B, "c": ROOT_A})
    assert p.pick(0.2, ["b", "c"], 0.0) is None          # not stable yet
    p.observe(0.4, ROOT_A, {"b": ROOT_B, "c": ROOT_A})
    assert p.pick(0.6, ["b", "c"], 0.9) == "b"            # only b differs
    p.started(0.6)
    assert p.pick(1.0, ["b", "c"], 0.0) is None          # min gap
    p.observe(1.7, ROOT_B, {"b": ROOT_B, "c": ROOT_A})   # our root changed: hold again
    assert p.pick(1.8, ["b", "c"], 0.0) is None
    assert p.pick(2.3, ["b", "c"], 0.0) == "c"
    assert p.pick(2.3, ["b"], 0.0) is None                # c not live


def test_write_concern_parsing_and_bookkeeping() -> None:
    assert parse_write_concern(None) == 1 and parse_write_concern("3") == 3
    for raw, needle in (("0", "1..64"), ("x", "integer"), ("-1", "integer"), ("65", "1..64")):
        with pytest.raises(ValueError, match=needle):
            parse_write_concern(raw)
    wc = WriteConcern(3)
    assert wc.needed == 2 and not wc.met
    first = wc.next_targets(["a", "b", "c"], [], [0.3, 0.1, 0.2])
    assert first == ["b", "c"]
    wc.fail("b")
    wc.ack("c")
    assert wc.next_targets(["a", "b", "c"], [], [0.9, 0.1, 0.2]) == ["a"]  # failed peers last
    assert wc.next_targets(["a", "b", "c"], ["a"], [0.9, 0.1, 0.2]) == []
    wc.ack("a")
    assert wc.met and wc.holders == 3
    assert "may still converge" in WriteConcern(2).timeout_message(1.5)


# -- retirement -------------------------------------------------------------------------------------------
def test_retirement_waits_for_a_continuous_absence_longer_than_the_ttl() -> None:
    r = Retirement(ttl=10.0)
    writers = ["gone@1", "gone@2", "back@1", "me@1", "me@0"]

    def plan(now: float, present: set[str], retired: frozenset[str] = frozenset()) -> tuple[set[str], set[str]]:
        p = r.plan(now, writers=writers, retired=retired, present=present, me="me@1")
        return set(p.retire), set(p.unretire)

    assert plan(0.0, {"me", "back"}) == (set(), set())
    assert plan(10.0, {"me"}) == (set(), set())            # gone: absent 10 s, not longer
    assert plan(10.5, {"me"}) == ({"gone@1", "gone@2"}, set())
    assert plan(21.0, {"me"}) == ({"gone@1", "gone@2", "back@1"}, set())
    # A member event naming it, or a check that sees it, restarts the absence; our own name never counts.
    r.seen("gone")
    assert plan(22.0, {"me"}) == ({"back@1"}, set())
    assert plan(32.5, {"me", "back"}, frozenset({"back@1"})) == ({"gone@1", "gone@2"}, {"back@1"})
    assert plan(40.0, {"back"}) == ({"gone@1", "gone@2"}, set())  # "me@0" is ours: never retired


def test_context_writers_are_safe_to_retire_only_once_nothing_recent_or_live_names_them() -> None:
    ttl_ms, t = 10_000, 1_700_000_000_000
    config = StateConfig(tombstone_ttl=ttl_ms / 1000, conflict_policies={"carts/": "siblings"})
    me, gone = KvStore("me@1", config), KvStore("gone@1", config)
    me.apply_remote(gone.local_put("a", b"old", t))
    read = me.get("a")
    assert read is not None
    me.local_put("a", b"new", t + 1, read.context)           # overwrites gone's version
    assert me.context_writers(t + 2) == {"gone@1": False, "me@1": False}   # recent: a peer may still lag
    assert me.context_writers(t + 1 + ttl_ms)["gone@1"] is True
    me.apply_remote(gone.local_put("carts/x", b"g", t))       # a version of gone still held
    assert me.context_writers(t + 1 + ttl_ms)["gone@1"] is False
    cart = me.get("carts/x")
    assert cart is not None
    me.local_delete("carts/x", t + 2, cart.context)           # deleted: its tombstone, then its grave
    assert me.context_writers(t + 2 + ttl_ms)["gone@1"] is True
    me.acknowledge_tombstones(t + 3)
    me.collect_garbage(t + 3)                                  # into the graveyard until the TTL
    assert me.context_writers(t + 2 + ttl_ms)["gone@1"] is False
    me.collect_garbage(t + 2 + ttl_ms)
    assert me.context_writers(t + 2 + ttl_ms)["gone@1"] is True
    me.retire_nodes({"gone@1"})
    assert "gone@1" not in me.context_writers(t + 2 + ttl_ms)
    entry = me.entry("a")
    assert isinstance(entry, ValueEntry) and entry.context.nodes() == {"me@1"}
    assert me.get("a").values == (b"new",)  # type: ignore[union-attr]


def test_write_concern_asks_another_peer_when_one_is_slow() -> None:
    """Issue 10: `w=2` waited its whole timeout on one paused peer while healthy peers were free."""
    wc = WriteConcern(2)
    first = wc.next_targets(["a", "b", "c"], [], [0.1, 0.2, 0.3])
    assert first == ["a"]
    assert wc.next_targets(["a", "b", "c"], ["a"], [0.1, 0.2, 0.3]) == []  # "a" still has time
    assert wc.next_targets(["a", "b", "c"], ["a"], [0.1, 0.2, 0.3], slow=["a"]) == ["b"]
    assert wc.next_targets(["a", "b", "c"], ["a", "b"], [0.1, 0.2, 0.3], slow=["a"]) == []
    assert wc.next_targets(["a", "b", "c"], ["a", "b"], [0.1, 0.2, 0.3], slow=["a", "b"]) == ["c"]
    assert 0.1 <= hedge_delay(0.2) < hedge_delay(2.0) <= hedge_delay(60.0) == 1.0


def test_repair_planner_prefers_a_near_divergent_peer_to_a_stale_far_root() -> None:
    """Under writes a far member's root reaches us late (its digest crosses zones in few packets), so it sat
    stable and divergent while every near root kept moving; the planner took it, and anti-entropy became the
    largest share of the cross-zone bytes. Now a near divergent peer is taken first, whatever `choice` says."""
    p = RepairPlanner(hold=0.3, min_gap=0.5, far_hold=2.0)
    p.observe(0.0, ROOT_A, {"far1": ROOT_B, "far2": ROOT_B, "near1": ROOT_A})
    p.observe(1.0, ROOT_C, {"far1": ROOT_B, "far2": ROOT_B, "near1": ROOT_B})  # a write: ours and near1's move
    live = ["far1", "far2", "near1"]

    def near(name: str) -> bool:
        return name.startswith("near")

    for choice in (0.0, 0.5, 0.99):
        assert p.plan(1.3, live, choice, near) == ("near1", 1.3)


def test_repair_planner_goes_far_only_once_the_zone_agrees_and_our_root_held_the_far_hold() -> None:
    p = RepairPlanner(hold=0.3, min_gap=0.5, far_hold=2.0)
    live = ["far1", "near1", "near2"]

    def near(name: str) -> bool:
        return name.startswith("near")

    p.observe(0.0, ROOT_A, {"far1": ROOT_B, "near1": ROOT_A, "near2": ROOT_A})
    assert p.plan(0.5, live, 0.0, near) == (None, 2.0)          # the zone agrees: far after the far hold
    assert p.plan(2.0, live, 0.0, near) == ("far1", 0.3)
    p.observe(2.1, ROOT_A, {"far1": ROOT_B, "near1": ROOT_A, "near2": ROOT_C})  # near2 moves: the zone does not
    assert p.plan(2.2, live, 0.0, near) == (None, 2.4)          # agree; near2 itself once it held
    assert p.plan(2.4, live, 0.0, near) == ("near2", 0.3)
    # A root of our own that keeps changing (a stream of writes) never lets a far repair through.
    for t in (3.0, 3.5, 4.0, 4.5, 5.0):
        p.observe(t, f"{ROOT_A[:-1]}{int(t * 2)}", {"far1": ROOT_B, "near1": None, "near2": None})
        assert p.plan(t + 0.45, live, 0.0, near)[0] is None
    # The writes stop: the far member alone holds a change (its root differs, ours settled): repaired from.
    assert p.plan(7.0, live, 0.0, near) == ("far1", 5.3)
    # Without topology (no `near`, or None for every peer) every divergent peer qualifies after `hold`.
    q = RepairPlanner(hold=0.3, min_gap=0.5, far_hold=2.0)
    q.observe(0.0, ROOT_A, {"far1": ROOT_B, "near1": ROOT_C})
    assert q.plan(0.3, ["far1", "near1"], 0.0) == ("far1", 0.3)
    assert q.plan(0.3, ["far1", "near1"], 0.0, lambda name: None) == ("far1", 0.3)
