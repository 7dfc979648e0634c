"""Pull mode's repair hold: a divergent peer is repaired from only once both roots held still a probe interval.

Pull spreads a write in hundreds of milliseconds, answer by answer, so a root that held still REPAIR_HOLD was
mostly a lull between two answers: bench_load's 8 agents at 10 writes/s drew 65 anti-entropy sessions that
raced the pulls already on their way (110 kB of TCP, a quarter of pull's bytes)."""

from __future__ import annotations

import dataclasses
import random

from gossip_agent.core.config import AgentConfig, GossipMode
from gossip_agent.core.digests import root_prefix
from gossip_agent.core.effects import EventKind, MemberEvent
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.messages import Address, Digest, MemberSnapshot, MemberState
from gossip_agent.core.state_node import REPAIR_HOLD, AntiEntropyWith, StateEffect, StateNode, repair_hold

WALL = 1_795_000_000.0


def addr(name: str) -> Address:
    return ("10.0.0.1", 7000 + sum(map(ord, name)) % 1000)


def config(name: str, mode: GossipMode) -> AgentConfig:
    base = AgentConfig.preset_config("lan", name=name)
    return dataclasses.replace(base, gossip=dataclasses.replace(base.gossip, mode=mode),
                               anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False))


def core(name: str, mode: GossipMode) -> StateNode:
    cfg = config(name, mode)
    return StateNode(cfg, KvStore(f"{name}@e1", cfg.state), random.Random(1), 0.0, addr=addr(name),
                     inline_limit=1200)


def run(c: StateNode, until: float) -> list[StateEffect]:
    out: list[StateEffect] = []
    for _ in range(1000):
        d = c.next_deadline()
        if d > until:
            return out
        out += c.tick(d, WALL + d)
    raise AssertionError("more than 1000 deadlines: the core is spinning")


def sessions(effects: list[StateEffect]) -> list[AntiEntropyWith]:
    return [e for e in effects if isinstance(e, AntiEntropyWith)]


def diverged(mode: GossipMode) -> StateNode:
    """Member c with one write, told at 0.1 that d (holding another write, newer than ours) publishes its root."""
    c = core("c", mode)
    c.on_member_event(MemberEvent(EventKind.JOIN, MemberSnapshot("d", addr("d"), 1, MemberState.ALIVE, {})), 0.0)
    c.put("k", b"c", None, 0.0, WALL)
    d = core("d", mode)
    d.put("k", b"d", None, 0.0, WALL + 1.0)
    mine = c.store.stats()
    c.on_root_digest(Digest("d", 1, root_prefix(d.store.root_hex()), 1, mine.hlc.wall_ms + 1), 0.1)
    return c


def test_pull_mode_waits_a_probe_interval_before_repairing_a_divergent_peer() -> None:
    probe = config("c", "pull").membership.probe_interval
    assert probe > REPAIR_HOLD + 0.1  # (the lan preset: else this test shows nothing)
    assert repair_hold(config("c", "pull")) == probe
    c = diverged("pull")
    assert sessions(run(c, 0.1 + REPAIR_HOLD + 0.01)) == []  # push modes would repair here (below)
    assert sessions(run(c, 0.1 + probe - 0.01)) == []
    assert sessions(run(c, 0.1 + probe + 0.01)) == [AntiEntropyWith("d", addr("d"))]  # a real difference


def test_push_modes_keep_the_short_hold() -> None:
    for mode in ("push", "push-pull"):
        assert repair_hold(config("c", mode)) == REPAIR_HOLD
        c = diverged(mode)
        assert sessions(run(c, 0.1 + REPAIR_HOLD + 0.01)) == [AntiEntropyWith("d", addr("d"))]


def test_pull_mode_with_a_probe_interval_below_the_hold_keeps_the_hold() -> None:
    cfg = config("c", "pull")
    fast = dataclasses.replace(cfg, membership=dataclasses.replace(cfg.membership, probe_interval=0.1,
                                                                   probe_timeout=0.05))
    assert repair_hold(fast) == REPAIR_HOLD
