"""The state service in-process: recovery from snapshot + log, replica ids across wipes, snapshots, the watch
hub's slow-client rule, malformed rumors."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from pathlib import Path
from typing import Any

from gossip_agent.core.config import AgentConfig, from_mapping
from gossip_agent.core.kvstore import Change, KvStore, ValueEntry
from gossip_agent.io.runtime import Agent
from gossip_agent.io.state_http import WATCH_QUEUE, WatchEnd, WatchHub
from gossip_agent.io.state_service import StateService


def config(data: Path | None, **storage: Any) -> AgentConfig:
    return from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                         "storage": {"dataDir": str(data) if data else None, **storage}})


async def run_agent(cfg: AgentConfig) -> tuple[Agent, StateService]:
    svc = StateService(cfg)
    agent = Agent(cfg, extensions=[svc])
    await agent.start()
    return agent, svc


async def test_recovery_replays_snapshot_and_log(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d", snapshotEvery=50)
    agent, svc = await run_agent(cfg)
    for i in range(120):
        svc.put(f"k{i:03d}", f"v{i}".encode(), None)
    svc.delete("k000", None)
    svc.tick()  # snapshots past snapshotEvery records
    assert svc.stats.snapshots >= 1
    svc.put("after-snapshot", b"x", None)
    root, replica = svc.store.root_hex(), svc.store.node
    await svc.flush()  # snapshots are written on a worker thread
    # No snapshot on stop: the log must carry what the snapshot does not (as after a kill -9).
    assert svc._log is not None
    svc._log.close()
    svc._log = None
    await agent.stop()
    again = StateService(cfg)
    again.open()
    assert again.store.root_hex() == root and again.store.node == replica
    assert again.store.get("after-snapshot") is not None and again.store.get("k000").deleted  # type: ignore[union-attr]
    assert len(again.store) == 120


async def test_wiped_data_dir_gets_a_fresh_replica_id(tmp_path: Path) -> None:
    cfg = config(tmp_path / "d")
    agent, svc = await run_agent(cfg)
    svc.put("a", b"1", None)
    first = svc.store.node
    await agent.stop()
    assert first.startswith("solo@")
    agent, svc = await run_agent(cfg)
    assert svc.store.node == first and svc.store.get("a") is not None
    await agent.stop()
    for path in (tmp_path / "d").iterdir():
        path.unlink()
    agent, svc = await run_agent(cfg)
    assert svc.store.node != first and svc.store.get("a") is None
    await agent.stop()


async def test_a_replica_id_file_that_is_not_ours_means_a_fresh_replica_not_a_crash(tmp_path: Path) -> None:
    """A replica-id file that is not UTF-8, is huge, or names another member: recovery keeps the data and goes on
    under a fresh replica id (safe: new writes cannot reuse the old dots), counted and logged."""
    cfg = config(tmp_path / "d")
    for junk in (b"\xff\xfe\x00garbage", b"solo@" + b"a" * 100_000, b"other@abc123\n", b"solo@not alnum\n"):
        agent, svc = await run_agent(cfg)
        svc.put("a", b"1", None)
        first = svc.store.node
        await svc.flush()
        assert svc._log is not None
        svc._log.close()  # as after a kill -9: no snapshot on stop, the log holds the write
        svc._log = None
        await agent.stop()
        (tmp_path / "d" / "replica-id").write_bytes(junk)
        again = StateService(cfg)
        again.open()
        assert again.store.get("a") is not None, junk[:20]
        assert again.store.node != first and again.store.node.startswith("solo@"), again.store.node[:40]
        assert again.stats.recovery["replica_id_unreadable"] == 1
        assert (tmp_path / "d" / "replica-id").read_text().strip() == again.store.node
        assert again._log is not None
        again._log.close()
        for path in (tmp_path / "d").iterdir():
            path.unlink()


async def test_in_memory_store_and_malformed_rumors_are_counted(tmp_path: Path) -> None:
    agent, svc = await run_agent(config(None))
    try:
        assert svc._log is None
        assert not svc.on_state_rumor(b"\x92\x01garbage", 0.0)
        assert not svc.on_state_rumor(b"\x95\x06\xa1k", 0.0)
        other = KvStore("peer@1")
        from gossip_agent.core.state_codec import encode_rumor
        entry = other.local_put("k", b"v", 1_000)
        assert svc.on_state_rumor(encode_rumor(entry), 0.0)
        assert not svc.on_state_rumor(encode_rumor(entry), 0.0)
        assert svc.stats.rumors == {"dropped": 2, "applied": 1, "duplicate": 1}
        status = agent.status()
        assert status["state"]["keys"] == 1 and status["convergence"]["converged"] is not None
    finally:
        await agent.stop()


async def test_watch_hub_drops_slow_clients() -> None:
    hub = WatchHub()
    fast_id, fast = hub.subscribe("a/")
    _, slow = hub.subscribe("")
    entry = KvStore("n@1").local_put("a/x", b"v", 1)
    for _ in range(WATCH_QUEUE):
        hub.publish([Change("a/x", entry, "local")])
        fast.take()
    hub.publish([Change("a/x", entry, "local")])
    assert hub.dropped == 1 and len(hub) == 1
    # The slow one's pending lines are dropped at once (it re-reads when it reconnects); it is told why.
    assert slow.lines == [] and slow.pending_bytes == 0 and slow.end is WatchEnd.SLOW
    assert await slow.next() is WatchEnd.SLOW
    line = await fast.next()
    assert isinstance(line, bytes) and json.loads(line)["key"] == "a/x"
    hub.unsubscribe(fast_id)
    assert len(hub) == 0
    hub.close_all()


def _publish_calls(watchers: int, changes: list[Change]) -> int:
    """Python-level function calls `WatchHub.publish(changes)` makes with `watchers` idle watchers of every key."""
    hub = WatchHub()
    for _ in range(watchers):
        hub.subscribe("")
    calls = 0

    def count(frame: Any, event: str, arg: Any) -> None:
        nonlocal calls
        calls += event == "call"

    # No collection may run inside: a finalizer of an earlier test's garbage would count as calls of publish.
    gc.collect()
    gc.disable()
    sys.setprofile(count)
    try:
        hub.publish(changes)
    finally:
        sys.setprofile(None)
        gc.enable()
    assert hub.dropped == 0 and all(len(w.lines) == len(changes) for w in hub._clients.values())
    hub.close_all()
    return calls


async def test_watch_publish_makes_one_call_per_line_and_watcher() -> None:
    """publish runs for every write, for every watcher: one call per (line, watcher), not a check, a push and a
    wake (what a line costs to build is paid once per change, whatever the number of watchers)."""
    store = KvStore("n@1")
    changes = [Change(f"k/{i}", store.local_put(f"k/{i}", b"v", 1_000 + i), "local") for i in range(20)]
    assert _publish_calls(50, changes) - _publish_calls(1, changes) == 49 * len(changes)


async def test_writers_of_reaped_members_are_retired_after_the_ttl(tmp_path: Path) -> None:
    """Version vectors shrink once a writer's member has been gone longer than the tombstone TTL; no value
    is lost or comes back, and the retired set survives a restart."""
    mono, wall = [1_000.0], [1_700_000_000.0]
    cfg = from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                        "storage": {"dataDir": str(tmp_path / "d")},
                        "state": {"tombstoneTtl": "30s", "conflictPolicies": {"carts/": "siblings"}}})
    svc = StateService(cfg, wall_clock=lambda: wall[0])
    agent = Agent(cfg, extensions=[svc], clock=lambda: mono[0])
    await agent.start()

    def advance(seconds: float) -> None:
        mono[0] += seconds
        wall[0] += seconds
        svc.tick()

    try:
        from gossip_agent.core.state_codec import encode_rumor
        gone = KvStore("gone@abc1", cfg.state)  # a member that never shows up in our member table again
        ms = svc.now_ms()
        for key in ("a", "carts/x", "d"):
            assert svc.on_state_rumor(encode_rumor(gone.local_put(key, b"from-gone", ms - 5)), 0.0)
        for key in ("a", "carts/x"):
            read = svc.store.get(key)
            assert read is not None
            svc.put(key, b"mine", read.context)
        svc.delete("d", None)
        svc.put("fresh", b"v", None)
        stale = svc.store.entry("a")  # what a replica that has not pruned yet would send back
        assert isinstance(stale, ValueEntry) and stale.context.nodes() == {"gone@abc1", svc.store.node}
        advance(0.0)
        assert svc.store.retired == frozenset()
        advance(61.0)  # absent 61 s > TTL, every state naming it older than the TTL
        assert svc.store.retired == frozenset({"gone@abc1"})
        for key in ("a", "carts/x"):
            entry = svc.store.entry(key)
            assert isinstance(entry, ValueEntry) and entry.context.nodes() == {svc.store.node}
            assert svc.store.get(key).values == (b"mine",)  # type: ignore[union-attr]
        assert svc.store.entry("d") is None  # the tombstone aged out: nothing to resurrect
        assert not svc.on_state_rumor(encode_rumor(stale), 0.0)  # pruned on ingest: no change
        assert svc.store.get("a").values == (b"mine",)  # type: ignore[union-attr]
        assert svc.store.get("fresh").values == (b"v",)  # type: ignore[union-attr]
        root, replica = svc.store.root_hex(), svc.store.node
        await svc.flush()  # snapshots are written on a worker thread
        assert svc._log is not None  # as after a kill -9: the retirement's own snapshot must carry it
        svc._log.close()
        svc._log = None
    finally:
        await agent.stop()
    again = StateService(cfg)
    again.open()
    assert again.store.retired == frozenset({"gone@abc1"}) and again.store.root_hex() == root
    assert again.store.node == replica


async def test_a_writer_with_live_values_is_not_retired(tmp_path: Path) -> None:
    mono, wall = [1_000.0], [1_700_000_000.0]
    cfg = from_mapping({"preset": "local", "name": "solo", "bindAddress": "127.0.0.1", "port": 0,
                        "state": {"tombstoneTtl": "30s"}})
    svc = StateService(cfg, wall_clock=lambda: wall[0])
    agent = Agent(cfg, extensions=[svc], clock=lambda: mono[0])
    await agent.start()
    try:
        from gossip_agent.core.state_codec import encode_rumor
        gone = KvStore("gone@abc1", cfg.state)
        assert svc.on_state_rumor(encode_rumor(gone.local_put("kept", b"v", svc.now_ms() - 5)), 0.0)
        svc.put("mine", b"x", None)
        assert svc.retire_reaped() == 0
        mono[0] += 100
        wall[0] += 100
        # Its value still lives here: a pruned context elsewhere could bring it back after an overwrite.
        assert svc.retire_reaped() == 0 and svc.store.retired == frozenset()
        assert svc.store.get("kept").values == (b"v",)  # type: ignore[union-attr]
    finally:
        await agent.stop()


async def test_joining_starts_anti_entropy_from_the_member_event() -> None:
    """State a member holds before a peer joins (as if recovered from its data dir: never gossiped) reaches
    the peer by the anti-entropy the join event starts (the periodic session is an hour away, and no
    housekeeping runs on a timer: the state core wakes at its own deadlines)."""
    fast = {"preset": "local", "bindAddress": "127.0.0.1", "port": 0, "antiEntropy": {"interval": "1h"},
            "membership": {"probeInterval": "200ms", "probeTimeout": "100ms"}, "gossip": {"interval": "50ms"}}
    s0 = StateService(from_mapping({**fast, "name": "s0"}))
    a0 = Agent(s0.config, extensions=[s0])
    await a0.start()
    s0.store.local_put("before-join", b"v", s0.now_ms())
    s1 = StateService(from_mapping({**fast, "name": "s1", "seeds": [f"127.0.0.1:{a0.port}"]}))
    a1 = Agent(s1.config, extensions=[s1])
    await a1.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30.0  # generous: only the join event can deliver it
        while asyncio.get_running_loop().time() < deadline:
            if s1.store.get("before-join") is not None:
                break
            await asyncio.sleep(0.05)
        assert s1.store.get("before-join") is not None
    finally:
        await a1.stop()
        await a0.stop()


async def test_watch_lines_queued_behind_each_other_go_out_in_one_write_in_order() -> None:
    """A watcher that fell behind gets its pending lines joined (one write), in order, about `limit` bytes at
    a time; the reason it ends comes after those lines, never before; a client that hung up gets nothing."""
    hub = WatchHub()
    try:
        _, watcher = hub.subscribe("")
        for line in (b"a\n", b"b\n", b"c\n"):
            assert watcher.offer(line)
        watcher.finish(WatchEnd.ENDED)
        assert watcher.offer(b"d\n")
        watcher.finish(WatchEnd.GONE)  # the first reason stands
        assert await watcher.next() == b"a\nb\nc\nd\n"
        assert await watcher.next() is WatchEnd.ENDED
        _, watcher = hub.subscribe("")
        for i in range(10):
            assert watcher.offer(b"%d\n" % i)
        assert watcher.take(limit=5) == b"0\n1\n2\n"  # stops once about `limit` bytes are taken
        assert watcher.lines == [b"%d\n" % i for i in range(3, 10)] and watcher.pending_bytes == 14
        watcher.finish(WatchEnd.GONE)
        assert await watcher.next() is WatchEnd.GONE
    finally:
        hub.close_all()


async def test_watch_hub_check_ends_hung_up_clients_and_beats_quiet_ones() -> None:
    """The hub's one periodic check (called here by hand): a client that hung up ends without its pending
    lines; a stream quiet for a heartbeat's worth of checks gets a heartbeat line, a busy one does not."""
    hub = WatchHub(check_every=1.0, heartbeat=3.0)
    gone = [False]
    try:
        _, quiet = hub.subscribe("")
        _, busy = hub.subscribe("")
        _, hung = hub.subscribe("", lambda: gone[0])
        waiting = asyncio.ensure_future(quiet.next())
        await asyncio.sleep(0)
        for _ in range(2):
            assert busy.offer(b"x\n")
            hub.check()
            assert busy.take() == b"x\n"
        assert not waiting.done() and len(hub) == 3
        assert hung.offer(b"never\n")
        gone[0] = True
        hub.check()  # the third check: the quiet stream is due a heartbeat
        assert await asyncio.wait_for(waiting, 5) == b'{"event":"heartbeat"}\n'
        assert await hung.next() is WatchEnd.GONE and len(hub) == 2
        assert busy.take() == b""  # only one check since its last write
    finally:
        hub.close_all()


