"""The retirement scan runs in slices (session 14 review, F7).

`StateNode._retire` walked every context of every key on the event loop each RETIRE_EVERY: ~1.5 s of CPU per
million names (the made-up writers clients could add then; /readyz answered 503 "event loop stalled"), ~0.4 s
per million keys of three writers. Now each tick walks at most RETIRE_SLICE_NAMES names
(`KvStore.context_writers_from`) and the plan runs once the walk is complete; writers found safe over several
slices are checked against a whole walk before any is retired (a key may change between slices).
"""

from __future__ import annotations

import dataclasses
import random

from gossip_agent.core.config import StateConfig
from gossip_agent.core.hlc import Hlc
from gossip_agent.core.kvstore import KvStore, ValueEntry, Version
from gossip_agent.core.replica import Retirement
from gossip_agent.core.state_node import RETIRE_EVERY, RETIRE_SLICE_GAP, RETIRE_SLICE_NAMES, StateNode
from gossip_agent.core.vector_clock import VersionVector
from tests.core.test_state_node import WALL, addr, config

NOW_MS = int(WALL * 1000)


def _entry(key: str, writers: list[str], at_ms: int, live: str | None = None) -> ValueEntry:
    writer = live or writers[0]
    return ValueEntry(key, (Version((writer, 1), Hlc(at_ms, 0, writer), b"x"),),
                      VersionVector({w: 1 for w in writers}))


def _store(keys: int, ttl: float = 30.0) -> KvStore:
    """Keys written long ago by "a@e1", naming "gone@x1" in their contexts (a writer whose member left)."""
    store = KvStore("a@e1", StateConfig(tombstone_ttl=ttl))
    old = NOW_MS - 3_600_000
    for k in range(keys):
        store.apply_remote(_entry(f"k{k:05d}", ["a@e1", "gone@x1", f"w{k % 7}@e1"], old), NOW_MS)
    store.local_put("deleted", b"x", NOW_MS)
    store.local_delete("deleted", NOW_MS)
    store.acknowledge_tombstones(NOW_MS)
    store.collect_garbage(NOW_MS + 10, ack_grace_ms=0)  # (in the graveyard)
    return store


def test_slices_find_what_a_whole_walk_finds() -> None:
    store = _store(500)
    whole = store.context_writers(NOW_MS)
    sliced: dict[str, bool] = {}
    after, slices = None, 0
    while True:
        after = store.context_writers_from(sliced, NOW_MS, after, budget=97)
        slices += 1
        if after is None:
            break
    assert sliced == whole and slices > 10 and "gone@x1" in whole


def _node(store: KvStore) -> StateNode:
    cfg = dataclasses.replace(config("a"), state=store.config)
    return StateNode(cfg, store, random.Random(1), 0.0, addr=addr("a"), inline_limit=1200, durable=True)


def test_the_scan_takes_a_slice_per_tick_and_retires_when_complete() -> None:
    keys = 3 * RETIRE_SLICE_NAMES // 5 + 10  # (5 names a key, the key itself counted: four slices)
    c = _node(_store(keys))
    walked: list[int] = []
    original = c.store.context_writers_from

    def counting(out: dict[str, bool], now_ms: int, after: str | None = None, budget: int | None = None) -> str | None:
        before = len(c.store.all_keys()) if after is None else sum(1 for k in c.store.all_keys() if k > after)
        result = original(out, now_ms, after, budget)
        left = 0 if result is None else sum(1 for k in c.store.all_keys() if k > result)
        walked.append(before - left)
        return result

    c.store.context_writers_from = counting  # type: ignore[method-assign]
    now = 0.0
    for _ in range(3):
        c.tick(now, WALL + now)
        assert c.next_deadline() <= now + RETIRE_SLICE_GAP
        now += RETIRE_SLICE_GAP
    c.tick(now, WALL + now)
    assert len(walked) == 4 and max(walked) * 5 <= RETIRE_SLICE_NAMES + 5
    assert c._retire_scan is None and c._retire_at == now + RETIRE_EVERY
    # The member stays gone past the TTL (30 s): the next complete scan retires its writer.
    now = 2 * RETIRE_EVERY
    for _ in range(10):
        c.tick(now, WALL + now)
        now = c.next_deadline()
        if "gone@x1" in c.store.retired:
            break
    assert "gone@x1" in c.store.retired


def test_a_key_changed_between_slices_keeps_its_writer() -> None:
    """A slice walked "k00000" (old: "gone@x1" looked safe); before the scan ends a peer's state of it arrives
    holding a version of "gone@x1". Retiring it now would drop that version's writer from contexts."""
    keys = RETIRE_SLICE_NAMES // 5 + 10  # (two slices)
    c = _node(_store(keys))
    c.tick(0.0, WALL)
    c.tick(RETIRE_SLICE_GAP, WALL + RETIRE_SLICE_GAP)  # (the first scan: the absence clock starts)
    now = 2 * RETIRE_EVERY
    c.tick(now, WALL + now)  # the first slice of a scan that would retire
    assert c._retire_scan is not None
    fresh = _entry("k00000", ["a@e1", "gone@x1"], NOW_MS + int(now * 1000), live="gone@x1")
    c.store.apply_remote(dataclasses.replace(fresh, context=VersionVector({"a@e1": 1, "gone@x1": 2}),
                                             versions=(Version(("gone@x1", 2), Hlc(NOW_MS, 0, "gone@x1"), b"y"),)),
                         NOW_MS + int(now * 1000))
    c.tick(now + RETIRE_SLICE_GAP, WALL + now + RETIRE_SLICE_GAP)
    assert c._retire_scan is None and "gone@x1" not in c.store.retired


def test_the_plan_in_steps_is_the_plan_in_one_go() -> None:
    """A million made-up writers' names held the loop ~1.3 s in one `Retirement.plan`."""
    writers = [f"ghost-{i:05d}@e1" for i in range(25_000)] + ["a@e1", "b@e1"]
    retired = frozenset({"back@e1", "old@e1"})
    one, stepped = Retirement(ttl=30.0), Retirement(ttl=30.0)
    for now in (0.0, 40.0):
        whole = one.plan(now, writers=writers, retired=retired, present={"a", "b", "back"}, me="a@e1")
        steps = list(stepped.plan_steps(now, writers=writers, retired=retired, present={"a", "b", "back"},
                                        me="a@e1", budget=1000))
        assert steps[-1] == whole and steps[:-1] == [None] * (len(steps) - 1) and len(steps) > 50
        assert one._absent_since == stepped._absent_since
    assert len(whole.retire) == 25_000 and whole.unretire == frozenset({"back@e1"})
