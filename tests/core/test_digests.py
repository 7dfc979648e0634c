"""The convergence digest table: merge by sequence, freshest first within a byte budget, bounded."""

from __future__ import annotations

from gossip_agent.core import codec
from gossip_agent.core.digests import BACKGROUND_CYCLES, FRESH_SENDS, ROOT_PREFIX_BYTES, DigestTable, root_prefix
from gossip_agent.core.messages import Digest

ROOT_A = "ab" * 32
ROOT_B = "cd" * 32


def _d(name: str, seq: int, root: str = ROOT_A) -> Digest:
    return Digest(name, seq, root_prefix(root), 3, 1000)


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
    assert t.merge(_d("a", 5, ROOT_A))
    assert not t.merge(_d("a", 5, ROOT_B))  # same sequence: no change
    assert not t.merge(_d("a", 4, ROOT_B))  # older: no change
    assert t.get("a") == _d("a", 5, ROOT_A)
    assert t.merge(_d("a", 6, ROOT_B))
    assert t.get("a") == _d("a", 6, ROOT_B)
    assert not t.merge(_d("me", 99))
    assert t.get("me") is None
    assert t.forget("a") and "a" not in t


def test_table_is_bounded_for_new_names() -> None:
    t = DigestTable("me", 3)
    assert all(t.merge(_d(f"m{i}", 1)) for i in range(3))
    assert not t.merge(_d("forged", 1))
    assert len(t) == 3
    assert t.merge(_d("m0", 2))  # a known member still updates


def test_select_respects_the_budget_and_sends_fresh_rows_first() -> None:
    t = DigestTable("me", 100)
    for i in range(10):
        t.merge(_d(f"m{i}", 1))
    for _ in range(FRESH_SENDS):  # age every row out of the fresh lane
        for _ in range(10):
            t.select(10_000, codec.message_size)
    t.merge(_d("m3", 2, ROOT_B))
    size = codec.message_size(_d("m0", 1))
    picked = t.select(2 * size, codec.message_size)
    assert sum(codec.message_size(d) for d in picked) <= 2 * size
    assert picked[0] == _d("m3", 2, ROOT_B)
    assert t.select(0, codec.message_size) == []


def test_round_robin_reaches_every_row_within_bounded_packets() -> None:
    t = DigestTable("me", 100)
    for i in range(20):
        t.merge(_d(f"m{i}", 1))
    t.publish(ROOT_A, 1, 1)
    size = codec.message_size(_d("m10", 1))
    seen: set[str] = set()
    for _ in range(FRESH_SENDS * 21 + 21):  # fresh lane drains, then the round-robin
        seen.update(d.name for d in t.select(2 * size + 1, codec.message_size))
    assert seen == {*(f"m{i}" for i in range(20)), "me"}


def test_an_older_row_heard_puts_ours_back_in_front_once() -> None:
    t = DigestTable("me", 10)
    t.merge(_d("a", 5))
    t.publish(ROOT_A, 1, 1, seq_floor=9)
    while t.has_fresh():
        t.select(10_000, codec.message_size, background=0)
    assert not t.merge(_d("a", 3)) and t.has_fresh()          # the sender is behind about a
    assert t.select(10_000, codec.message_size, background=0) == [_d("a", 5)]
    assert not t.has_fresh()
    stale_me = Digest("me", 2, root_prefix(ROOT_A), 1, 1)
    assert not t.merge(stale_me) and t.has_fresh()             # ...or about us


def test_an_idle_table_stops_its_round_robin() -> None:
    t = DigestTable("me", 10)
    for i in range(5):
        t.merge(_d(f"m{i}", 1))
    sent = 0
    for _ in range(1000):
        sent += len(t.select(10_000, codec.message_size))
    assert sent <= 5 * FRESH_SENDS + BACKGROUND_CYCLES * 5
    assert t.select(10_000, codec.message_size) == []        # idle: nothing rides on probes any more
    t.merge(_d("m0", 2))
    assert t.select(10_000, codec.message_size)               # a change starts it again
