"""When the state core publishes its convergence digest under a steady stream of writes: at most once per
anti-entropy interval while the writes keep changing the root (the lulls of the stream publish nothing), and the root
the writes leave behind within DIGEST_QUIET of the last one. Every publication costs a row pushed by every
member, so this schedule is most of what convergence monitoring costs under load (bench/bench_load.py)."""

from __future__ import annotations

import dataclasses
import itertools
import random

from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.state_node import (
    DIGEST_MIN_WAIT,
    DIGEST_QUIET,
    PublishDigest,
    StateEffect,
    StateNode,
    digest_max_wait,
)

WALL = 1_764_470_000.0


def _core() -> StateNode:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False),
                              state=StateConfig(tombstone_ttl=3600.0))
    return StateNode(cfg, KvStore("a@e1", cfg.state), random.Random(1), 0.0, addr=("10.0.0.1", 7001),
                     inline_limit=1200)


def _run(c: StateNode, until: float) -> list[tuple[float, PublishDigest]]:
    """Tick `c` at each of its deadlines up to `until`; the digests it published, with when."""
    out: list[tuple[float, PublishDigest]] = []
    for _ in range(1000):
        d = c.next_deadline()
        if d > until:
            return out
        effects: list[StateEffect] = c.tick(d, WALL + d)
        out += [(d, e) for e in effects if isinstance(e, PublishDigest)]
    raise AssertionError("the core is spinning")


def test_a_steady_stream_publishes_once_per_max_wait_and_its_lulls_publish_nothing() -> None:
    # Before: a lull of 0.15 s published (the first of every stream, then any more than 2 s after the
    # previous publication), and so did every 3 s while busy: 10 writes/s with a 0.2 s gap every 2.5 s published
    # every 2.5 s, each row stale 0.1 s later (at N = 50 every publication costs about 7 KB of digests).
    c = _core()
    max_wait = digest_max_wait(c.config)
    _run(c, 10.0)
    t, first, published = 10.0, 10.0, []
    for i in range(300):  # 10 writes/s for 30 s, a gap of 0.2 s every 2.5 s
        c.put(f"w{i}", b"x", None, t, WALL + t)
        step = 0.2 if i % 25 == 24 else 0.1
        published += _run(c, t + step - 1e-6)
        t += step
    times = [at for at, _ in published]
    assert times, "a stream must still publish: every member's row is at most max_wait old"
    assert times[0] <= first + max_wait + 0.01
    assert all(b - a >= max_wait - 0.2 for a, b in itertools.pairwise(times))
    assert len(times) <= 30 / max_wait + 1
    # The writes stop: the root they leave behind goes out at most DIGEST_QUIET after the last one (here or
    # by the last max-wait publication, if that came after the last write), and nothing more.
    last_write = t - 0.2
    published += _run(c, t + 10.0)
    s = c.store.stats()
    at, e = published[-1]
    assert (e.root, e.keys, e.hlc_ms) == (s.root, s.keys, s.hlc.wall_ms)
    assert at <= last_write + DIGEST_QUIET + 0.01
    assert len([a for a, _ in published if a > last_write - 0.05]) == 1


def test_the_longest_wait_while_busy_is_one_anti_entropy_interval_but_never_under_a_second() -> None:
    base = AgentConfig.preset_config("lan", name="a")

    def with_interval(seconds: float) -> AgentConfig:
        return dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, interval=seconds))

    assert digest_max_wait(base) == base.anti_entropy.interval == 10.0
    assert digest_max_wait(with_interval(30.0)) == 30.0
    assert digest_max_wait(with_interval(0.005)) == DIGEST_MIN_WAIT  # a test's millisecond anti-entropy
