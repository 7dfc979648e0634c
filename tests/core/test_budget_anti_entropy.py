"""Anti-entropy under the byte budget (core/send_budget.py streams, core/anti_entropy.py limits), in virtual time:
a session's messages wait for what the bucket holds above the critical reserve (yielding to gossip), answers
never wait (room or "retry later"), messages are shrunk to the room, the bytes an agent sends stay within
rate x time + burst, and two replicas still converge once the budget refills."""

from __future__ import annotations

import random

import pytest

from gossip_agent.core.ae_codec import encoded_size
from gossip_agent.core.anti_entropy import (
    AeRequest,
    Limits,
    Session,
    answer_limits,
    child_bytes,
    request_limits,
    respond,
)
from gossip_agent.core.config import StateConfig
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.send_budget import (
    DEFERRED_KEY,
    MIN_STREAM_BYTES,
    STREAM_OVERHEAD,
    STREAM_SHARE,
    UNLIMITED_STREAM,
    SendBudget,
    stream_deferred,
)
from tests.core.test_state_node import WALL, core, member, publishing

T = 1_700_000_000_000
CONFIG = StateConfig()


def test_unlimited_streams_cost_nothing_and_never_wait() -> None:
    b = SendBudget(0, 0, now=0.0)
    assert b.take_stream(10**9, 0.0) == 0.0
    assert b.answer_room(0.0) == UNLIMITED_STREAM == b.stream_room()
    assert b.retry_after(0.0) == 0.0
    b.charge_answer(10**9)
    assert b.allow(5000) == 5000


def test_a_stream_message_goes_on_what_the_bucket_holds_above_the_critical_reserve() -> None:
    b = SendBudget(1000, 4000, now=0.0)
    assert b.stream_room() == max(MIN_STREAM_BYTES, int(4000 * STREAM_SHARE))
    assert b.take_stream(800, 0.0) == 0.0
    assert b.tokens == pytest.approx(3200)
    b.charge(3200 - 1000 - 500)  # 1,500 left: 1,000 reserved for critical rumors, 500 above
    assert b.take_stream(800, 0.0) == pytest.approx(0.3)  # 300 B short
    assert b.tokens == pytest.approx(1500)  # nothing charged while it waits
    assert b.take_stream(800, 0.3) == 0.0
    assert b.tokens == pytest.approx(1000)  # the reserve is intact


def test_anti_entropy_yields_to_gossip_and_goes_once_gossip_is_quiet() -> None:
    """Gossip spends whatever it may every 10 ms (a queue kept full by writes): anti-entropy, the safety net,
    waits (it never takes what critical rumors need); when the writes stop it goes within size/rate."""
    b = SendBudget(1000, 4000, now=0.0)
    b.charge(4000)
    went_at = None
    for step in range(1, 1000):
        now = step * 0.01
        b.refill(now)
        if now < 5.0:
            b.charge(b.allow(10**6))  # the queue takes everything it is allowed
        if b.take_stream(1000, now) == 0.0:
            went_at = now
            break
    assert went_at is not None and 5.0 <= went_at <= 5.0 + (1000 + 1000) / 1000 + 0.05


def test_an_oversized_message_waits_for_the_room_only_and_its_excess_is_a_bounded_debt() -> None:
    b = SendBudget(1000, 4000, now=0.0)
    room = b.stream_room()
    assert b.take_stream(room + 2500, 0.0) == 0.0  # a full bucket holds the room: it goes
    assert b.tokens == pytest.approx(4000 - room - 2500)
    assert b.take_stream(50_000, 0.0) == 0.0 or b.tokens >= -4000
    b.charge_answer(10**9)
    assert b.tokens == -4000  # never more than one burst of debt
    assert b.allow(1000) == 0 and b.allow_normal(1000) == 0
    b.charge(100)  # mandatory bytes neither add debt nor forgive it
    assert b.tokens == -4000
    b.refill(4.0)
    assert b.tokens == pytest.approx(0)


def test_an_answer_never_waits_it_has_room_now_or_a_retry_after() -> None:
    b = SendBudget(2000, 8000, now=0.0)
    assert b.answer_room(0.0) == b.stream_room() == 2000
    b.charge(8000)
    assert b.answer_room(0.0) == 0
    wait = b.retry_after(0.0)
    assert wait == pytest.approx((MIN_STREAM_BYTES + 2000) / 2000)
    assert b.answer_room(wait) >= MIN_STREAM_BYTES
    # An answer leaves the critical reserve alone too.
    b.refill(100.0)
    b.charge(8000 - 2000 - MIN_STREAM_BYTES + 1)
    assert b.answer_room(100.0) == 0


def test_stream_deferrals_are_counted_by_class() -> None:
    stats: dict[str, int] = {}
    stream_deferred(stats, "antientropy")
    stream_deferred(stats, "antientropy")
    stream_deferred(stats, "antientropy_answer")
    assert stats == {DEFERRED_KEY + "antientropy": 2, DEFERRED_KEY + "antientropy_answer": 1}


