"""An anti-entropy answer's merges stay within its room (core/anti_entropy.py `respond`).

A request pushes entries; the responder merges them and sends back each merge that differs from what was
pushed (its own was newer or concurrent). Those merges were sent whatever the answer's room: a request
pushing stale, tiny versions of keys whose values are large here drew every large value back, in one
answer. Under a byte budget (`answer_limits`) that broke the budget by the whole answer at each refill (the
debt stops at one burst); without one, the answer could outgrow what the initiator reads (16 MiB) and fail the
session every time. Past the room the merges are left out (the answer says truncated): the initiator's
root still differs, and the next session finds those keys again; the first merge always goes.
"""

from __future__ import annotations

from gossip_agent.core.anti_entropy import AeRequest, answer_limits, approx_entry_bytes, respond
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore, ValueEntry

T0 = 1_700_000_000_000


def _stores(n: int, size: int) -> tuple[KvStore, list[ValueEntry]]:
    ours, theirs = KvStore("r@1", StateConfig()), KvStore("i@2", StateConfig())
    stale = [theirs.local_put(f"k{i}", b"x", T0) for i in range(n)]
    for i in range(n):
        ours.local_put(f"k{i}", bytes([65 + i % 26]) * size, T0 + 1000)
    return ours, stale


def test_merges_sent_back_stay_within_the_answer_room() -> None:
    ours, stale = _stores(40, 4096)
    room = 8 * 1024
    answer = respond(ours, AeRequest((ours.merkle.bits, ours.merkle.depth), push=tuple(stale)), T0 + 2000,
                     answer_limits(room))
    sent = sum(approx_entry_bytes(e) for e in answer.entries)
    assert answer.entries, "the first merge always goes"
    assert sent <= room + 4096 + 100, sent  # (at most one entry past the room)
    assert answer.truncated
    # Every pushed version was merged all the same: nothing is lost, only answered later.
    for e in stale:
        mine = ours.entry(e.key)
        assert isinstance(mine, ValueEntry) and len(mine.versions) >= 1


def test_without_a_budget_small_answers_are_whole() -> None:
    ours, stale = _stores(5, 100)
    answer = respond(ours, AeRequest((ours.merkle.bits, ours.merkle.depth), push=tuple(stale)), T0 + 2000)
    assert len(answer.entries) == 5 and not answer.truncated
