"""The convergence digest table: merge by sequence, fresh rows first within a byte budget, bounded; summaries
that find what a peer lacks; sequence numbers bounded by the wall clock; the owner's word wins."""

from __future__ import annotations

import random

from gossip_agent.core import codec
from gossip_agent.core.digests import (
    FRESH_SENDS,
    MAX_SEQ,
    MAX_SUMMARY_BUCKETS,
    ROOT_PREFIX_BYTES,
    SEQ_SLACK_MS,
    SUMMARY_PINGS,
    DigestExchange,
    DigestTable,
    Merge,
    root_prefix,
)
from gossip_agent.core.messages import Digest, DigestSummary

ROOT_A = "ab" * 32
ROOT_B = "cd" * 32
WALL_MS = 1_764_470_000_000


def _d(name: str, seq: int, root: str = ROOT_A) -> Digest:
    return Digest(name, seq, root_prefix(root), 3, 1000)


def _drain(t: DigestTable) -> None:
    while t.has_fresh():
        t.select(10_000, codec.message_size)


def test_publish_numbers_above_previous_and_floor_and_skips_repeats() -> None:
    t = DigestTable("me", 10)
    first = t.publish(ROOT_A, 1, 5, seq_floor=100)
    assert first is not None and first.seq == 100 and first.root == bytes.fromhex(ROOT_A)[:ROOT_PREFIX_BYTES]
    assert t.publish(ROOT_A, 1, 5, seq_floor=200) is None  # unchanged: nothing to publish
    second = t.publish(ROOT_B, 2, 6, seq_floor=50)
    assert second is not None and second.seq == 101   # clock went back: still above the previous
    restarted = DigestTable("me", 10).publish(ROOT_A, 1, 5, seq_floor=5000)
    assert restarted is not None and restarted.seq == 5000


def test_merge_keeps_the_highest_sequence_and_ignores_rows_about_us() -> None:
    t = DigestTable("me", 10)
    assert t.merge(_d("a", 5, ROOT_A)) is Merge.NEW
    assert t.merge(_d("a", 5, ROOT_B)) is Merge.SAME
    assert t.merge(_d("a", 4, ROOT_B)) is Merge.OLDER  # the sender is behind
    assert t.get("a") == _d("a", 5, ROOT_A)
    assert t.merge(_d("a", 6, ROOT_B)) is Merge.NEW
    assert t.get("a") == _d("a", 6, ROOT_B)
    assert t.merge(_d("me", 99)) is Merge.ABOUT_ME
    assert t.get("me") is None
    assert t.forget("a") and "a" not in t


def test_table_is_bounded_for_new_names() -> None:
    t = DigestTable("me", 3)
    assert all(t.merge(_d(f"m{i}", 1)) is Merge.NEW for i in range(3))
    assert t.merge(_d("forged", 1)) is Merge.REFUSED
    assert len(t) == 3
    assert t.merge(_d("m0", 2)) is Merge.NEW  # a known member still updates


def test_select_sends_owed_rows_then_fresh_rows_within_the_budget() -> None:
    t = DigestTable("me", 100)
    for i in range(10):
        t.merge(_d(f"m{i}", 1))
    _drain(t)
    assert t.select(10_000, codec.message_size) == []  # nothing fresh, nothing owed: nothing rides
    t.merge(_d("m3", 2, ROOT_B))
    t.owe("peer", ["m7"])
    size = codec.message_size(_d("m0", 1))
    assert t.select(2 * size, codec.message_size, to="other") == [_d("m3", 2, ROOT_B)]
    picked = t.select(2 * size, codec.message_size, to="peer")
    assert picked == [_d("m7", 1), _d("m3", 2, ROOT_B)]
    assert not t.owes("peer")
    assert t.select(0, codec.message_size) == []
    for _ in range(FRESH_SENDS):
        t.select(10_000, codec.message_size)
    assert not t.has_fresh()


def _exchange(a: DigestExchange, b: DigestExchange) -> int:
    """One probe a -> b and its ack, then a's repair: the packets' digest messages; returns rows sent."""
    sent = 0

    def deliver(src: DigestExchange, dst: DigestExchange, msgs: list[Digest | DigestSummary]) -> None:
        nonlocal sent
        for m in msgs:
            if isinstance(m, DigestSummary):
                dst.heard_summary(src.table.me, m)
            else:
                sent += 1
                if dst.table.merge(m) is Merge.OLDER:
                    dst.table.owe(src.table.me, [m.name])

    deliver(a, b, a.outgoing(b.table.me, 480, codec.message_size, ping=True))
    deliver(b, a, b.outgoing(a.table.me, 480, codec.message_size))
    if a.pending(b.table.me):
        deliver(a, b, a.outgoing(b.table.me, 1200, codec.message_size))
    if b.pending(a.table.me):
        deliver(b, a, b.outgoing(a.table.me, 1200, codec.message_size))
    return sent


