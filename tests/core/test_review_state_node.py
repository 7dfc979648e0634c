"""The state core's timer after deletes: once the tombstones are collected, an idle member stops waking
every second (the graveyard only expires at the end of the tombstone TTL)."""

from __future__ import annotations

import dataclasses
import random

from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.state_node import ACK_GRACE_MS, RETIRE_EVERY, StateNode

WALL = 1_795_000_000.0


def test_an_idle_member_stops_waking_once_its_tombstones_are_collected() -> None:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False),
                              state=StateConfig(tombstone_ttl=24 * 3600.0))
    c = StateNode(cfg, KvStore("a@e1", cfg.state), random.Random(1), 0.0, addr=("10.0.0.1", 7000),
                  inline_limit=1200)
    c.put("k", b"v", None, 0.0, WALL)
    c.delete("k", None, 0.0, WALL)
    now, wakes = 0.0, 0
    for _ in range(10_000):  # ten idle minutes, driven the way the agent's timer drives the core
        if now >= 600.0:
            break
        now = max(now + 0.001, c.next_deadline())  # the driver's timer never fires twice at one instant
        c.tick(now, WALL + now)
        wakes += 1
        if now >= ACK_GRACE_MS / 1000 + 5.0:
            assert c.store.stats().tombstones == 0  # alone, the member is converged: collected after the grace
    # The retirement check (every RETIRE_EVERY) and a few for the delete itself; not one a second.
    assert wakes <= 600.0 / RETIRE_EVERY + 20, wakes