def _diverged(keys: int, size: int, seed: int = 3) -> tuple[KvStore, KvStore]:
    rng = random.Random(seed)
    a, b = KvStore("a", CONFIG), KvStore("b", CONFIG)
    for i in range(keys):
        a.local_put(f"a{i:05d}", rng.randbytes(size), T)
        b.local_put(f"b{i:05d}", rng.randbytes(size), T)
    a.drain_changes()
    b.drain_changes()
    return a, b


def test_an_answer_is_truncated_to_its_room_and_still_progresses() -> None:
    a, b = _diverged(400, 512)
    request = AeRequest((a.merkle.bits, a.merkle.depth), descend=tuple((2, i) for i in range(16)))
    full = respond(b, request, T)
    small = respond(b, request, T, answer_limits(600))
    assert len(full.children) == 16 and not full.truncated
    assert 1 <= len(small.children) < 16 and small.truncated
    assert encoded_size(small) <= 600 + 100
    # A single entry larger than the room still goes (a session must progress), and nothing else.
    want_all = AeRequest((a.merkle.bits, a.merkle.depth), want_nodes=((0, 0),))
    tiny = respond(b, want_all, T, answer_limits(100))
    assert len(tiny.entries) == 1 and tiny.truncated
    # Without a room the answer is what it was.
    assert respond(b, want_all, T, Limits()).entries == respond(b, want_all, T).entries


def test_budgeted_replicas_converge_within_rate_times_time_plus_burst() -> None:
    """Two replicas 2 x 300 keys of 512 B apart, both under a 20 kB/s budget: a session per second from a to
    b in virtual time (a's messages wait for its bucket; b answers within its room or says retry later).
    Each side's stream bytes stay within rate x time + burst, and the replicas end equal."""
    rate, burst = 20_000, 20_000
    a, b = _diverged(300, 512)
    budgets = {"a": SendBudget(rate, burst, 0.0), "b": SendBudget(rate, burst, 0.0)}
    stores = {"a": a, "b": b}
    sent = {"a": 0, "b": 0}
    now, refused, sessions = 0.0, 0, 0
    while a.merkle.root() != b.merkle.root():
        sessions += 1
        assert sessions < 200, "no convergence"
        me, peer = ("a", "b") if sessions % 2 else ("b", "a")  # each side starts sessions, as agents do
        mine, bm, bp = stores[me], budgets[me], budgets[peer]
        session = Session(mine, request_limits(bm.stream_room(), fanout=mine.merkle.fanout))
        request: AeRequest | None = session.start()
        while request is not None:
            size = encoded_size(request) + STREAM_OVERHEAD
            wait = bm.take_stream(size, now)
            while wait > 0:
                now += wait
                wait = bm.take_stream(size, now)
            sent[me] += size
            room = bp.answer_room(now)
            if room == 0:
                refused += 1
                now += max(1.0, bp.retry_after(now))
                continue  # the same request again, as the agent does
            response = respond(stores[peer], request, T, answer_limits(room - STREAM_OVERHEAD))
            answer = encoded_size(response) + STREAM_OVERHEAD
            bp.charge_answer(answer)
            sent[peer] += answer
            request = session.handle(response, T)
            now += 0.005
        now += 1.0
        for side, total in sent.items():
            assert total <= rate * now + burst, (side, total, now)
    assert b.merkle.root() == a.merkle.root()
    assert sum(sent.values()) > 300_000  # the values travelled, both ways
    assert now >= sum(sent.values()) / (2 * rate) - 2  # which took the time the budgets allow


def test_request_limits_shrink_a_sessions_messages_to_the_room() -> None:
    a, b = _diverged(300, 512)
    limits = request_limits(3000, fanout=a.merkle.fanout)
    session = Session(a, limits)
    request: AeRequest | None = session.start()
    biggest = 0
    while request is not None:
        biggest = max(biggest, encoded_size(request))
        request = session.handle(respond(b, request, T), T)
    assert biggest <= 3000 * 0.6  # pushes fill half a message, with some slack for the codec
    assert limits.max_nodes == 3000 // child_bytes(a.merkle.fanout)


def test_a_deferred_session_is_not_a_failure_and_comes_back_after_the_retry_time() -> None:
    c = core("a", ae=True)
    c.put("k", b"v", None, 0.0, WALL)
    other = core("b")
    c.on_member_event(member("b", publishing(other)), 0.1)
    c.start_anti_entropy(0.2, room=4000)
    effects = c.anti_entropy_deferred("peer busy", 3.0, 0.3)
    assert c.stats.ae["deferred"] == 1 and c.stats.ae["failures"] == 0
    assert effects and all(getattr(e, "level", "debug") == "debug" for e in effects)
    assert c.next_deadline() <= 3.3
