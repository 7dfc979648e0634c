"""Convergence digests cost less under load: a fresh row is not pushed to a peer known to hold it (the one
that sent it, one we pushed it to, its owner), and the lulls of a write stream on a busy host do not each
publish a root that the next write makes stale. Fast and deterministic."""

from __future__ import annotations

import dataclasses
import random

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.digests import (
    FRESH_SENDS,
    PACED_QUIET_FACTOR,
    STREAM_GAP,
    DigestTable,
    Merge,
    PublishPacing,
)
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.messages import Digest
from gossip_agent.core.state_node import DIGEST_QUIET, PublishDigest, StateEffect, StateNode, digest_max_wait

WALL = 1_764_470_000.0
ROOT = b"\xab" * 8


def test_a_fresh_row_is_not_pushed_to_a_peer_known_to_hold_it_and_the_push_is_still_spent() -> None:
    t = DigestTable("me", 100)
    assert t.merge(Digest("x", 5, ROOT, 1, 1), sender="s") is Merge.NEW
    assert t.merge(Digest("x", 5, ROOT, 1, 1), sender="s2") is Merge.SAME  # s2 holds it too
    sent: dict[str, list[Digest]] = {}
    for to in ("s", "x", "s2"):  # its sender, its owner, another holder: nothing on the wire
        sent[to] = t.select(1000, codec.message_size, to=to)
    assert sent == {"s": [], "x": [], "s2": []}
    assert not t.has_fresh()  # ...but the pushes are spent (else a row nobody lacks stays fresh for good
    # (and summaries, which wait for fresh rows to be pushed, never go); s2's duplicate counted as one push
    assert t.pushes_spared + t.duplicates_heard == FRESH_SENDS and t.duplicates_heard == 1
    assert t.merge(Digest("y", 5, ROOT, 1, 1), sender="s") is Merge.NEW
    assert t.select(1000, codec.message_size, to="p1") == [Digest("y", 5, ROOT, 1, 1)]
    assert t.select(1000, codec.message_size, to="p1") == []  # pushed there already: the next goes elsewhere
    assert t.select(1000, codec.message_size, to="p2") == [Digest("y", 5, ROOT, 1, 1)]
    t.merge(Digest("y", 6, ROOT, 2, 2))  # a newer version: nobody is known to hold it
    assert t.select(1000, codec.message_size, to="p1") == [Digest("y", 6, ROOT, 2, 2)]


def test_the_quiet_doubles_after_a_lull_that_the_writes_followed_and_comes_back_after_real_quiet() -> None:
    p = PublishPacing(0.3)
    assert p.quiet(0.0) == 0.3
    p.published(1.0, 0.0, lull=True)
    assert p.quiet(1.5) == 0.6  # writes again 0.5 s later: that was a lull
    p.published(3.0, 1.5, lull=True)
    assert p.quiet(3.2) == 1.2 == 0.3 * PACED_QUIET_FACTOR
    p.published(5.0, 3.2, lull=True)
    assert p.quiet(5.1) == 1.2  # capped
    assert p.quiet(5.0 + STREAM_GAP) == 0.3  # a change after real quiet: the base again
    p.published(20.0, 5.1, lull=False)  # the longest wait, not a lull: a step down
    assert p.quiet(20.1) == 0.6


def _core() -> StateNode:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False),
                              state=StateConfig(tombstone_ttl=3600.0))
    return StateNode(cfg, KvStore("a@e1", cfg.state), random.Random(1), 0.0, addr=("10.0.0.1", 7001),
                     inline_limit=1200)


def _run(c: StateNode, until: float) -> list[float]:
    out: list[float] = []
    for _ in range(1000):
        d = c.next_deadline()
        if d > until:
            return out
        effects: list[StateEffect] = c.tick(d, WALL + d)
        out += [d for e in effects if isinstance(e, PublishDigest)]
    raise AssertionError("the core is spinning")


def test_a_stream_with_lulls_longer_than_the_quiet_publishes_few_stale_roots_and_its_end_soon() -> None:
    # Before: every lull of 0.4 s (every 2 s of a 10 writes/s stream, as deliveries bunch up on a busy host)
    # published a root, stale 0.4 s later: 10 over a 20 s stream, against 2 for the longest wait.
    c = _core()
    _run(c, 10.0)
    t, published = 10.0, []
    for i in range(200):
        c.put(f"w{i}", b"x", None, t, WALL + t)
        step = 0.5 if i % 20 == 19 else 0.1
        published += _run(c, t + step - 1e-6)
        t += step
    assert len(published) <= 20 / digest_max_wait(c.config) + 2  # the first lull, the longest waits
    last_write = t - 0.5
    final = _run(c, t + 10.0)
    assert len(final) == 1 and final[0] <= last_write + DIGEST_QUIET * PACED_QUIET_FACTOR + 0.01
