"""Convergence digests under a steady stream of writes: interim rows (published while writes keep changing the
replica) are cheap (fewer pushes, no packets of their own, no reconciliation), and the row that ends the writes
is published promptly as final, even when an interim row already showed its root."""

from __future__ import annotations

import dataclasses
import random

from gossip_agent.core import codec
from gossip_agent.core.config import AgentConfig, StateConfig
from gossip_agent.core.digests import (
    FRESH_SENDS,
    INTERIM_SENDS,
    DigestExchange,
    DigestTable,
    Merge,
    published_while_busy,
    root_prefix,
)
from gossip_agent.core.kvstore import KvStore
from gossip_agent.core.messages import Digest
from gossip_agent.core.state_node import (
    DIGEST_MAX_WAIT,
    DIGEST_QUIET_BUSY,
    PublishDigest,
    StateEffect,
    StateNode,
)

ROOT_A = "ab" * 32
ROOT_B = "cd" * 32
WALL = 1_764_470_000.0
WALL_MS = int(WALL * 1000)


def _pushes(t: DigestTable, name: str) -> int:
    """How many packets the row of `name` rides in before it stops being pushed."""
    for n in range(100):
        if name not in {d.name for d in t.select(10_000, codec.message_size)}:
            return n
    raise AssertionError("pushed forever")


def test_interim_rows_are_odd_final_rows_even_and_the_same_root_is_published_again_as_final() -> None:
    t = DigestTable("me", 10)
    interim = t.publish(ROOT_A, 1, 5, seq_floor=WALL_MS, interim=True)
    assert interim is not None and interim.seq % 2 == 1 and published_while_busy(interim)
    assert t.publish(ROOT_A, 1, 5, seq_floor=WALL_MS + 10, interim=True) is None  # nothing new
    final = t.publish(ROOT_A, 1, 5, seq_floor=WALL_MS + 20)  # same root, but the writes have ended
    assert final is not None and final.seq % 2 == 0 and final.seq > interim.seq
    assert not published_while_busy(final)
    assert t.publish(ROOT_A, 1, 5, seq_floor=WALL_MS + 30) is None


def test_a_relayed_interim_row_is_pushed_less_and_asks_for_no_packet_of_its_own() -> None:
    t = DigestTable("me", 10)
    assert t.merge(Digest("a", WALL_MS + 1, root_prefix(ROOT_A), 3, WALL_MS)) is Merge.NEW  # odd: interim
    assert not t.has_fresh()  # rides only in packets that go anyway
    assert _pushes(t, "a") == INTERIM_SENDS < FRESH_SENDS
    assert t.merge(Digest("a", WALL_MS + 4, root_prefix(ROOT_B), 3, WALL_MS)) is Merge.NEW  # even: final
    assert t.has_fresh()  # worth a gossip round of its own
    assert _pushes(t, "a") == FRESH_SENDS


def test_a_busy_member_neither_asks_for_nor_answers_reconciliation_until_its_writes_end() -> None:
    # Before: summaries went out and were answered while every root kept changing, so every bucket differed
    # and each exchange re-sent most of the table both ways.
    a, b = DigestExchange(DigestTable("a", 10)), DigestExchange(DigestTable("b", 10))
    for x in (a, b):
        x.table.publish(ROOT_A, 1, 5, seq_floor=WALL_MS)
        x.table.merge(Digest("m", WALL_MS, root_prefix(ROOT_A), 1, WALL_MS))
    b.table.merge(Digest("m", WALL_MS + 2, root_prefix(ROOT_B), 1, WALL_MS))  # a missed this one
    for x in (a, b):
        while x.table.select(10_000, codec.message_size):
            pass
    a.table.publish(ROOT_B, 2, 6, seq_floor=WALL_MS + 100, interim=True)  # a is busy
    while a.table.select(10_000, codec.message_size):
        pass
    assert a.table.busy() and not a.table.summary_due()
    assert not a.table.reconcile("b", b.table.summary(True))  # differs, but a is busy: nothing owed
    assert not a.table.owes("b")
    a.table.publish(ROOT_B, 2, 6, seq_floor=WALL_MS + 200)  # quiet again: the final row
    while a.table.select(10_000, codec.message_size):
        pass
    assert not a.table.busy() and a.table.summary_due()
    assert a.table.reconcile("b", b.table.summary(True)) and a.table.owes("b")


def _core() -> StateNode:
    base = AgentConfig.preset_config("lan", name="a")
    cfg = dataclasses.replace(base, anti_entropy=dataclasses.replace(base.anti_entropy, enabled=False),
                              state=StateConfig(tombstone_ttl=3600.0))
    return StateNode(cfg, KvStore("a@e1", cfg.state), random.Random(1), 0.0, addr=("10.0.0.1", 7001),
                     inline_limit=1200)


def _run(c: StateNode, until: float) -> list[PublishDigest]:
    out: list[StateEffect] = []
    for _ in range(1000):
        d = c.next_deadline()
        if d > until:
            return [e for e in out if isinstance(e, PublishDigest)]
        out += c.tick(d, WALL + d)
    raise AssertionError("the core is spinning")


def test_a_steady_stream_publishes_interim_rows_then_one_final_row_once_quiet() -> None:
    # Before: a short lull more than DIGEST_BUSY after the last publication published a row as if the writes
    # had ended, and a root that an interim publication already showed was never published as final.
    c = _core()
    _run(c, 10.0)
    t, publications = 10.0, []
    for i in range(200):  # 10 writes/s for 20 s; a gap of 0.2 s (shorter than DIGEST_QUIET_BUSY) every 2.5 s
        c.put(f"w{i}", b"x", None, t, WALL + t)
        step = 0.2 if i % 25 == 24 else 0.1
        publications += _run(c, t + step - 1e-6)
        t += step
    # The first lull after idle publishes at once (a lone write's root should show fast); from then on the
    # stream is known to be busy and its lulls publish nothing final.
    assert len(publications) > 2 and all(p.interim for p in publications[1:])
    assert len(publications) <= 20 / DIGEST_MAX_WAIT + 1
    last = publications[-1]
    # Writes stop right after an interim publication that already shows the final root.
    stop = t
    while True:
        c.put(f"x{stop:.1f}", b"y", None, stop, WALL + stop)
        got = _run(c, stop + 0.1 - 1e-6)
        if got:
            last = got[-1]
            break
        stop += 0.1
    assert last.interim
    final = _run(c, stop + 1.0)
    assert [(p.root, p.keys, p.hlc_ms, p.interim) for p in final] == [(last.root, last.keys, last.hlc_ms, False)]
    assert _run(c, stop + 10.0) == []  # and nothing more
    assert DIGEST_QUIET_BUSY < 1.0