def test_a_summary_on_one_probe_catches_a_straggler_up_both_ways() -> None:
    rows = [_d(f"m{i}", 10 + i) for i in range(40)]
    a, b = DigestExchange(DigestTable("a", 100)), DigestExchange(DigestTable("b", 100))
    for r in rows:
        a.table.merge(r)
        b.table.merge(r)
    a.table.merge(_d("m5", 99, ROOT_B))   # b missed this change...
    b.table.merge(_d("m30", 99, ROOT_B))  # ...and a missed that one
    b.table.merge(_d("new", 1))           # a lacks a whole row
    _drain(a.table)
    _drain(b.table)
    assert a.table.summary_due()
    sent = _exchange(a, b)
    assert a.table.summary(False) == b.table.summary(False)
    assert {d.name: d.seq for d in a.table.rows()} == {d.name: d.seq for d in b.table.rows()}
    assert sent <= 3 * 4 * 2  # differing buckets only (4 rows a bucket), not the whole table
    _drain(a.table)  # what each learned is pushed on as fresh rows; after that...
    _drain(b.table)
    assert _exchange(a, b) == 0   # ...in agreement: summaries only


def test_summaries_stop_after_a_few_probes_and_start_again_on_a_change() -> None:
    t = DigestTable("me", 10)
    t.merge(_d("a", 1))
    assert not t.summary_due()  # something fresh to push first
    _drain(t)
    for _ in range(SUMMARY_PINGS):
        assert t.summary_due()
        t.summary_sent()
    assert not t.summary_due()  # idle: probes carry nothing
    t.merge(_d("a", 2))
    _drain(t)
    assert t.summary_due()


def test_a_summary_is_bounded_in_size_whatever_the_table() -> None:
    t = DigestTable("me", 10_000)
    for i in range(5000):
        t.merge(_d(f"m{i}", 1))
    s = t.summary(True)
    assert len(s.buckets) == 2 * MAX_SUMMARY_BUCKETS
    assert codec.message_size(s) <= 2 * MAX_SUMMARY_BUCKETS + 8


def test_a_forged_huge_sequence_number_is_refused_once_the_wall_clock_is_known() -> None:
    # Before: seq 2^63-1 was taken and froze the member's row for good (no real row is ever higher).
    t = DigestTable("me", 10)
    t.publish(ROOT_A, 1, 1, seq_floor=WALL_MS, now=100.0)
    t.merge(_d("a", WALL_MS - 5))
    assert t.merge(_d("a", MAX_SEQ, ROOT_B), now=100.0) is Merge.REFUSED
    assert t.merge(_d("a", WALL_MS + 60_000 + SEQ_SLACK_MS, ROOT_B), now=160.0) is Merge.NEW  # skew within slack
    assert t.merge(_d("a", MAX_SEQ, ROOT_B), now=160.0) is Merge.REFUSED
    assert t.get("a") == _d("a", WALL_MS + 60_000 + SEQ_SLACK_MS, ROOT_B)


def test_a_row_taken_before_the_wall_clock_was_known_goes_once_it_is() -> None:
    # Before: a forged row that arrived before our first publication was kept for good.
    t = DigestTable("me", 10)
    assert t.merge(_d("a", MAX_SEQ, ROOT_B), now=0.0) is Merge.NEW  # no bound yet
    t.publish(ROOT_A, 1, 1, seq_floor=WALL_MS, now=0.0)
    assert "a" not in t
    assert t.merge(_d("a", WALL_MS - 10)) is Merge.NEW  # the honest row is new again


def test_the_owner_republishes_above_a_row_about_itself_numbered_at_or_above_its_own() -> None:
    # Before: rows about us were ignored, so a forged row (or one from before a restart without a wall clock)
    # with a higher number kept winning everywhere else, and our real root never showed again.
    t = DigestTable("me", 10)
    mine = t.publish(ROOT_A, 1, 1, seq_floor=WALL_MS, now=0.0)
    assert mine is not None
    _drain(t)
    assert t.merge(Digest("me", WALL_MS + 1000, root_prefix(ROOT_B), 9, 9), now=0.0) is Merge.ABOUT_ME
    own = t.get("me")
    assert own is not None and own.seq == WALL_MS + 1001 and own.root == root_prefix(ROOT_A)
    assert t.has_fresh()  # pushed out again
    assert t.merge(Digest("me", 5, root_prefix(ROOT_B), 9, 9)) is Merge.ABOUT_ME  # older: nothing to do
    assert t.get("me") == own


def test_forgetting_a_member_drops_what_was_owed_to_it_and_of_it() -> None:
    x = DigestExchange(DigestTable("me", 10))
    x.table.merge(_d("a", 1))
    x.table.merge(_d("b", 1))
    x.table.owe("a", ["b"])
    x.table.owe("b", ["a"])
    x.heard_summary("a", DigestSummary(b"\x00\x01", True))
    assert x.pending("a") and x.pending("b")
    x.table.forget("a")
    x.forget("a")
    assert not x.pending("a") and not x.pending("b")  # b was owed only a's row, which is gone


def test_repairs_to_one_peer_are_rate_limited() -> None:
    x = DigestExchange(DigestTable("me", 10))
    assert x.repair_allowed("p", 1.0)
    assert not x.repair_allowed("p", 1.2)
    assert x.repair_allowed("q", 1.2)
    assert x.repair_allowed("p", 1.3)


def test_the_whole_table_comes_in_parts_within_the_budget() -> None:
    t = DigestTable("me", 1000)
    rng = random.Random(4)
    for i in range(200):
        t.merge(_d(f"member-{i}-{rng.randrange(10**6)}", 1 + i))
    parts = t.all_rows(1200, codec.message_size)
    assert sum(len(p) for p in parts) == 200
    assert all(sum(codec.message_size(d) for d in p) <= 1200 for p in parts)
    assert DigestTable("me", 10).all_rows(1200, codec.message_size) == []
