"""The repair planner with zones, through the state core (virtual time, no sockets): during a stream of writes
a far member's stale root must not draw repairs across zones, and once the writes stop a far member that truly
differs is still repaired from (convergence)."""

from __future__ import annotations

from collections.abc import Sequence

from gossip_agent.core.digests import root_prefix
from gossip_agent.core.messages import Digest
from gossip_agent.core.rng import Rng
from gossip_agent.core.state_node import FAR_REPAIR_HOLD, REPAIR_HOLD, AntiEntropyWith, StateNode
from tests.core.test_state_node import WALL, core, member, of, run

NEAR = ("n1", "n2", "n3")
FAR = ("f1", "f2")


def near_far_chooser(names: Sequence[str], rng: Rng) -> str | None:
    """What Node.choose_partner does with zones (core/topology_state.py): near with probability 0.85, far
    otherwise; the other class fills in when one is empty."""
    near = [n for n in names if n in NEAR]
    far = [n for n in names if n in FAR]
    pool = far if (rng.random() < 0.15 and far) or not near else near
    return pool[int(rng.random() * len(pool))] if pool else None


def digest(c: StateNode, name: str, seq: int) -> Digest:
    """`name` publishes the root `c` holds now (a near member that got the same writes)."""
    s = c.store.stats()
    return Digest(name, seq, root_prefix(s.root), s.keys, s.hlc.wall_ms)


def test_a_stale_far_root_draws_no_repair_during_writes_and_a_real_far_difference_is_repaired_after() -> None:
    a = core("a")
    a.choose_partner = near_far_chooser
    a.is_near = lambda name: name in NEAR
    far_store = core("f")
    far_store.put("only-far", b"x", None, 0.0, WALL - 5.0)  # what the far members hold and we do not
    for name in (*NEAR, *FAR):
        a.on_member_event(member(name), 0.0)
    for name in FAR:
        s = far_store.store.stats()
        a.on_root_digest(Digest(name, 1, root_prefix(s.root), s.keys, s.hlc.wall_ms), 0.0)
    run(a, 1.0)
    far_repairs: list[float] = []

    def step(until: float) -> None:
        far_repairs.extend(until for e in of(AntiEntropyWith, run(a, until)) if e.peer in FAR)

    seq = 1
    t = 1.0
    for i in range(20):  # 2 writes/s for 10 s, each reaching a; its near members publish the same root soon
        a.put(f"k{i}", b"v", None, t, WALL + t)
        step(t + 0.15)
        seq += 1
        for name in NEAR:
            a.on_root_digest(digest(a, name, seq), t + 0.15)
        step(t + 0.5)
        t += 0.5
    last_write = t - 0.5
    # Before: the far roots held still (their digests reach us late) while ours held REPAIR_HOLD between two
    # writes, and the chooser, offered only far candidates, sent a repair across zones every other write.
    assert far_repairs == [], far_repairs
    # The writes stopped; the zone agrees on a root that lacks the far members' key: repaired from them within
    # the far hold (plus the observation delay).
    effects = run(a, last_write + FAR_REPAIR_HOLD + REPAIR_HOLD + 0.2)
    assert [e.peer for e in of(AntiEntropyWith, effects)] in (["f1"], ["f2"]), effects
    assert a.next_deadline() > last_write + FAR_REPAIR_HOLD


def test_without_zones_a_divergent_peer_is_repaired_from_after_the_plain_hold() -> None:
    a = core("a")
    a.is_near = lambda name: None  # no topology known: every peer alike, no far hold
    other = core("b")
    other.put("x", b"1", None, 0.0, WALL)
    a.on_member_event(member("b"), 0.0)
    a.on_root_digest(digest(other, "b", 1), 0.0)
    assert [e.peer for e in of(AntiEntropyWith, run(a, REPAIR_HOLD + 0.2))] == ["b"]