async def test_watch_stream_arms_no_timer_per_line(tmp_path: Path) -> None:
    """Streaming lines one at a time (the handler waits between them) arms no timer per line: hung-up clients
    and heartbeats are the hub's one periodic check (a timeout around every wait was ~1/4 of a line's CPU)."""
    import aiohttp
    agent, svc = await run_agent(config(None))
    loop = asyncio.get_running_loop()
    armed: list[str] = []
    call_at = loop.call_at

    def counting_call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        task = asyncio.current_task()
        coro = task.get_coro() if task is not None else None
        if "RequestHandler" in str(getattr(coro, "__qualname__", "")):  # armed by an HTTP handler step
            armed.append(str(callback))
        return call_at(when, callback, *args, **kwargs)

    other = KvStore("peer@1")
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{agent.port}/v1/watch?prefix=w/") as resp:
            assert json.loads(await resp.content.readline())["event"] == "watching"
            loop.call_at = counting_call_at  # type: ignore[method-assign]
            async with asyncio.timeout(60):
                for i in range(100):
                    entry = other.local_put(f"w/{i}", b"v", 1_700_000_000_000 + i)
                    svc.watchers.publish([Change(entry.key, entry, "remote")])
                    assert json.loads(await resp.content.readline())["key"] == f"w/{i}"
            loop.call_at = call_at  # type: ignore[method-assign]
        assert len(armed) <= 2, armed[:5]
    finally:
        loop.call_at = call_at  # type: ignore[method-assign]
        await agent.stop()


