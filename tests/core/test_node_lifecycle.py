"""The driver policy the Node owns: join retries and rejoins (`JoinSeeds`), the leave linger (`LeaveDone`),
and the responder's push-pull order. Drivers (the agent runtime, the simulator) only perform these effects."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from gossip_agent.core.config import AgentConfig
from gossip_agent.core.effects import Effect, JoinSeeds, LeaveDone, SyncWith
from gossip_agent.core.joining import JOIN_BACKOFF_MAX, JOIN_BACKOFF_MIN, REJOIN_CHECK
from gossip_agent.core.messages import Alive, Dead, MemberSnapshot, MemberState, Packet, PushPullState
from gossip_agent.core.node import LEAVE_LINGER, Node, split_push_pull

ME = ("10.0.0.1", 7946)
SEED = ("10.0.0.2", 7946)


def cfg(name: str = "n0") -> AgentConfig:
    base = AgentConfig.preset_config("lan", name=name)
    return replace(base, membership=replace(base.membership, tcp_fallback_probe=False, reconnect_interval=0.0))


def run_until(node: Node, until: float, now: float) -> tuple[float, list[Effect]]:
    """Tick at each deadline up to `until`; (last time, every effect)."""
    out: list[Effect] = []
    for _ in range(10_000):
        t = max(node.next_deadline(), now)
        if t > until:
            break
        now = t
        out += node.tick(now)
    return now, out


def join_requests(node: Node, until: float, now: float = 0.0) -> list[tuple[float, JoinSeeds]]:
    """Answer every JoinSeeds with a failing attempt at once; (time, request) of each."""
    asked: list[tuple[float, JoinSeeds]] = []
    for _ in range(10_000):
        t = max(node.next_deadline(), now)
        if t > until:
            break
        now = t
        for e in node.tick(now):
            if isinstance(e, JoinSeeds):
                asked.append((now, e))
                for sync in node.join([SEED], now):
                    assert isinstance(sync, SyncWith)
                    node.sync_failed(sync.to, now + 0.1)
    return asked


def test_failed_join_attempts_are_retried_with_capped_exponential_backoff() -> None:
    node = Node(cfg(), ME, random.Random(1), 0.0)
    [sync] = node.join([SEED], 0.0)
    assert sync == SyncWith(SEED, join=True)
    node.sync_failed(SEED, 0.1)
    asked = join_requests(node, 400.0, 0.1)
    assert asked and not any(e.rejoin for _, e in asked)
    times = [0.1] + [t for t, _ in asked]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each gap is the backoff with jitter 0.5..1.5 (plus the 0.1 s the failing sync took, from the second on).
    backoff = JOIN_BACKOFF_MIN
    for gap in gaps:
        assert 0.5 * backoff <= gap <= 1.5 * backoff + 0.1 + 1e-9, (gap, backoff)
        backoff = min(2 * backoff, JOIN_BACKOFF_MAX)
    assert max(gaps) > JOIN_BACKOFF_MAX / 2  # it did back off to the cap
    assert node.join_attempts == len(asked) + 1
    assert node.stats["join_retries"] == len(asked)


def test_an_attempt_in_which_no_seed_resolved_is_retried_too() -> None:
    node = Node(cfg(), ME, random.Random(2), 0.0)
    assert node.join([], 0.0) == []
    assert not node.joined
    t, effects = run_until(node, 2 * JOIN_BACKOFF_MIN, 0.0)
    assert effects.count(JoinSeeds(rejoin=False)) == 1
    # Until the driver answers with `join`, the Node does not ask again.
    _, later = run_until(node, 100.0, t)
    assert not [e for e in later if isinstance(e, JoinSeeds)]


def test_no_retry_while_a_join_sync_is_in_flight_nor_once_joined() -> None:
    node = Node(cfg(), ME, random.Random(3), 0.0)
    node.join([SEED, ("10.0.0.3", 7946)], 0.0)
    node.sync_failed(SEED, 0.2)  # the other one is still running
    _, effects = run_until(node, 0.5 + node.config.membership.stream_timeout, 0.0)
    assert not [e for e in effects if isinstance(e, JoinSeeds)]
    node.merge_push_pull(PushPullState("n1", (MemberSnapshot("n1", SEED, 1, MemberState.ALIVE, {}),), False), 0.6)
    assert node.joined
    # (Later its only peer, which never answers here, is suspected: then it is alone again and rejoins.)
    _, effects = run_until(node, 0.6 + REJOIN_CHECK, 0.6)
    assert not [e for e in effects if isinstance(e, JoinSeeds)]


def test_a_member_that_lost_every_peer_rejoins_through_the_seeds_at_most_rejoin_check_apart() -> None:
    node = Node(cfg(), ME, random.Random(4), 0.0)
    node.join([SEED], 0.0)
    node.merge_push_pull(PushPullState("n1", (MemberSnapshot("n1", SEED, 1, MemberState.ALIVE, {}),), False), 0.0)
    node.tick(0.0)
    assert node.joined
    now = 0.1
    node.handle_packet(Packet("x", (Dead("n1", 1, "x"),)), SEED, now)  # our only peer died
    assert not node.joined
    asked = join_requests(node, now + 120.0, now)
    assert asked and all(e.rejoin for _, e in asked)
    assert REJOIN_CHECK <= asked[0][0] - now <= REJOIN_CHECK + 1e-9
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(asked)]
    assert max(gaps) <= 1.5 * REJOIN_CHECK + 0.1 + 1e-9
    assert node.stats["rejoin_requests"] == len(asked)


def test_a_leaver_asks_to_stop_once_its_leave_rumor_is_sent_out() -> None:
    node = Node(cfg(), ME, random.Random(5), 0.0)
    for i in range(2, 12):
        node.handle_packet(Packet(f"n{i}", (Alive(f"n{i}", 1, (f"10.0.0.{i}", 7946)),)), ME, 0.0)
    node.leave(1.0)
    assert node.queue_depth() > 0
    t, effects = run_until(node, 1.0 + LEAVE_LINGER, 1.0)
    assert effects.count(LeaveDone()) == 1
    assert node.queue_depth() == 0
    _, later = run_until(node, 100.0, t)
    assert LeaveDone() not in later  # once


def test_a_leaver_stops_after_the_linger_time_even_with_rumors_still_queued() -> None:
    # 118 members: the leave (critical: forwarded to 2 x fanout) is still queued after the forward and one round.
    node = Node(cfg(), ME, random.Random(6), 0.0, leave_linger=0.01)
    for i in range(2, 120):
        node.handle_packet(Packet(f"n{i}", (Alive(f"n{i}", 1, (f"10.0.0.{i}", 7946)),)), ME, 0.0)
    node.leave(1.0)
    assert node.next_deadline() <= 1.01
    assert LeaveDone() in node.tick(1.01)
    assert node.queue_depth() > 0  # it had more to say, but the linger is over


def test_a_leaver_with_nobody_to_tell_asks_to_stop_at_once() -> None:
    node = Node(cfg(), ME, random.Random(7), 0.0)
    node.leave(5.0)
    assert node.next_deadline() <= 5.0
    assert LeaveDone() in node.tick(5.0)


def test_the_responder_answers_with_its_view_from_before_the_merge() -> None:
    responder = Node(cfg("r"), ME, random.Random(8), 0.0)
    rows = tuple(MemberSnapshot(f"m{i}", (f"10.1.0.{i}", 7946), 1, MemberState.ALIVE, {}) for i in range(300))
    remote = PushPullState("m0", rows, True)
    answer, parts = responder.serve_push_pull(remote, chunk_rows=128)
    assert [m.name for m in answer.members] == ["r"]  # not our merge of their rows, echoed back
    assert [len(p.members) for p in parts] == [128, 128, 44]
    assert all(p.sender == "m0" and p.join for p in parts)
    for part in parts:
        responder.merge_push_pull(part, 0.0)
    assert len(responder.members()) == 301
    assert split_push_pull(remote, None) == [remote]
