from gossip_agent.core.broadcast import BroadcastQueue, retransmit_limit
from gossip_agent.core.messages import Alive, StateRumor, Suspect


def test_retransmit_limit_is_mult_times_ceil_log10() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 50) == 8
    assert retransmit_limit(4, 1000) == 16


def test_rumor_leaves_queue_after_limit() -> None:
    q = BroadcastQueue(retransmit_mult=2)
    q.enqueue(StateRumor(b"x"), 10)
    sent = 0
    for i in range(10):
        if q.take(1000, n_members=5, to=f"n{i}"):
            sent += 1
    assert sent == retransmit_limit(2, 5) == 2
    assert len(q) == 0


def test_newer_rumor_about_same_member_replaces_older() -> None:
    q = BroadcastQueue(retransmit_mult=4)
    q.enqueue(Alive("a", 1, ("h", 1)), 20, key="m:a")
    q.enqueue(Suspect("a", 1, "b"), 20, key="m:a")
    assert q.peek_all() == [Suspect("a", 1, "b")]


def test_fewest_transmits_then_newest_first_and_budget_respected() -> None:
    q = BroadcastQueue(retransmit_mult=10)
    for i in range(5):
        q.enqueue(StateRumor(bytes([i])), 100)
    first = q.take(250, n_members=3)
    assert first == [StateRumor(b"\x04"), StateRumor(b"\x03")]
    second = q.take(250, n_members=3)
    # untransmitted rumors come before those sent once
    assert second == [StateRumor(b"\x02"), StateRumor(b"\x01")]


def test_not_sent_back_to_source_nor_twice_to_same_peer() -> None:
    q = BroadcastQueue(retransmit_mult=10)
    q.enqueue(StateRumor(b"a"), 10, source="peer1")
    assert q.take(1000, 3, to="peer1") == []
    assert q.take(1000, 3, to="peer2") == [StateRumor(b"a")]
    assert q.take(1000, 3, to="peer2") == []


def test_queue_is_bounded() -> None:
    q = BroadcastQueue(retransmit_mult=4, max_items=10)
    for i in range(25):
        q.enqueue(StateRumor(str(i).encode()), 5)
    assert len(q) == 10
    assert q.dropped == 15


def test_rumor_retires_once_every_other_member_has_it() -> None:
    q = BroadcastQueue(retransmit_mult=4)  # limit 4 for 3 members: more than the 2 peers there are
    q.enqueue(StateRumor(b"x"), 10, source="a")
    assert q.take(1000, n_members=3, to="b") == [StateRumor(b"x")]
    assert len(q) == 0  # self + source a + peer b: everyone has it


def test_a_send_to_a_dead_member_does_not_count_toward_everyone_has_it() -> None:
    # 4 live members (self, b, c, leaver) and a crashed d: a rumor must reach the 3 other live members, even
    # when one of its sends went to the dead d (gossip to the dead). Counting d retired it before the leaver.
    q = BroadcastQueue(retransmit_mult=4)
    q.enqueue(Alive("leaver", 2, ("h", 1)), 10)
    assert q.take(1000, n_members=4, to="d", to_live=False)
    assert q.take(1000, n_members=4, to="b")
    assert len(q) == 1  # c has not heard it: the rumor stays
    assert q.take(1000, n_members=4, to="c")
    assert q.take(1000, n_members=4, to="leaver")
    assert len(q) == 0  # every live member has it now