async def test_watch_stream_delivers_every_change_of_a_burst_in_order(tmp_path: Path) -> None:
    """Changes published faster than the stream writes (one event-loop step) all arrive, in order."""
    import aiohttp
    agent, svc = await run_agent(config(None))
    try:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{agent.port}/v1/watch?prefix=b/") as resp:
            assert json.loads(await resp.content.readline())["event"] == "watching"
            for i in range(300):
                svc.put(f"b/{i:03d}", b"v", None)
            keys = [json.loads(await asyncio.wait_for(resp.content.readline(), 30))["key"] for _ in range(300)]
            assert keys == [f"b/{i:03d}" for i in range(300)]
    finally:
        await agent.stop()


def test_watch_lines_of_plain_values_are_the_generic_json_byte_for_byte() -> None:
    """The direct spelling of a put's watch line equals json.dumps of the generic event, whatever the key,
    value (text, escapes, non-ASCII, binary) and siblings; other changes take the generic path."""
    from gossip_agent.core.config import StateConfig
    from gossip_agent.io.state_http import _event_line, _event_line_generic
    store = KvStore("n@1", StateConfig(conflict_policy="siblings"))
    other = KvStore("m@2", StateConfig(conflict_policy="siblings"))
    keys = ["a", "dir/ünï\u2028code", 'q"uote\\back', "emoji/\U0001F600", "t\u00e9st"]
    values = [b"", b"plain", b'quo"te\\ \n\t\x01 ctl', "ünïcode \u2028\U0001F600".encode(), b"\xff\xfe\x00binary",
              bytes(range(256))]
    changes: list[Change] = []
    for i, key in enumerate(keys):
        for j, value in enumerate(values):
            entry = store.local_put(f"{key}/{j}", value, 1_700_000_000_000 + i)
            changes.append(Change(entry.key, entry, "local"))
            theirs = other.local_put(f"{key}/{j}", values[-1 - j], 1_700_000_000_000 + i)
            store.apply_remote(theirs)  # concurrent: two siblings
            both = store.entry(f"{key}/{j}")
            assert both is not None
            changes.append(Change(both.key, both, "remote"))
    gone = store.local_delete(f"{keys[0]}/1", 1_800_000_000_000)
    assert gone is not None
    changes += [Change(gone.key, gone, "local"), Change("x", None, "gc")]
    assert any(isinstance(c.entry, ValueEntry) and len(c.entry.versions) == 2 for c in changes)
    for change in changes:
        assert _event_line(change) == _event_line_generic(change), change.key
        json.loads(_event_line(change))
